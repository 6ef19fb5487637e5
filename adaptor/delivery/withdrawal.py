"""The withdrawal of a delivered message (nullification.md §2.3): what the receiver's system gets when a 111 sender
withdraws a document it sent in error.

A withdrawal is the Bundle the receiver's system already has, with the same ``fullUrl``s and resource ids, in
which every resource that has a status carries ``entered-in-error`` (Condition through ``verificationStatus``),
and a new MessageHeader: a new id, ``timestamp`` = when the sender withdrew the document (the nullification's
``effectiveTime``), ``reason`` = the nullification interaction, and the reason for the withdrawal in the
extension :data:`REASON_EXTENSION`. Everything else is as it was, so a receiving system finds each resource it
holds by its id and marks it withdrawn. The store keeps it as the message's next Bundle version and the outbox
delivers it as any Bundle (:mod:`adaptor.store.nullifying`).
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import orjson

from adaptor.itk.documents import REASON_CODE_SYSTEM, Nullification
from adaptor.itk.wire import INTERACTION_KEY
from adaptor.store import Original
from mappings import hl7

ENTERED_IN_ERROR = "entered-in-error"

#: The resources of an Encounter Report Bundle whose ``status`` the withdrawal sets (STU3 allows
#: ``entered-in-error`` in each); a Condition's is its ``verificationStatus``. The others (Patient, Organization,
#: Practitioner, Location, HealthcareService, Questionnaire, Device...) have no such status and are left as they are.
STATUS_RESOURCES = frozenset(
    {
        "Composition",
        "Encounter",
        "ReferralRequest",
        "ProcedureRequest",
        "CarePlan",
        "Appointment",
        "Observation",
        "QuestionnaireResponse",
        "Consent",
        "List",
    }
)

#: The MessageHeader extension that says why the document was withdrawn: a CodeableConcept with the sender's
#: reason code (code system :data:`~adaptor.itk.documents.REASON_CODE_SYSTEM`, as ``urn:oid:``) and its text.
REASON_EXTENSION = "urn:nhs111-adaptor:StructureDefinition:nullification-reason"

#: Where the new MessageHeader ids come from: one per (nullification, withdrawn message), the same every time.
_HEADER_IDS = uuid.UUID("6f1f6a51-8a59-4c43-9d0c-5b8a0f6c1a11")


def message_header_id(nullification_record_id: str, original_record_id: str) -> str:
    """The withdrawal's MessageHeader id: new (the withdrawn message's is the sender's MessageID), different for
    each message one nullification withdraws, and the same whenever it is made again."""
    return str(uuid.uuid5(_HEADER_IDS, f"{nullification_record_id}/{original_record_id}"))


def reason_extension(nullification: Nullification) -> dict[str, Any]:
    """:data:`REASON_EXTENSION` with the nullification's reason."""
    concept: dict[str, Any] = {}
    if nullification.reason_code:
        coding = {"system": f"urn:oid:{REASON_CODE_SYSTEM}", "code": nullification.reason_code}
        if nullification.reason_display:
            coding["display"] = nullification.reason_display
        concept["coding"] = [coding]
    concept["text"] = nullification.reason
    return {"url": REASON_EXTENSION, "valueCodeableConcept": concept}


def withdrawal_bundle(
    original: dict[str, Any],
    nullification: Nullification,
    *,
    interaction: str,
    header_id: str,
    now: datetime,
) -> dict[str, Any]:
    """The withdrawal of the Bundle ``original`` (a stored Encounter Report Bundle, as a dict; left unchanged) by
    ``nullification``, received with the nullification ``interaction``; ``header_id`` is the new MessageHeader's
    id and ``now`` the time the withdrawal is made (``Bundle.meta.lastUpdated``)."""
    bundle = copy.deepcopy(original)
    bundle["meta"] = {**bundle.get("meta", {}), "lastUpdated": hl7.format_millis(now)}
    for entry in bundle.get("entry", []):
        resource = entry.get("resource", {})
        kind = resource.get("resourceType")
        if kind == "MessageHeader":
            entry["fullUrl"] = f"urn:uuid:{header_id}"
            entry["resource"] = _message_header(resource, nullification, interaction, header_id)
        elif kind in STATUS_RESOURCES:
            resource["status"] = ENTERED_IN_ERROR
        elif kind == "Condition":
            resource["verificationStatus"] = ENTERED_IN_ERROR
    return bundle


def _message_header(
    original: dict[str, Any], nullification: Nullification, interaction: str, header_id: str
) -> dict[str, Any]:
    """The new MessageHeader: the original's event, destination and source, in the original's order; the rest
    new."""
    header: dict[str, Any] = {
        "resourceType": "MessageHeader",
        "id": header_id,
        "extension": [reason_extension(nullification)],
    }
    replaced = {
        "timestamp": hl7.format_millis(nullification.effective_at),
        "reason": {"coding": [{"system": INTERACTION_KEY, "code": interaction}]},
    }
    for key, value in original.items():
        if key not in header:
            header[key] = replaced.pop(key, value)
    header.update(replaced)  # what the original lacked
    return header


def withdrawal_maker(
    nullification: Nullification, *, interaction: str, nullification_record_id: str, now: datetime
) -> Callable[[Original], str]:
    """What :meth:`adaptor.store.MessageStore.accept_nullification` calls for each stored message that needs a
    withdrawal: its withdrawal as stored and delivered (compact JSON, as every Bundle is kept)."""

    def make(original: Original) -> str:
        bundle = withdrawal_bundle(
            orjson.loads(original.bundle),
            nullification,
            interaction=interaction,
            header_id=message_header_id(nullification_record_id, original.record_id),
            now=now,
        )
        return orjson.dumps(bundle).decode("utf-8")

    return make
