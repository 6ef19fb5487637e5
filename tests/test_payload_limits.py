"""Payload bombs: every decoded payload and Pathways attachment is held to the limits of
:mod:`adaptor.itk.payloads`, checked while inflating and parsing, at accept, conversion (a replay converts again)
and in the console.

The bombs are built by :mod:`attacks`, which the front door's adversarial suite (``test_front_door.py``) sends to a
real server.

Each hostile case runs under :func:`within`, so a regression fails instead of hanging the suite.
"""

from __future__ import annotations

import base64
import gzip
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
from attacks import element_bomb as issue_element_bomb
from attacks import gzip_stream, padded_cda, request_with
from conftest import require_shared
from itk_factory import RECIPIENT_DOS, RECIPIENT_ODS, build_request, clinical_document, find, to_bytes
from lxml import etree

from adaptor import composition
from adaptor.config import Settings
from adaptor.console.cda_text import readable_document
from adaptor.delivery import replay
from adaptor.delivery.conversion import ConversionError, convert
from adaptor.itk import payloads
from adaptor.itk.allowlist import AllowList
from adaptor.itk.faults import ItkFault
from adaptor.itk.message import ItkMessage
from adaptor.itk.rules import parse_request, validate_request
from adaptor.itk.xmlsafe import TooManyNodes, parse_xml
from adaptor.store import Status
from mappings import questionnaire

DEFAULT = Settings()
T = TypeVar("T")


#: How long a bounded parse may take before the test calls it a hang. A bound, not a measurement: these inputs are
#: stopped in well under a second (``make soak`` measures them); the test must not fail on a busy machine.
HANG_SECONDS = 30.0


def within(work: Callable[[], T], seconds: float = HANG_SECONDS) -> T:
    """``work()``'s result; fails the test when it takes longer than ``seconds`` (the thread is left behind)."""
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["value"] = work()
        except BaseException as exc:  # handed back to the test below
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"took longer than {seconds} s"
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]


def validate(raw: bytes) -> ItkMessage:
    return validate_request(parse_request(raw, DEFAULT), DEFAULT, AllowList(DEFAULT))


def refusal(raw: bytes) -> str:
    """The D1 fault's diagnostic for ``raw``, which must come (:func:`within`)."""
    with pytest.raises(ItkFault) as caught:
        within(lambda: validate(raw))
    fault = caught.value
    assert (fault.rule, fault.error_code, fault.text) == ("D1", 1000, "Payload could not be decoded")
    return str(fault.diagnostic)


# -- bombs ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def element_bomb() -> bytes:
    """The issue's 65 KB request: base64 + gzip of a CDA with 12 million empty elements."""
    raw = issue_element_bomb()
    assert len(raw) < 80_000
    return raw


def test_gzip_bomb_of_empty_elements_is_refused_fast(element_bomb: bytes) -> None:
    started = time.perf_counter()
    diagnostic = refusal(element_bomb)
    assert time.perf_counter() - started < 1.0
    assert "limit of 100 times its compressed size" in diagnostic


def test_valid_cda_padded_with_millions_of_comments_is_refused() -> None:
    raw = request_with(gzip_stream(padded_cda(b"<!---->"), 6_000_000))
    assert "limit" in refusal(raw)


@pytest.mark.parametrize("padding", [b"<!---->", b"<?p?>", b"<a/>"])
def test_nodes_are_counted_within_the_inflate_limits(padding: bytes) -> None:
    """Under the ratio floor, a payload of comments, processing instructions or elements meets the node limit."""
    data = gzip_stream(padded_cda(padding), payloads.MAX_NODES + 1000)
    assert len(gzip.decompress(data)) < payloads.INFLATE_RATIO_FLOOR
    assert f"exceeds the limit of {payloads.MAX_NODES} XML nodes" in refusal(request_with(data))


def test_uncompressed_base64_payload_meets_the_node_limit() -> None:
    data = b"".join(padded_cda(b"<!---->" * (payloads.MAX_NODES + 10)))
    assert f"limit of {payloads.MAX_NODES} XML nodes" in refusal(request_with(data, "base64"))


def test_a_payload_just_under_the_node_limit_is_accepted() -> None:
    document_nodes = sum(1 for _ in clinical_document().iter())
    data = gzip_stream(padded_cda(b"<!---->"), payloads.MAX_NODES - document_nodes)
    message = within(lambda: validate(request_with(data)))
    assert etree.QName(message.selected).localname == "ClinicalDocument"


def test_depth_is_limited() -> None:
    deep = b"<a>" * (payloads.MAX_DEPTH + 1) + b"</a>" * (payloads.MAX_DEPTH + 1)
    assert str(payloads.MAX_DEPTH) in refusal(request_with(gzip.compress(deep)))


# -- gzip framing ---------------------------------------------------------------------------------------------------


def test_truncated_gzip_is_refused() -> None:
    data = gzip.compress(b"".join(padded_cda()))
    assert "truncated" in refusal(request_with(data[: len(data) // 2]))
    assert "truncated" in refusal(request_with(data[:-4]))  # only the length trailer missing


def test_a_second_gzip_member_is_refused() -> None:
    data = gzip.compress(b"".join(padded_cda()))
    assert "data follows the end" in refusal(request_with(data + gzip.compress(b"<x/>")))
    assert "data follows the end" in refusal(request_with(data + b"\0"))


# -- byte limits (small limits, so the tests stay fast) -------------------------------------------------------------


def envelope_of(*datas: bytes, encoding: str = "gzip") -> etree._Element:
    root = build_request(documents=[clinical_document() for _ in datas], encoding=encoding)
    for payload, data in zip(root.iter("{urn:nhs-itk:ns:201005}payload"), datas, strict=True):
        payload.text = base64.b64encode(data).decode()
    return find(root, "soap:Body/itk:DistributionEnvelope")


def test_ratio_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(payloads, "INFLATE_RATIO_FLOOR", 10_000)
    document = b"".join(padded_cda(b"<!--" + b"x" * 20_000 + b"-->"))
    data = gzip.compress(document)
    monkeypatch.setattr(payloads, "MAX_INFLATE_RATIO", len(document) // len(data) + 1)
    assert payloads.clinical_documents(envelope_of(data))  # just under
    monkeypatch.setattr(payloads, "MAX_INFLATE_RATIO", len(document) // len(data) - 1)
    with pytest.raises(payloads.PayloadLimitError, match="times its compressed size"):
        payloads.clinical_documents(envelope_of(data))


@pytest.mark.parametrize("compress", [True, False])
def test_decoded_size_limit(monkeypatch: pytest.MonkeyPatch, compress: bool) -> None:
    document = b"".join(padded_cda())
    monkeypatch.setattr(payloads, "MAX_DECODED_BYTES", len(document))
    data, encoding = (gzip.compress(document), "gzip") if compress else (document, "base64")
    assert payloads.clinical_documents(envelope_of(data, encoding=encoding))  # exactly at the limit
    monkeypatch.setattr(payloads, "MAX_DECODED_BYTES", len(document) - 1)
    with pytest.raises(payloads.PayloadLimitError, match=f"limit of {len(document) - 1} bytes"):
        payloads.clinical_documents(envelope_of(data, encoding=encoding))


def test_request_limits_hold_across_payloads(monkeypatch: pytest.MonkeyPatch) -> None:
    document = b"".join(padded_cda())
    data = gzip.compress(document)
    monkeypatch.setattr(payloads, "MAX_REQUEST_DECODED_BYTES", 2 * len(document))
    assert len(payloads.clinical_documents(envelope_of(data, data))) == 2
    with pytest.raises(payloads.PayloadLimitError, match="decoded bytes per request"):
        payloads.clinical_documents(envelope_of(data, data, data))
    monkeypatch.undo()
    nodes = sum(1 for _ in etree.fromstring(document).iter())
    monkeypatch.setattr(payloads, "MAX_REQUEST_NODES", 2 * nodes)
    assert len(payloads.clinical_documents(envelope_of(data, data))) == 2
    with pytest.raises(payloads.PayloadLimitError, match="XML nodes per request"):
        payloads.clinical_documents(envelope_of(data, data, data))


def test_a_plain_request_meets_the_request_node_limit() -> None:
    raw = b"<a>" + b"<!---->" * (payloads.MAX_REQUEST_NODES + 1) + b"</a>"
    with pytest.raises(TooManyNodes):
        within(lambda: parse_xml(raw, max_nodes=payloads.MAX_REQUEST_NODES))
    with pytest.raises(ItkFault) as caught:
        within(lambda: parse_request(raw, DEFAULT))
    assert caught.value.rule == "A2"
    assert f"more than {payloads.MAX_REQUEST_NODES} XML nodes" in str(caught.value.diagnostic)


# -- the same path in conversion, the console and for the Pathways attachment ---------------------------------------


def test_conversion_and_console_use_the_bounded_path(element_bomb: bytes) -> None:
    with pytest.raises(ConversionError, match="limit"):
        within(lambda: convert(element_bomb))
    document = within(lambda: readable_document(element_bomb))
    assert document.problem is not None and "limit" in document.problem


def test_conversion_and_console_refuse_truncated_gzip() -> None:
    data = gzip.compress(b"".join(padded_cda()))
    raw = request_with(data[:-4])
    with pytest.raises(ConversionError, match="truncated"):
        convert(raw)
    assert "truncated" in str(readable_document(raw).problem)


def test_reconverting_a_bomb_stored_before_the_limits_is_refused_fast(tmp_path: Path) -> None:
    """A message stored by a version without these limits: reconverting it (``nhs111 replay --reconvert``) runs
    on the bounded path, and the record keeps its stored Bundle."""
    settings = Settings(
        data_dir=str(tmp_path / "data"),
        forward_target=f"dir:{tmp_path / 'outbox'}",
        itk_ods_code_list=(RECIPIENT_ODS,),
        itk_dos_id_list=(RECIPIENT_DOS,),
    )
    components = composition.build(settings)
    try:
        raw = to_bytes(build_request())
        message = validate_request(parse_request(raw, settings), settings, components.allow_list)
        components.receiver.accept(message, raw)
        components.worker.drain()
        [stored] = components.store.find_by_message_id(message.message_id)
        with components.store.engine.begin() as connection:
            connection.exec_driver_sql("UPDATE messages SET raw = ? WHERE id = ?", (issue_element_bomb(), stored.id))
        [result] = within(lambda: replay.reconvert(components.store, settings, [stored.id]))
        assert not result.requeued
        assert result.skipped is not None and result.skipped.startswith(replay.CONVERSION_FAILED)
        assert "limit" in result.skipped
        [record] = components.store.find_by_message_id(message.message_id)
        assert record.status is Status.DELIVERED and record.bundle_version == stored.bundle_version
    finally:
        components.close()


def comment_bomb_case() -> str:
    case = b'<PathwaysCase xmlns="http://www.nhspathways.org/webservices/pathways/pathwaysCase">'
    return base64.b64encode(case + b"<!---->" * (payloads.MAX_NODES + 1) + b"</PathwaysCase>").decode()


def test_pathways_attachment_is_held_to_the_node_limit() -> None:
    assert questionnaire.MAX_CASE_NODES == payloads.MAX_NODES
    with pytest.raises(payloads.PayloadLimitError, match="attachment exceeds the limit"):
        within(lambda: payloads.check_attachment(base64.b64decode(comment_bomb_case())))
    document = clinical_document(pathways_base64=comment_bomb_case())
    assert within(lambda: questionnaire.read_pathways_case(document)) is None


def test_d6_warns_about_an_attachment_over_the_limits() -> None:
    settings = Settings(schema_dir=str(require_shared("schemas")))
    raw = to_bytes(build_request(documents=[clinical_document(pathways_base64=comment_bomb_case())]))
    message = within(lambda: validate_request(parse_request(raw, settings), settings, AllowList(settings)))
    assert any("Pathways attachment refused" in warning and "limit" in warning for warning in message.warnings)
