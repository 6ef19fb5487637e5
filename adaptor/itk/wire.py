"""The ITK wire facts every layer shares, each written once: keys, prefixes, address types, the event rule, ids.

The validation rules (:mod:`adaptor.itk.rules`), the conversion (:mod:`adaptor.delivery.conversion`), the
store's searches, the console, the CLI and the sample generator all read or write these strings; they import
them from here. :mod:`mappings` keeps its own copies, because it imports nothing from :mod:`adaptor`.

Times are kept as aware UTC datetimes throughout the adaptor; :func:`as_utc` is the one place that turns a
database's value (naive on SQLite) into one.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

#: The ``itk:spec`` key whose value is the interaction id.
INTERACTION_KEY = "urn:nhs-itk:ns:201005:interaction"
#: The prefix of every interaction id, e.g. ``urn:nhs-itk:interaction:copyRecipientNHS111CDADocument-v2-0``.
INTERACTION_PREFIX = "urn:nhs-itk:interaction:"
#: The prefix of the sender's ``itk:auditIdentity`` uri: ``urn:nhs-uk:identity:ods:<ODS>[:<suffix>]``.
ODS_IDENTITY_PREFIX = "urn:nhs-uk:identity:ods:"
#: The prefix of an ODS ``itk:address``: ``urn:nhs-uk:addressing:ods:<ODS>[:<suffix>]``.
ODS_ADDRESS_PREFIX = "urn:nhs-uk:addressing:ods:"
#: ``itk:address/@type`` of a Directory of Services id.
DOS_ADDRESS_TYPE = "2.16.840.1.113883.2.1.3.2.4.18.44"
#: ``itk:address/@type`` of an ITK address (the default when the attribute is absent).
ITK_ADDRESS_TYPE = "2.16.840.1.113883.2.1.3.2.4.18.22"

#: MessageHeader ``event`` codes: a ``primary*`` interaction is a referral, a ``copy*`` one discharge details.
REFERRAL = "referral-1"
DISCHARGE_DETAILS = "discharge-details-1"
#: The :attr:`~adaptor.itk.message.ItkMessage.event` of a nullification. Not a MessageHeader event: what the
#: receiver's system gets for a nullification is the withdrawal of the original, whose MessageHeader keeps the
#: original's event.
NULLIFICATION = "nullification"

#: The interactions by which a 111 sender withdraws a document sent in error (nullification.md §1), without the
#: prefix: the IUC one and the 111 (v2) messaging specification's; compared as other interactions are.
NULLIFICATION_INTERACTIONS = (
    "nullifyIntegratedUrgentCareCDADocument-v3-0",
    "nullifyNHS111CDADocument-v1-0",
)
_NULLIFICATIONS = frozenset(name.lower() for name in NULLIFICATION_INTERACTIONS)


def interaction_name(interaction: str) -> str:
    """The interaction id without its ``urn:nhs-itk:interaction:`` prefix (matched case-insensitively)."""
    if interaction.lower().startswith(INTERACTION_PREFIX):
        return interaction[len(INTERACTION_PREFIX) :]
    return interaction


def event_of(interaction: str) -> str | None:
    """The MessageHeader event of an interaction id, with or without its prefix: :data:`REFERRAL` for
    ``primary*``, :data:`DISCHARGE_DETAILS` for ``copy*`` (case-insensitive), ``None`` for anything else."""
    folded = interaction_name(interaction).lower()
    if folded.startswith("primary"):
        return REFERRAL
    if folded.startswith("copy"):
        return DISCHARGE_DETAILS
    return None


def is_nullification(interaction: str) -> bool:
    """Whether ``interaction`` (with or without its prefix, any case) is one of :data:`NULLIFICATION_INTERACTIONS`."""
    return interaction_name(interaction.strip()).lower() in _NULLIFICATIONS


def sender_ods(identity_uri: str) -> str | None:
    """The ODS code of an ``urn:nhs-uk:identity:ods:<ODS>[:<suffix>]`` audit identity (prefix case-insensitive),
    trimmed; ``None`` for any other uri or an empty code."""
    if not identity_uri.lower().startswith(ODS_IDENTITY_PREFIX):
        return None
    return identity_uri[len(ODS_IDENTITY_PREFIX) :].split(":", 1)[0].strip() or None


def new_upper_uuid() -> str:
    """A new upper-case UUID, as ITK writes MessageIDs, trackingids, document ids and ErrorIDs."""
    return str(uuid.uuid4()).upper()


def utc_now() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """``value`` as an aware UTC datetime; a naive one is taken to be UTC already.

    SQLite has no time zone type: its values come back naive, but they were written as UTC. PostgreSQL's come back
    in the session's time zone (set to UTC, but a URL may override it): the same instant, shown as UTC.
    """
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
