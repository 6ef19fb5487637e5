"""CDA → FHIR STU3 mapping: pure functions from a selected ClinicalDocument (plus a few envelope fields) to an
Encounter Report Bundle (docs: ``mapping.md``). No I/O, no logging, no dependency on :mod:`adaptor`.

Public API: :func:`encounter_report` builds the Bundle from a :class:`MappingContext`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .context import EnvelopeFields, MappingConfig, MappingContext
from .hl7 import MappingError

if TYPE_CHECKING:
    from .bundle import encounter_report

__all__ = ["EnvelopeFields", "MappingConfig", "MappingContext", "MappingError", "encounter_report"]


def __getattr__(name: str) -> Any:
    # The orchestrator imports every resource module; load it on first use so that importing a single helper
    # module (``mappings.hl7``) stays cheap.
    if name == "encounter_report":
        from .bundle import encounter_report

        return encounter_report
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
