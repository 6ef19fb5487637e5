"""Delivery targets for converted Bundles: one small interface, one implementation per kind of target.

The target is ``PEM111_FORWARD_TARGET`` (or, for an existing reference deployment, ``PEM111_AMQP_BROKER``):

=============================  ===================================================================
``dir:PATH``                   one JSON file per message in a folder (:mod:`.folder`)
``amqp://`` / ``amqps://``     an AMQP 1.0 queue (:mod:`.amqp10`), or AMQP 0-9-1 with
                               ``PEM111_AMQP_PROTOCOL=0-9-1`` (:mod:`.amqp091`); also a list of
                               broker URLs or a Qpid ``failover:(...)`` URI (:mod:`.brokers`)
``http://`` / ``https://``     a FHIR endpoint that takes the Bundle by POST (:mod:`.fhir_http`)
=============================  ===================================================================

A forwarder either returns, meaning the target has durably accepted the message (broker disposition
*accepted*, publisher confirm, HTTP 2xx, file renamed into place), or raises. :class:`PermanentDeliveryError`
means retrying cannot help (the message is dead-lettered at once); any other exception is treated as transient
and retried with backoff by the outbox worker. :class:`InDoubtDeliveryError` is transient too, and says that the
message was written before the failure, so the target may have it. One call hands the message over at most once:
the outbox records each call as one delivery attempt, and the store accounts for copies at the target by
attempts, so a forwarder never sends again inside a call after a failure (the target may have taken the first
transfer).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from adaptor.config import ConfigError, Settings

FHIR_JSON = "application/fhir+json"


@dataclass(frozen=True)
class Delivery:
    """One converted message on its way out: the Bundle and the envelope facts transports carry beside it.

    Everything a forwarder sends is taken from here and from nothing that changes between attempts, so every
    attempt and every redelivery of one Bundle version is the same message at the target: same body, file name,
    broker message id, properties and headers.
    """

    record_id: str  # the store's id: unique, unlike message_id (senders reuse wsa:MessageID)
    message_id: str  # the SOAP wsa:MessageID: the reference's ``messageId`` property, for consumer dedup
    tracking_id: str
    interaction: str
    ods_codes: tuple[str, ...]
    dos_ids: tuple[str, ...]
    bundle_json: bytes  # the Bundle as UTF-8 JSON: the content `nhs111 convert` prints
    #: 1 for the Bundle made when the message was accepted, 2, 3... for each operator's reconversion.
    bundle_version: int = 1
    #: When this Bundle version was made (the broker message's creation time); ``None``: now.
    converted_at: datetime | None = None

    @property
    def broker_message_id(self) -> str:
        """The broker message id: the MessageID for version 1, ``<MessageID>/v<n>`` for a reconverted version,
        so that a broker or consumer deduplicating on message ids drops repeats of one version but takes a new
        version."""
        return self.message_id if self.bundle_version == 1 else f"{self.message_id}/v{self.bundle_version}"

    def created(self) -> float:
        """:attr:`converted_at` as a POSIX time (the same for every attempt); the current time without one."""
        return self.converted_at.timestamp() if self.converted_at is not None else time.time()

    def properties(self) -> dict[str, str]:
        """The message properties/headers every broker and HTTP target carries: the reference's names, and
        ``bundleVersion`` (which version of the Bundle this is)."""
        return {
            "messageId": self.message_id,
            "trackingId": self.tracking_id,
            "interaction": self.interaction,
            "odsCode": ",".join(self.ods_codes),
            "dosServiceId": ",".join(self.dos_ids),
            "bundleVersion": str(self.bundle_version),
        }


class DeliveryError(Exception):
    """The target did not accept the message; transient unless it is a :class:`PermanentDeliveryError`.

    ``str(exc)`` is kept in the message's delivery history. ``summary``, when set, is what may be logged above
    DEBUG instead: a target's reply (an OperationOutcome, say) can quote patient data.
    """

    summary: str | None = None


def log_summary(exc: BaseException) -> str:
    """A delivery failure as it may appear in logs above DEBUG (see :attr:`DeliveryError.summary`)."""
    summary = getattr(exc, "summary", None)
    return summary if isinstance(summary, str) and summary else f"{type(exc).__name__}: {exc}"


class PermanentDeliveryError(DeliveryError):
    """The target refused the message for good (e.g. HTTP 4xx): retrying the same Bundle cannot succeed."""


class InDoubtDeliveryError(DeliveryError):
    """The outcome is unknown: the message was written to the target and the connection was lost, or the answer
    did not come in time, before the target said whether it took it. Transient (retried), but the target may
    hold a copy: the outbox records the attempt as *in doubt*, and the store counts it among the possible
    redeliveries of a message delivered later."""


class Forwarder(Protocol):
    """Hands one converted message to its destination. Implementations are thread-safe."""

    #: Where messages go, for logs and the delivery history (never credentials).
    target: str

    def send(self, delivery: Delivery) -> None:
        """Deliver durably or raise (:class:`PermanentDeliveryError` when retrying cannot help); at most one
        transfer to the target per call."""
        ...

    def close(self) -> None:
        """Release connections; the forwarder may be used again afterwards (it reconnects)."""
        ...


#: How long a reachability check may take to connect: well inside what a readiness probe waits.
CHECK_TIMEOUT_SECONDS = 5.0


class Checkable(Protocol):
    """A forwarder that can tell whether its target is reachable now, for ``/readyz`` (:mod:`adaptor.ops.readiness`).

    Optional: every forwarder here has it, a forwarder without it is simply not checked. ``check`` never sends a
    message and takes at most about :data:`CHECK_TIMEOUT_SECONDS`; the caller limits how often it runs.
    """

    def check(self) -> None:
        """Return when the target can be reached; raise :class:`DeliveryError` saying why not otherwise."""
        ...


def forwarder_from_settings(settings: Settings) -> Forwarder:
    """The forwarder for the configured target; :class:`ConfigError` naming the target when it is unusable."""
    target = settings.resolved_forward_target
    scheme, separator, where = target.partition(":")
    scheme = scheme.lower()
    if separator and scheme == "dir" and where.strip():
        from adaptor.delivery.forwarders.folder import FolderForwarder

        return FolderForwarder(where.strip())
    from adaptor.delivery.forwarders.brokers import is_broker_url  # it imports this module

    if is_broker_url(target):
        if settings.amqp_protocol == "0-9-1":
            from adaptor.delivery.forwarders.amqp091 import Amqp091Forwarder

            return Amqp091Forwarder(settings)
        from adaptor.delivery.forwarders.amqp10 import Amqp10Forwarder

        return Amqp10Forwarder(settings)
    if scheme in ("http", "https"):
        from adaptor.delivery.forwarders.fhir_http import FhirHttpForwarder

        return FhirHttpForwarder(settings)
    # Named by its scheme only: the value may carry a password (user:secret@host).
    named = f"scheme {scheme!r}" if separator else "a value without a scheme"
    raise ConfigError(
        f"PEM111_FORWARD_TARGET ({named}) is not supported: use dir:<folder>, amqp[s]://host[:port] (or a "
        "failover:(...) list of them) or http[s]://<FHIR endpoint>"
    )
