"""What the store hands out and takes in: the delivery states, the errors, the records as plain dataclasses, and
the few value rules every store module applies (times in UTC, no NUL characters)."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from adaptor.itk.documents import reason_line
from adaptor.itk.message import ItkMessage
from adaptor.itk.wire import as_utc  # re-exported: the store's readers take their times from here


class Status(enum.StrEnum):
    """The delivery state of a stored message (``outbox.state``)."""

    #: Stored and waiting for a worker: newly accepted (async mode), re-queued by a replay or by a resend.
    PENDING = "pending"
    #: Claimed by a worker or a synchronous request, which holds a lease (``lease_owner``, ``lease_expires_at``).
    DELIVERING = "delivering"
    #: The last attempt failed transiently; a worker tries again at ``next_attempt_at`` (exponential backoff).
    RETRYING = "retrying"
    #: Sync mode only: delivery failed (or was interrupted) while the sender waited, so the sender was told to
    #: retry (2100). Workers leave it alone; the sender's resend (or ``nhs111 replay``) delivers it.
    HELD = "held"
    #: The target accepted the Bundle. Final (only ``nhs111 replay MESSAGE_ID`` delivers it again).
    DELIVERED = "delivered"
    #: Given up: the target refused the Bundle for good, or every attempt failed (or, for a message stored
    #: without a Bundle by an adaptor before schema version 2, conversion failed). ``last_error`` says why.
    #: Final until ``nhs111 replay``.
    DEAD_LETTER = "dead_letter"
    #: Refused at acceptance: it passed validation but could not be converted, so the sender was answered with
    #: fault 2200 (rule E3) and it has no Bundle. Kept, with ``last_error`` saying why, for operators; never
    #: delivered unless an operator reconverts it (``nhs111 replay --reconvert``) or the sender's resend converts.
    REJECTED = "rejected"
    #: Withdrawn by its sender (nullification.md), final: it was never delivered and never will be, or its
    #: withdrawal (the Bundle version that marks everything ``entered-in-error``) has been delivered. A message
    #: whose withdrawal is still on its way is in the delivery states above, with :attr:`StoredMessage.nullified`
    #: set.
    NULLIFIED = "nullified"
    #: A nullification that found the message(s) it withdraws. It has nothing of its own to deliver: the
    #: withdrawal goes out as the withdrawn message's Bundle. Final.
    NULLIFICATION = "nullification"
    #: A nullification whose message is not stored (nullification.md's ``nullification-unmatched``): kept, shown
    #: and counted; if the message arrives later, it is stored as nullified and this becomes ``nullification``.
    UNMATCHED = "unmatched"


class AttemptOutcome(enum.StrEnum):
    """How one delivery attempt ended (``delivery_attempts.outcome``; ``NULL`` while it is in progress)."""

    DELIVERED = "delivered"
    FAILED = "failed"  # a transient failure: retried
    REJECTED = "rejected"  # the target refused the Bundle for good
    CONVERSION_FAILED = "conversion_failed"
    #: Started and never finished: the process stopped between handing the Bundle over and recording the result.
    INTERRUPTED = "interrupted"
    #: Finished without an answer: the Bundle was written to the target and the connection was lost (or the answer
    #: timed out) before the target said whether it took it. Retried like a failure; the target may have a copy.
    IN_DOUBT = "in_doubt"


class StoreError(RuntimeError):
    """The store could not read or write; the message was not (or may not have been) recorded."""


class SchemaVersionError(StoreError):
    """The database's schema is not one this adaptor can use: it needs ``nhs111 db upgrade`` (older), another
    adaptor version (newer and incompatible), or another database (not ours). Waiting does not fix it."""


@dataclass(frozen=True)
class StoredNullification:
    """A stored nullification: which document it withdraws (identifiers as
    :func:`adaptor.itk.documents.identifier_key` writes them), why, who and when."""

    record_id: str  # the nullification's own message record
    message_id: str  # its wsa:MessageID
    received_at: datetime
    effective_at: datetime  # its effectiveTime: when the sender withdrew the document
    document_id: str | None = None  # the nullification document's own id
    withdraws_id: str | None = None
    withdraws_set_id: str | None = None
    withdraws_version: int | None = None
    reason_code: str | None = None
    reason_display: str | None = None
    reason_text: str | None = None
    author: str | None = None

    @property
    def reason(self) -> str:
        return reason_line(self.reason_text, self.reason_display, self.reason_code)


@dataclass(frozen=True)
class Nullified:
    """How a stored message was withdrawn by its sender: by which nullification, when this adaptor applied it, and
    the version of its Bundle that withdraws it at the receiver's system (``None``: nothing of it had been sent)."""

    nullification: StoredNullification
    nullified_at: datetime
    withdrawal_version: int | None


@dataclass(frozen=True)
class IndexEntry:
    """What the search index holds of a message (its ``message_index`` row): the patient, the disposition, the
    receiving service, the document's time and the conversion's warnings. Patient data: never logged."""

    nhs_number: str | None = None
    patient_name: str | None = None
    birth_date: str | None = None
    postcode: str | None = None
    disposition_code: str | None = None
    disposition: str | None = None
    receiving_service: str | None = None
    effective_at: datetime | None = None
    warnings: tuple[str, ...] = ()
    #: Whether it was filled from the Bundle (False: only the identifiers, until ``nhs111 db reindex``).
    complete: bool = True


@dataclass(frozen=True)
class OperatorAction:
    """Something an operator did to a message (a replay), with who and when."""

    at: datetime
    operator: str
    action: str  # "redeliver" or "reconvert"
    detail: str


@dataclass(frozen=True)
class StoredMessage:
    """One message with its delivery state. ``raw`` and ``bundle`` are ``None`` in listings (not loaded)."""

    id: str
    message_id: str
    tracking_id: str
    digest: str
    service: str
    interaction: str
    ods_codes: tuple[str, ...]
    dos_ids: tuple[str, ...]
    sender: str
    received_at: datetime
    status: Status
    status_reason: str | None  # the outbox's last_error
    attempts: int
    next_attempt_at: datetime
    lease_owner: str | None
    lease_expires_at: datetime | None
    delivered_at: datetime | None
    replays: int
    updated_at: datetime  # the later of the message's and its outbox row's updates
    raw: bytes | None = None
    bundle: str | None = None
    bundle_version: int | None = None  # the version of ``bundle`` (also in listings); None: no Bundle
    converted_at: datetime | None = None
    #: The identifiers of the document the Bundle is mapped from (``None`` for a nullification, and for a message
    #: stored before schema version 5 whose request could not be read then).
    document_id: str | None = None
    document_set_id: str | None = None
    document_version: int | None = None
    #: Set when its sender withdrew it (also in listings).
    nullified: Nullified | None = None
    #: Its search index row; None when it has none (stored by an earlier release and not reindexed yet).
    index: IndexEntry | None = None


@dataclass(frozen=True)
class DeliveryAttempt:
    owner: str
    target: str
    started_at: datetime
    finished_at: datetime | None
    outcome: AttemptOutcome | None  # None: in progress (or the process died and nobody has claimed it since)
    error: str | None
    bundle_version: int | None = None  # the version of the Bundle this attempt sent; None: it sent none


@dataclass(frozen=True)
class BundleVersion:
    """One version of a message's Bundle: the current one, or one a reconversion replaced, kept as it was
    stored (the text every attempt with this ``version`` sent, as UTF-8)."""

    version: int
    bundle: str
    converted_at: datetime | None
    superseded_at: datetime | None = None  # None: the current version

    @property
    def current(self) -> bool:
        return self.superseded_at is None

    @property
    def size(self) -> int:
        """Its size in bytes, as delivered (UTF-8)."""
        return len(self.bundle.encode("utf-8"))


def versions_not_kept(versions: Sequence[BundleVersion]) -> list[int]:
    """The version numbers below the current one missing from ``versions`` (oldest first, as
    :meth:`MessageStore.bundle_versions` returns them): Bundles replaced before superseded versions were kept
    (schema version 3), or by a replica of an earlier release."""
    kept = {v.version for v in versions}
    return [n for n in range(1, max(kept, default=1)) if n not in kept]


@dataclass(frozen=True)
class Rejection:
    """A refused request: the fault it was answered with and what identified it. No body, no patient data."""

    rule: str
    error_code: int
    error_text: str
    error_id: str
    message_id: str | None = None
    tracking_id: str | None = None
    sender_ods: str | None = None
    rejected_at: datetime | None = None  # set by the store


@dataclass(frozen=True)
class MessageQuery:
    """Which messages a listing or count selects; every field narrows it, and the empty query selects all.

    ``search`` is what an operator types in one box: an NHS number (ten digits, spaces allowed) finds the
    patient's messages; anything else matches the beginning of a MessageID, trackingid or record id (any case),
    or, when it looks like one, the ODS code of the sender or an ODS code or DoS id of a recipient. The other
    fields are the search form's (and ``nhs111 messages list``'s): ``name`` is the beginning of the patient's
    family or first given name, any case and accents ignored (two words: given and family name);
    ``disposition`` a Dx code (``Dx05``) or words of its text; ``interaction`` the interaction id with or
    without its ``urn:nhs-itk:interaction:`` prefix; ``recipient`` an ODS code or DoS id.
    """

    statuses: Sequence[Status] = ()
    since: datetime | None = None  # received at or after
    until: datetime | None = None  # received before
    tracking_id: str | None = None
    search: str | None = None
    nhs_number: str | None = None
    name: str | None = None
    birth_date: str | None = None  # YYYY-MM-DD
    postcode: str | None = None  # or its beginning
    sender: str | None = None  # ODS code
    recipient: str | None = None
    interaction: str | None = None
    disposition: str | None = None
    with_warnings: bool = False
    record_prefix: str | None = None  # the beginning of the record id

    def without_statuses(self) -> MessageQuery:
        """The same search in every state (what the state tabs count)."""
        return dataclasses.replace(self, statuses=())


@dataclass(frozen=True)
class Claim:
    """A message claimed by ``owner`` (until its lease expires), with what delivering it needs."""

    record_id: str
    message_id: str
    tracking_id: str
    interaction: str
    ods_codes: tuple[str, ...]
    dos_ids: tuple[str, ...]
    raw: bytes
    #: The stored Bundle, which every attempt sends as it is. ``None`` only for a message stored by an adaptor
    #: before schema version 2: the attempt converts ``raw`` and keeps the result as version 1.
    bundle: str | None
    bundle_version: int | None
    converted_at: datetime | None  # when ``bundle`` was made: the same for every attempt
    owner: str
    attempt: int  # the number of this attempt since acceptance or the last replay (1 = first)
    synchronous: bool  # claimed by a synchronous request: failures hold the message for the sender's resend
    #: Earlier attempts found unfinished by this claim, closed as interrupted: each may have reached the target,
    #: so delivering now may deliver the message a second time (same MessageID, so consumers can drop it).
    interrupted: int
    #: The Bundle is the message's withdrawal (nullification.md §2.3): ``interaction`` is then the nullification's,
    #: and once delivered the message is :attr:`Status.NULLIFIED`.
    withdrawal: bool = False

    @classmethod
    def for_new_message(
        cls, record_id: str, message: ItkMessage, raw: bytes, bundle: str, converted_at: datetime, owner: str
    ) -> Claim:
        """The claim :meth:`MessageStore.accept` stored with ``claim_for=owner``, built from what the caller
        already holds instead of being read back."""
        return cls(
            record_id=record_id,
            message_id=message.message_id,
            tracking_id=message.tracking_id,
            interaction=message.interaction,
            ods_codes=message.ods_codes,
            dos_ids=message.dos_ids,
            raw=raw,
            bundle=bundle,
            bundle_version=1,
            converted_at=converted_at,
            owner=owner,
            attempt=1,
            synchronous=True,
            interrupted=0,
        )


@dataclass(frozen=True)
class Redelivery:
    """A delivered message that had interrupted or in-doubt attempts: it may have reached the target more than
    once, at most once more per such attempt."""

    record_id: str
    message_id: str
    interrupted_attempts: int
    in_doubt_attempts: int = 0


@dataclass(frozen=True)
class Accepted:
    """What storing a new message did: its record, whether it is new (``False``: an identical resend of the
    stored record), and the nullification it was stored under, when its sender had already withdrawn it (then
    it is :attr:`Status.NULLIFIED` and never delivered)."""

    record_id: str
    is_new: bool
    nullified_by: str | None = None


class Effect(enum.StrEnum):
    """What a nullification did to one stored message it names."""

    #: It had been sent (or may have been): its withdrawal is queued as its next Bundle version.
    WITHDRAWAL_QUEUED = "withdrawal queued"
    #: Nothing of it had been sent: it is never delivered.
    NEVER_DELIVERED = "never delivered"
    #: Another nullification withdrew it already: nothing changes.
    ALREADY_NULLIFIED = "already nullified"


@dataclass(frozen=True)
class Withdrawn:
    """One stored message a nullification names, and what the nullification did to it."""

    record_id: str
    message_id: str
    effect: Effect
    withdrawal_version: int | None = None


@dataclass(frozen=True)
class NullificationStored:
    """What storing a nullification did: its record, whether it is new (``False``: an identical resend, which
    changes nothing), and each stored message it names (none: it is :attr:`Status.UNMATCHED`)."""

    record_id: str
    is_new: bool
    withdrawn: tuple[Withdrawn, ...] = ()

    @property
    def matched(self) -> bool:
        return bool(self.withdrawn)

    @property
    def changed(self) -> bool:
        """Whether it withdrew anything not withdrawn before (``False`` for a repeated nullification)."""
        return any(w.effect is not Effect.ALREADY_NULLIFIED for w in self.withdrawn)


@dataclass(frozen=True)
class Original:
    """A stored message whose withdrawal is being made: what :func:`adaptor.delivery.withdrawal` needs of it."""

    record_id: str
    message_id: str
    bundle: str


@dataclass(frozen=True)
class ReplayResult:
    record_id: str
    message_id: str
    previous: Status
    requeued: bool
    #: The version of the Bundle it will deliver (a reconversion's new one); None when it has none yet.
    bundle_version: int | None = None
    #: Why it was not queued: being delivered right now (a live lease), no Bundle to redeliver, or the
    #: reconversion failed (its reason). None when queued.
    skipped: str | None = None


def optional_utc(value: datetime | None) -> datetime | None:
    return None if value is None else as_utc(value)


def without_nul(value: str) -> str:
    """PostgreSQL text cannot hold NUL characters (SQLite can): an error text quoting a target's reply might."""
    return value.replace("\x00", "")


def optional_without_nul(value: str | None) -> str | None:
    return None if value is None else without_nul(value)
