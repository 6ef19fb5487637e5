"""NHS 111 ITK receiver adaptor: the SOAP endpoint, validation, storage, conversion and delivery.

``adaptor.convert`` is the conversion *function* (request bytes → FHIR STU3 Encounter Report Bundle), imported
here so that it is the same object whatever was imported before; import the module's other names with
``from adaptor.convert import ConversionError, validate_bundle``.
"""

from __future__ import annotations

# Imported eagerly on purpose: the function shares its name with its module, and a lazy export would make
# ``adaptor.convert`` the module or the function depending on import order.
from adaptor.delivery.conversion import convert

__all__ = ["convert"]
