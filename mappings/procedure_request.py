"""The ProcedureRequest (mapping.md section 3.11): the 111 disposition (``dischargeDispositionCode``, e.g.
Dx06).

No context, requester or performer.
"""

from __future__ import annotations

from . import hl7
from .context import MappingContext
from .hl7 import Json

_DISPOSITION = hl7.xpath("hl7:componentOf/hl7:encompassingEncounter/hl7:dischargeDispositionCode[1]")
_EFFECTIVE_TIME = hl7.xpath("hl7:effectiveTime[1]")


def map_procedure_request(ctx: MappingContext, subject: Json | None, condition: Json) -> Json | None:
    """The disposition as a ProcedureRequest; ``None`` when the document has no usable disposition code."""
    disposition = hl7.coding(hl7.one(_DISPOSITION, ctx.document))
    if not disposition:
        return None
    content = hl7.compact(
        {
            "status": "active",
            "intent": "plan",
            "priority": "routine",
            "doNotPerform": False,
            "code": {"coding": [disposition]},
            "subject": hl7.ref(subject) if subject is not None else None,
            "occurrencePeriod": {"start": hl7.datetime_of(hl7.one(_EFFECTIVE_TIME, ctx.document))},
            "reasonReference": [hl7.ref(condition)],
        }
    )
    return {**ctx.new_resource("ProcedureRequest"), **(content or {})}
