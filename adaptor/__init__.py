"""NHS 111 ITK receiver adaptor: the SOAP endpoint, validation, storage, conversion and delivery.

``adaptor.convert`` is the conversion function (request bytes → FHIR STU3 Encounter Report Bundle) of
:mod:`adaptor.delivery.conversion`, where its other names live
(``from adaptor.delivery.conversion import ConversionError, validate_bundle``). ARCHITECTURE.md walks through the
folders.
"""

from __future__ import annotations

from adaptor.delivery.conversion import convert

__all__ = ["convert"]
