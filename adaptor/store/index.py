"""What operators search by, read from a message's envelope and its converted Bundle: the ``message_index`` row.

Pure functions: :func:`bundle_facts` reads the Bundle (a dict, as the conversion made it, or parsed back from the
stored text), :func:`index_row` adds the envelope's identifiers. The store writes the row in the transaction that
stores the message (and replaces it when a reconversion makes a new Bundle, or ``nhs111 db reindex`` fills it).

The values are patient data: they go to the store, never to a log or a metric.

Search keys are *folded* so that what an operator types finds what the document says: names lower-case without
accents (``Zoë`` is found by ``zoe``), NHS numbers and postcodes without spaces, codes upper-case. The same
:func:`fold_name`, :func:`digits` and :func:`compact_upper` fold the search terms.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from adaptor.itk.wire import as_utc, sender_ods

#: The version of what :func:`bundle_facts` extracts. Rows filled by an older one (``message_index.indexed`` lower)
#: are filled again by ``nhs111 db reindex``; 0 means only the envelope's identifiers (migration step 4).
INDEX_VERSION = 1

NHS_NUMBER_SYSTEM = "https://fhir.nhs.uk/Id/nhs-number"

#: The columns :func:`bundle_facts` fills (all ``None`` for a message without a Bundle).
BUNDLE_COLUMNS = (
    "nhs_number",
    "family_key",
    "given_key",
    "patient_name",
    "birth_date",
    "postcode",
    "disposition_code",
    "disposition",
    "receiving_service",
    "effective_at",
)


def fold_name(text: str) -> str:
    """A name as it is searched: accents removed, case folded, spaces collapsed."""
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(plain.casefold().split())


def digits(text: str) -> str:
    """``text`` without spaces and dashes (an NHS number as ``999 100 0011`` or ``999-100-0011``)."""
    return "".join(text.split()).replace("-", "")


def compact_upper(text: str) -> str:
    """Upper-case without spaces: postcodes, ODS codes, Dx codes."""
    return "".join(text.split()).upper()


#: The resources the index reads, the first of each kind.
_KINDS = frozenset({"Patient", "ProcedureRequest", "HealthcareService", "Composition"})


def _first_of_each(bundle: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """The first resource of each of :data:`_KINDS` in the Bundle's entries (one pass)."""
    found: dict[str, Mapping[str, Any]] = {}
    entries = bundle.get("entry")
    for entry in entries if isinstance(entries, list) else ():
        resource = entry.get("resource") if isinstance(entry, Mapping) else None
        if isinstance(resource, Mapping):
            kind = resource.get("resourceType")
            if kind in _KINDS and kind not in found:
                found[kind] = resource
    return found


def _first(items: object) -> Mapping[str, Any]:
    if isinstance(items, Sequence) and items and isinstance(items[0], Mapping):
        return items[0]
    return {}


def _text(value: object) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


def _official_name(patient: Mapping[str, Any]) -> Mapping[str, Any]:
    names = [n for n in patient.get("name") or () if isinstance(n, Mapping)]
    return next((n for n in names if n.get("use") == "official"), names[0] if names else {})


def _home_address(patient: Mapping[str, Any]) -> Mapping[str, Any]:
    addresses = [a for a in patient.get("address") or () if isinstance(a, Mapping)]
    return next((a for a in addresses if a.get("use") == "home"), addresses[0] if addresses else {})


def _nhs_number(patient: Mapping[str, Any]) -> str | None:
    for identifier in patient.get("identifier") or ():
        if isinstance(identifier, Mapping) and identifier.get("system") == NHS_NUMBER_SYSTEM:
            value = _text(identifier.get("value"))
            if value:
                return digits(value)[:16]
    return None


def _moment(value: object) -> datetime | None:
    text = _text(value)
    if text is None:
        return None
    try:
        return as_utc(datetime.fromisoformat(text.replace("Z", "+00:00")))
    except ValueError:
        return None


def bundle_facts(bundle: Mapping[str, Any] | None) -> dict[str, Any]:
    """The index columns of :data:`BUNDLE_COLUMNS` read from ``bundle``: the (first) Patient, the disposition
    (the ProcedureRequest's code), the receiving service (the HealthcareService) and the document's time (the
    Composition's date). Whatever is missing is ``None``; nothing here raises for a Bundle of another shape."""
    facts: dict[str, Any] = dict.fromkeys(BUNDLE_COLUMNS)
    if not isinstance(bundle, Mapping):
        return facts
    first = _first_of_each(bundle)
    patient = first.get("Patient", {})
    name = _official_name(patient)
    family = _text(name.get("family"))
    given = [g.strip() for g in name.get("given") or () if isinstance(g, str) and g.strip()]
    shown = " ".join([*given, family.upper() if family else ""]).strip()
    postcode = _text(_home_address(patient).get("postalCode"))
    code_field = first.get("ProcedureRequest", {}).get("code")
    coding = _first(code_field.get("coding")) if isinstance(code_field, Mapping) else {}
    code = _text(coding.get("code"))
    facts.update(
        nhs_number=_nhs_number(patient),
        family_key=fold_name(family) if family else None,
        given_key=fold_name(given[0]) if given else None,
        patient_name=shown or None,
        birth_date=(_text(patient.get("birthDate")) or "")[:10] or None,
        postcode=compact_upper(postcode)[:16] if postcode else None,
        disposition_code=compact_upper(code)[:32] if code else None,
        disposition=_text(coding.get("display")),
        receiving_service=_text(first.get("HealthcareService", {}).get("name")),
        effective_at=_moment(first.get("Composition", {}).get("date")),
    )
    return facts


def stored_bundle_facts(bundle: str | None) -> dict[str, Any]:
    """:func:`bundle_facts` of a stored Bundle's text (``None``, or text that is not JSON: no facts)."""
    if bundle is None:
        return bundle_facts(None)
    try:
        return bundle_facts(json.loads(bundle))
    except ValueError:
        return bundle_facts(None)


def envelope_facts(
    *,
    record_id: str,
    message_id: str,
    tracking_id: str,
    sender: str,
    ods_codes: Iterable[str],
    dos_ids: Iterable[str],
) -> dict[str, Any]:
    """The index columns read from the envelope: the identifiers, the sender's ODS code and the recipients."""
    recipients = [compact_upper(code) for code in (*ods_codes, *dos_ids) if code.strip()]
    sender_code = sender_ods(sender)
    return {
        "record_id": record_id,
        "message_key": message_id.lower(),
        "tracking_key": tracking_id.lower(),
        "record_key": record_id.lower(),
        "sender_ods": compact_upper(sender_code) if sender_code else None,
        "recipients": f" {' '.join(recipients)} " if recipients else None,
    }


def index_row(
    envelope: Mapping[str, Any],
    received_at: datetime,
    facts: Mapping[str, Any] | None,
    warnings: Sequence[str] = (),
) -> dict[str, Any]:
    """A whole ``message_index`` row: :func:`envelope_facts`, the Bundle's ``facts`` (``None``: no Bundle) and
    the conversion's ``warnings``."""
    return {
        **envelope,
        **(facts if facts is not None else bundle_facts(None)),
        "received_at": received_at,
        "indexed": INDEX_VERSION,
        "warnings": json.dumps(list(warnings), ensure_ascii=False) if warnings else None,
    }
