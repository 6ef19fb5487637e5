"""XML schemas used by validation, each compiled once per process and shared by all request threads.

* The project's own schemas in ``wsdl/``: the Distribution Envelope (rule C18) and the ITK response types
  (served with the WSDL, used by tests).
* The published IUC / Pathways schema pack in ``settings.schema_dir`` (wire-contract.md section 8): the CDA
  wire schema ``POCD_MT000002UK01.xsd`` (rule D4), the level-2 conformance schema with its XSLT 2.0 transform
  (rule D5) and ``pathwaysCase_v2.4.xsd`` (rule D6). When the pack is not configured or a file is missing, the
  rule is skipped and one warning is logged the first time it is asked for.

lxml keeps the messages of the last validation on the schema object, so a :class:`CompiledSchema` runs one
validation at a time; a validation takes about a millisecond, so the lock is never contended for long.
"""

from __future__ import annotations

import copy
import functools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

from lxml import etree

from adaptor.config import Settings
from adaptor.itk.xmlsafe import ITK, parse_xml

log = logging.getLogger("adaptor.schemas")

_DEFAULT_WSDL_DIR = Path(__file__).resolve().parents[2] / "wsdl"

DISTRIBUTION_ENVELOPE_XSD = "itk-distribution-envelope.xsd"
MESSAGE_TYPES_XSD = "itk-message-types.xsd"

# Layout of the published pack below settings.schema_dir (its schemas include each other by relative path).
CDA_WIRE_XSD = "iuc/Schemas/POCD_MT000002UK01.xsd"
CDA_LEVEL2_XSD = "iuc/Schemas/POCD_MT200001GB02.xsd"
CDA_LEVEL2_XSLT = "iuc/Transforms/TrueCDAToCDALike_v2.xsl"
PATHWAYS_XSD = "pathways/pathwaysCase_v2.4.xsd"

#: At most this many validator messages are reported for one document (the first ones are the useful ones).
MAX_MESSAGES = 10

_PAYLOAD = f"{{{ITK}}}payload"
_PAYLOADS = f"{{{ITK}}}payloads"


def wsdl_dir(settings: Settings | None = None) -> Path:
    """The folder holding the WSDL and the project's own XSDs: ``PEM111_WSDL_DIR`` when set, else ``wsdl/``
    beside the ``adaptor`` package."""
    configured = settings.wsdl_dir if settings is not None else ""
    return Path(configured) if configured else _DEFAULT_WSDL_DIR


class CompiledSchema:
    """A compiled :class:`lxml.etree.XMLSchema` that can be shared between threads."""

    def __init__(self, path: Path, schema: etree.XMLSchema) -> None:
        self.path = path
        self._schema = schema
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.path.name

    def errors(self, element: etree._Element | etree._ElementTree) -> list[str]:
        """Validate ``element`` (in place, as if it were the document root) and return the validator messages;
        an empty list means valid. Messages can quote document content: send them, log them only at DEBUG."""
        with self._lock:
            if self._schema.validate(element):
                return []
            entries: Any = self._schema.error_log  # iterable; the stubs do not say so
            return [_describe(entry) for entry in list(entries)[:MAX_MESSAGES]]


def _describe(entry: Any) -> str:
    # The file name lxml attaches is the request ("<string>") or a temporary copy: only the line helps.
    message = str(entry.message).strip()
    return f"line {entry.line}: {message}" if entry.line else message


_compile_lock = threading.RLock()
_Getter = TypeVar("_Getter", bound=Callable[..., Any])


def _compiled_once(getter: _Getter) -> _Getter:
    """``functools.cache`` that lets one thread at a time compute: libxml2 fails when threads compile schemas
    that include one another concurrently (the first requests after a start), and such a failure would then be
    cached as "skip this rule" for the life of the process."""
    cached = functools.cache(getter)

    @functools.wraps(getter)
    def once(*args: Any) -> Any:
        with _compile_lock:
            return cached(*args)

    once.cache_clear = cached.cache_clear  # type: ignore[attr-defined]  # for tests that change the pack
    return cast(_Getter, once)


def _compile(path: Path) -> CompiledSchema:
    """Parse and compile the XSD at ``path``; its relative includes resolve against its own folder."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    return CompiledSchema(path, etree.XMLSchema(etree.parse(str(path), parser)))


# -- the project's own schemas (always present: a failure here is a packaging defect and is raised) ----------


@_compiled_once
def _own_schema(path: Path) -> CompiledSchema:
    return _compile(path)


def distribution_envelope_schema(directory: Path | None = None) -> CompiledSchema:
    """``wsdl/itk-distribution-envelope.xsd``, compiled once."""
    return _own_schema((directory or wsdl_dir()) / DISTRIBUTION_ENVELOPE_XSD)


def message_types_schema(directory: Path | None = None) -> CompiledSchema:
    """``wsdl/itk-message-types.xsd`` (SimpleMessageResponse, ToolkitErrorInfo), compiled once."""
    return _own_schema((directory or wsdl_dir()) / MESSAGE_TYPES_XSD)


def envelope_for_schema_check(distribution_envelope: etree._Element) -> etree._Element:
    """A copy of ``distribution_envelope`` fit for rule C18: the header in full, each payload reduced to its
    attributes and one empty element per element child (same name, no attributes, no content).

    Keeping an empty stand-in for each child keeps the schema's "at most one element per payload" check, while
    dropping the CDA avoids the known false positive of lax validation meeting ``xsi:type="ST"``. Only the
    small header is deep-copied, so this stays cheap for a half-megabyte repeat-caller set.
    """
    reduced = etree.Element(distribution_envelope.tag, _attributes(distribution_envelope))
    for child in distribution_envelope:
        if not isinstance(child.tag, str):
            continue
        if child.tag != _PAYLOADS:
            reduced.append(_deep_copy(child))
            continue
        payloads = etree.SubElement(reduced, child.tag, _attributes(child))
        for payload in child:
            if not isinstance(payload.tag, str):
                continue
            if payload.tag != _PAYLOAD:
                payloads.append(_deep_copy(payload))
                continue
            stub = etree.SubElement(payloads, payload.tag, _attributes(payload))
            for document in payload:
                if isinstance(document.tag, str):
                    etree.SubElement(stub, document.tag)
    return reduced


def _attributes(element: etree._Element) -> dict[str, str]:
    return {str(name): str(value) for name, value in element.attrib.items()}


def _deep_copy(element: etree._Element) -> etree._Element:
    copied = copy.deepcopy(element)
    copied.tail = None
    return copied


def distribution_envelope_errors(
    distribution_envelope: etree._Element, directory: Path | None = None
) -> list[str]:
    """Rule C18: the schema messages for ``distribution_envelope`` with its payload content removed."""
    return distribution_envelope_schema(directory).errors(envelope_for_schema_check(distribution_envelope))


# -- the published schema pack (optional: a missing pack skips D4-D6) ----------------------------------------


@_compiled_once
def _schema_pack(schema_dir: str) -> Path | None:
    """The schema pack folder, or ``None`` with one warning for the whole process when there is none."""
    if not schema_dir:
        log.warning("PEM111_SCHEMA_DIR is not set: CDA and Pathways schema checks (rules D4-D6) are skipped")
        return None
    if not Path(schema_dir).is_dir():
        log.warning("PEM111_SCHEMA_DIR=%s is not a folder: rules D4-D6 are skipped", schema_dir)
        return None
    return Path(schema_dir)


@_compiled_once
def _published_schema(schema_dir: str, relative: str) -> CompiledSchema | None:
    """The published XSD ``relative`` below ``schema_dir``, or ``None`` (logged once) when unavailable."""
    pack = _schema_pack(schema_dir)
    if pack is None:
        return None
    path = pack / relative
    if not path.is_file():
        log.warning("%s not found below PEM111_SCHEMA_DIR=%s: its rule is skipped", relative, schema_dir)
        return None
    try:
        return _compile(path)
    except (OSError, etree.XMLSchemaParseError, etree.XMLSyntaxError) as exc:
        log.error("%s could not be compiled (%s): validation against it is skipped", path, exc)
        return None


def cda_schema(schema_dir: str) -> CompiledSchema | None:
    """``POCD_MT000002UK01.xsd``, the CDA wire format (rule D4), or ``None`` when unavailable."""
    return _published_schema(schema_dir, CDA_WIRE_XSD)


def pathways_schema(schema_dir: str) -> CompiledSchema | None:
    """``pathwaysCase_v2.4.xsd`` (rule D6), or ``None`` when unavailable."""
    return _published_schema(schema_dir, PATHWAYS_XSD)


class Level2Validator:
    """CDA level-2 conformance (rule D5): the on-the-wire document transformed with the XSLT 2.0 stylesheet
    ``TrueCDAToCDALike_v2.xsl`` (run by Saxon, since lxml only has XSLT 1.0), then validated against the
    templated schema ``POCD_MT200001GB02.xsd``."""

    def __init__(self, stylesheet: Path, schema: CompiledSchema) -> None:
        from saxonche import PySaxonProcessor  # optional dependency: checked by level2_validator()

        self._processor = PySaxonProcessor(license=False)
        self._executable = self._processor.new_xslt30_processor().compile_stylesheet(
            stylesheet_file=str(stylesheet)
        )
        self._schema = schema
        # One Saxon processor per validator; its thread-safety across Python threads is not documented.
        self._lock = threading.Lock()

    def errors(self, document: etree._Element) -> list[str]:
        """The level-2 schema messages for ``document``; raises on a transform failure."""
        source = etree.tostring(document, encoding="unicode")
        with self._lock:
            node = self._processor.parse_xml(xml_text=source)
            result = self._executable.transform_to_string(xdm_node=node)
        if not result:
            return ["the level-2 transform produced no document"]
        return self._schema.errors(parse_xml(result.encode("utf-8")))


@_compiled_once
def level2_validator(schema_dir: str) -> Level2Validator | None:
    """The rule D5 validator, or ``None`` (one log line) without an XSLT 2.0 processor or schema pack."""
    if not _xslt2_available():
        log.info("CDA level-2 validation (rule D5) skipped: no XSLT 2.0 processor (package saxonche)")
        return None
    pack = _schema_pack(schema_dir)
    if pack is None:
        return None
    schema = _published_schema(schema_dir, CDA_LEVEL2_XSD)
    stylesheet = pack / CDA_LEVEL2_XSLT
    if schema is None or not stylesheet.is_file():
        log.warning("CDA level-2 validation (rule D5) skipped: %s or its schema is missing", CDA_LEVEL2_XSLT)
        return None
    try:
        return Level2Validator(stylesheet, schema)
    except Exception as exc:  # Saxon reports a bad stylesheet with its own exception types
        log.error("CDA level-2 validation (rule D5) skipped: %s could not be compiled (%s)", stylesheet, exc)
        return None


#: The rules the published pack serves, and the files below ``PEM111_SCHEMA_DIR`` each of them needs.
PACK_RULE_FILES: dict[str, tuple[str, ...]] = {
    "D4": (CDA_WIRE_XSD,),
    "D5": (CDA_LEVEL2_XSD, CDA_LEVEL2_XSLT),
    "D6": (PATHWAYS_XSD,),
}


@dataclass(frozen=True)
class SchemaRules:
    """Which schema rules this process applies: ``active`` rules, ``skipped`` ones with the reason, and the files
    of the pack that ``PEM111_SCHEMA_DIR`` should hold but does not (every one when it names no folder)."""

    active: tuple[str, ...]
    skipped: dict[str, str] = field(default_factory=dict)
    missing: tuple[str, ...] = ()

    def body(self) -> dict[str, object]:
        """The ``schemas`` part of ``/readyz``."""
        rules = {rule: "active" for rule in self.active}
        rules |= {rule: f"skipped: {why}" for rule, why in self.skipped.items()}
        return {"rules": dict(sorted(rules.items())), "missing": list(self.missing)}


def schema_rules(settings: Settings) -> SchemaRules:
    """The schema rules in force with ``settings`` (rule C18 always: its schema ships with the adaptor).

    Compiles what is not compiled yet (once per process), so :func:`warm_up` first keeps this cheap."""
    schema_dir = settings.schema_dir
    pack = _schema_pack(schema_dir)
    missing: list[str] = []
    if schema_dir:
        for files in PACK_RULE_FILES.values():
            missing.extend(name for name in files if pack is None or not (pack / name).is_file())
    compiled = {"D4": cda_schema(schema_dir) is not None, "D6": pathways_schema(schema_dir) is not None}
    skipped: dict[str, str] = {}
    if settings.cda_level2_validation == "off":
        skipped["D5"] = "PEM111_CDA_LEVEL2_VALIDATION=off"
    else:
        compiled["D5"] = level2_validator(schema_dir) is not None
    for rule, files in PACK_RULE_FILES.items():
        if rule in skipped or compiled[rule]:
            continue
        if not schema_dir:
            skipped[rule] = "PEM111_SCHEMA_DIR is not set"
        elif any(name in missing for name in files):
            skipped[rule] = "schema missing"
        elif rule == "D5" and not _xslt2_available():
            skipped[rule] = "no XSLT 2.0 processor (package saxonche)"
        else:
            skipped[rule] = "schema could not be compiled"
    active = ("C18", *(rule for rule in PACK_RULE_FILES if rule not in skipped))
    return SchemaRules(active, skipped, tuple(dict.fromkeys(missing)))


def _xslt2_available() -> bool:
    try:
        import saxonche  # noqa: F401  (only probing that the optional package is installed)
    except ImportError:
        return False
    return True


def warm_up(settings: Settings) -> SchemaRules:
    """Compile every schema the settings call for, so the first request pays nothing and configuration
    problems are logged at startup; returns the rules in force. Raises when the project's own schemas are
    broken."""
    distribution_envelope_schema(wsdl_dir(settings))
    message_types_schema(wsdl_dir(settings))
    return schema_rules(settings)
