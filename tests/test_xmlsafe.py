"""The one safe XML parse (adaptor.itk.xmlsafe.parse_xml) against DOCTYPEs in every encoding.

A DOCTYPE naming a local file must be refused with the same text whether the file exists, does not exist or is a
FIFO that nobody writes to, in UTF-8, UTF-16 and UTF-32 of either byte order, with and without a byte order
mark: otherwise the fault text is a file-existence probe, and a FIFO holds the request. libxml2 must never get
to open the file.
"""

from __future__ import annotations

import base64
import concurrent.futures
from collections.abc import Callable
from pathlib import Path

import pytest
from itk_factory import NS, build_request, clinical_document, find, pathways_case
from lxml import etree

from adaptor.itk.payloads import PayloadError, clinical_documents
from adaptor.itk.xmlsafe import XmlRejected, parse_xml
from mappings.questionnaire import read_pathways_case

DOCTYPE_REFUSED = "a document type declaration (DOCTYPE) is not allowed in a SOAP message"

#: (name, codec, byte order mark); the codecs without a suffix write their own mark.
ENCODINGS = [
    ("UTF-8", "utf-8", b""),
    ("UTF-16", "utf-16-le", b""),
    ("UTF-16", "utf-16-be", b""),
    ("UTF-16", "utf-16-le", b"\xff\xfe"),
    ("UTF-16", "utf-16-be", b"\xfe\xff"),
    ("UTF-32", "utf-32-le", b""),
    ("UTF-32", "utf-32-be", b""),
    ("UTF-32", "utf-32-le", b"\xff\xfe\x00\x00"),
    ("UTF-32", "utf-32-be", b"\x00\x00\xfe\xff"),
]
ENCODING_IDS = [f"{codec}{'-bom' if bom else ''}" for _, codec, bom in ENCODINGS]


def encode(text: str, name: str, codec: str, bom: bytes) -> bytes:
    return bom + (f'<?xml version="1.0" encoding="{name}"?>' + text).encode(codec)




def refusal(parse: Callable[[bytes], object], data: bytes) -> str:
    """The text ``parse`` refuses ``data`` with, within 1 s (a hang on a FIFO fails the test, not the suite)."""
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        future = pool.submit(parse, data)
        try:
            future.result(timeout=1.0)
        except XmlRejected as exc:
            return str(exc)
        except PayloadError as exc:
            return str(exc)
        except concurrent.futures.TimeoutError:
            pytest.fail("the parse did not return within 1 s: it is reading a file the document names")
        pytest.fail("the document was accepted")
    finally:
        pool.shutdown(wait=False)


@pytest.mark.parametrize(("name", "codec", "bom"), ENCODINGS, ids=ENCODING_IDS)
@pytest.mark.parametrize("text", ["<x/>", "<x>&e;</x>"], ids=["plain", "entity-reference"])
def test_doctype_naming_a_file_gets_one_answer_in_every_encoding(
    doctype_targets: dict[str, Path], name: str, codec: str, bom: bytes, text: str
) -> None:
    answers = {
        kind: refusal(parse_xml, encode(f'<!DOCTYPE x SYSTEM "{path}">{text}', name, codec, bom))
        for kind, path in doctype_targets.items()
    }
    assert answers == dict.fromkeys(doctype_targets, DOCTYPE_REFUSED)
    assert doctype_targets["fifo"].exists() and not doctype_targets["missing"].exists()


@pytest.mark.parametrize(("name", "codec", "bom"), ENCODINGS, ids=ENCODING_IDS)
def test_doctype_after_a_long_prolog_is_refused_without_opening_the_file(
    doctype_targets: dict[str, Path], name: str, codec: str, bom: bytes
) -> None:
    """Beyond the scanned prolog only the resolver stands between libxml2 and the file: it must hold too."""
    padding = "<!--" + "x" * 20_000 + "-->"
    for path in doctype_targets.values():
        data = encode(f'{padding}<!DOCTYPE x SYSTEM "{path}"><x/>', name, codec, bom)
        assert refusal(parse_xml, data) == DOCTYPE_REFUSED


@pytest.mark.parametrize(
    "data",
    [
        b'<?xml version="1.0" encoding="UTF-7"?>+ADwAIQ-DOCTYPE x SYSTEM +ACI-/etc/passwd+ACI-+AD4-<x/>',
        '<?xml version="1.0" encoding="IBM037"?><!DOCTYPE x SYSTEM "/etc/passwd"><x/>'.encode("cp037"),
        '<?xml version="1.0" encoding="UTF-16"?><!ENTITY e SYSTEM "/etc/passwd"><x/>'.encode("utf-16"),
    ],
    ids=["utf-7", "ebcdic", "entity-utf-16"],
)
def test_markup_declarations_in_other_encodings_are_refused(data: bytes) -> None:
    assert refusal(parse_xml, data) == DOCTYPE_REFUSED


@pytest.mark.parametrize(
    ("data", "name"),
    [
        (b'<?xml version="1.0" encoding="x-unknown"?><x/>', "x-unknown"),
        (b'<?xml version="1.0" encoding="base64"?><x/>', "base64"),  # a byte transform, not a text encoding
        (b"\x00\x00\xff\xfe<x/>", "UCS-4"),
    ],
)
def test_encodings_that_cannot_be_read_are_refused(data: bytes, name: str) -> None:
    message = refusal(parse_xml, data)
    assert message.startswith("not well-formed XML: Unsupported encoding: ") and name in message


@pytest.mark.parametrize("declared", ["UTF-16", "UTF-32"])
def test_an_8_bit_document_declaring_a_wide_encoding_is_refused_not_a_crash(declared: str) -> None:
    # Found by the hostile-input suite: the declared codec wants a byte order mark the document cannot have.
    message = refusal(parse_xml, f'<?xml version="1.0" encoding="{declared}"?>\n<x/>'.encode())
    assert message == f"not well-formed XML: the document cannot be read as {declared.lower()}"


@pytest.mark.parametrize(("name", "codec", "bom"), ENCODINGS, ids=ENCODING_IDS)
def test_documents_without_doctype_parse_in_every_encoding(name: str, codec: str, bom: bytes) -> None:
    root = parse_xml(encode("<x a='é'>ü</x>", name, codec, bom))
    assert (root.tag, root.get("a"), root.text) == ("x", "é", "ü")


def test_utf16_soap_request_parses() -> None:
    text = etree.tostring(build_request(), encoding="unicode")
    root = parse_xml(('<?xml version="1.0" encoding="UTF-16"?>' + text).encode("utf-16"))
    assert etree.QName(root).localname == "Envelope"


def test_xinclude_and_schema_location_are_not_processed(doctype_targets: dict[str, Path]) -> None:
    root = parse_xml(
        f'<x xmlns:xi="http://www.w3.org/2001/XInclude" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
        f' xsi:noNamespaceSchemaLocation="{doctype_targets["fifo"]}"><xi:include href="{doctype_targets["existing"]}"'
        ' parse="text"/></x>'.encode()
    )
    assert etree.QName(root[0]).localname == "include" and "root:" not in "".join(root.itertext())


@pytest.mark.parametrize("kind", ["existing", "missing", "fifo"])
def test_base64_payload_with_doctype_in_utf16_is_refused_alike(doctype_targets: dict[str, Path], kind: str) -> None:
    hostile = f'<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE x SYSTEM "{doctype_targets[kind]}"><x/>'
    root = build_request(encoding="base64")
    find(root, "itk:payloads/itk:payload").text = base64.b64encode(hostile.encode("utf-16")).decode()
    distribution_envelope = root.find("soap:Body/itk:DistributionEnvelope", NS)
    message = refusal(lambda _: clinical_documents(distribution_envelope), b"")
    assert message == f"decoded payload is not acceptable XML: {DOCTYPE_REFUSED}"


@pytest.mark.parametrize(("name", "codec", "bom"), ENCODINGS, ids=ENCODING_IDS)
def test_pathways_case_with_doctype_is_not_read_in_any_encoding(
    doctype_targets: dict[str, Path], name: str, codec: str, bom: bytes
) -> None:
    """The mapping reads the Pathways attachment itself (mappings/ cannot use adaptor's parser): as UTF-8 only."""
    case = pathways_case().decode("utf-8").split("?>", 1)[-1]
    for path in doctype_targets.values():
        attachment = encode(f'<!DOCTYPE x SYSTEM "{path}">{case}', name, codec, bom)
        document = clinical_document(pathways_base64=base64.b64encode(attachment).decode())
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        try:
            assert pool.submit(read_pathways_case, document).result(timeout=1.0) is None
        finally:
            pool.shutdown(wait=False)
