"""The Device (mapping.md section 3.19): this adaptor, as the requester agent and the List source."""

from __future__ import annotations

from . import hl7
from .context import MappingContext
from .hl7 import Json

MODEL = "111 Adaptor"


def map_device(ctx: MappingContext) -> Json:
    content = hl7.compact({"model": MODEL, "version": ctx.config.device_version})
    return {**ctx.new_resource("Device"), **(content or {})}
