"""Messages that pass validation but cannot be converted (issue 13): answered with fault 2200 (rule E3) naming the
element, never its value; kept as ``rejected`` with the request and the reason, visible to operators (store,
``nhs111 messages``, console) and never delivered on their own, in async and in sync mode. A resend gets the same
answer, or is accepted once it converts; an operator's reconversion delivers it.

The unconvertible CDAs are valid against ``POCD_MT000002UK01.xsd`` (rule D4 passes: the schema's TS pattern takes
any digits) but hold dates that do not exist, which the mapping cannot turn into FHIR dates.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from conftest import REPO
from itk_factory import HL7, NS, RECIPIENT_DOS, RECIPIENT_ODS, build_request, clinical_document, find, to_bytes
from lxml import etree
from server_fixture import RunningServer, corpus_addresses, corpus_requests, nhs111_command, start_server
from test_console import Console, confirmed, open_console, sign_in
from test_outbox import Harness, fast_settings

from adaptor.delivery.conversion import bundle_text, convert, convert_message
from adaptor.delivery.replay import reconvert
from adaptor.itk import rules as itk
from adaptor.itk.allowlist import AllowList
from adaptor.itk.faults import UNCONVERTIBLE_TEXT, ItkFault
from adaptor.itk.message import ItkMessage
from adaptor.store import Status, utc_now

#: (case, the element the fault names, the value it must not quote, how to make the document).
BIRTH_TIME = "/ClinicalDocument/recordTarget/patientRole/patient/birthTime/@value"
AUTHOR_TIME = "/ClinicalDocument/author/time/@value"
CASES = {
    "patient born in month 13": (BIRTH_TIME, "20191345", f"{{{HL7}}}birthTime"),
    "authored on 30 February": (AUTHOR_TIME, "20240230103000+0000", f"{{{HL7}}}time"),
}


def unconvertible_request(case: str) -> tuple[etree._Element, str, str]:
    """A request that passes every rule (the CDA schema included) and cannot be converted; with the element the
    fault must name and the value it must not quote."""
    element, value, tag = CASES[case]
    document = clinical_document()
    [target] = document.iter(tag)  # the minimal document has one of each
    target.set("value", value)
    return build_request(documents=[document]), element, value


def fault_of(response: requests.Response) -> dict[str, str]:
    envelope = etree.fromstring(response.content)
    info = envelope.find(".//itk:ToolkitErrorInfo", NS)
    assert info is not None, response.text
    return {
        "faultcode": envelope.findtext(".//faultcode") or "",
        "code": info.findtext("itk:ErrorCode", namespaces=NS) or "",
        "text": info.findtext("itk:ErrorText", namespaces=NS) or "",
        "diagnostic": info.findtext("itk:ErrorDiagnosticText", namespaces=NS) or "",
        "relates_to": envelope.findtext("soap:Header/wsa:RelatesTo", namespaces=NS) or "",
    }


def post(server: RunningServer, raw: bytes) -> requests.Response:
    return requests.post(server.report_url, data=raw, headers={"Content-Type": "text/xml"}, timeout=60)


SERVER_SETTINGS = {
    "PEM111_ITK_ODS_CODE_LIST": RECIPIENT_ODS,
    "PEM111_ITK_DOS_ID_LIST": RECIPIENT_DOS,
    "PEM111_DELIVERY_POLL_SECONDS": "0.05",
    "PEM111_DELIVERY_BACKOFF_INITIAL_SECONDS": "0.05",
}


@pytest.fixture(params=["async", "sync"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RunningServer]:
    running = start_server(tmp_path, PEM111_DELIVERY_MODE=request.param, **SERVER_SETTINGS)
    yield running
    running.stop()


# == over HTTP, in both modes ====================================================================================


@pytest.mark.parametrize("case", sorted(CASES))
def test_an_unconvertible_message_is_answered_2200_kept_as_rejected_and_never_delivered(
    server: RunningServer, case: str
) -> None:
    root, element, value = unconvertible_request(case)
    raw = to_bytes(root)
    message_id = find(root, "wsa:MessageID").text or ""

    response = post(server, raw)

    assert response.status_code == 500
    assert fault_of(response) == {
        "faultcode": "soap:Server",
        "code": "2200",
        "text": UNCONVERTIBLE_TEXT,
        "diagnostic": f"Cannot convert {element}",
        "relates_to": message_id,
    }
    assert value.encode() not in response.content  # the element is named, its value (patient data) never
    [stored] = server.stored(message_id)
    assert stored.status is Status.REJECTED and stored.bundle is None and stored.bundle_version is None
    assert stored.raw == raw  # the request as received, for operators
    assert stored.status_reason.startswith(f"conversion failed: {element}: ")

    # A resend is answered the same and stored once.
    again = post(server, raw)
    assert again.status_code == 500 and fault_of(again)["code"] == "2200"
    assert [m.id for m in server.stored(message_id)] == [stored.id]

    # The workers deliver a message accepted after it, never the rejected one.
    good = build_request()
    assert post(server, to_bytes(good)).status_code == 200
    server.wait_for_status(find(good, "wsa:MessageID").text or "")
    assert server.stored(message_id)[0].status is Status.REJECTED
    assert [f for f in server.outbox_files() if message_id.encode() in f.read_bytes()] == []
    assert len(server.outbox_files()) == 1

    # Operators see it: `nhs111 messages list --status rejected`, the rejections kept with the rule.
    listed = subprocess.run(
        [*nhs111_command(), "messages", "list", "--status", "rejected"],
        cwd=REPO,
        env=server.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    assert message_id in listed.stdout and "rejected" in listed.stdout
    shown = subprocess.run(
        [*nhs111_command(), "messages", "show", message_id], cwd=REPO, env=server.env, capture_output=True, text=True
    )
    assert shown.returncode == 0 and element in shown.stdout and "Bundle:" in shown.stdout
    # Patient data never reaches the logs above DEBUG (the server logs at INFO).
    assert value not in server.log_text()


def test_the_rejection_is_counted_with_its_rule(tmp_path: Path) -> None:
    server = start_server(tmp_path, **SERVER_SETTINGS)
    try:
        root, _, _ = unconvertible_request("patient born in month 13")
        assert post(server, to_bytes(root)).status_code == 500
        metrics = requests.get(f"{server.base_url}/metrics", timeout=10).text
    finally:
        server.stop()
    assert 'error_code="2200"' in metrics and 'rule="E3"' in metrics
    assert 'nhs111_outbox_messages{state="rejected"} 1.0' in metrics


# == resends and reconversion ======================================================================================


def validated(harness: Harness, raw: bytes) -> ItkMessage:
    return itk.validate_request(itk.parse_request(raw, harness.settings), harness.settings, harness.allow_list)


@pytest.mark.parametrize("mode", ["async", "sync"])
def test_a_resend_that_converts_now_is_accepted_under_the_stored_record(tmp_path: Path, mode: str) -> None:
    """A message an earlier mapping rejected (stored as such), resent once the mapping is fixed: accepted as if
    new, with its Bundle's ids drawn from the stored record, and delivered once."""
    harness = Harness(fast_settings(tmp_path, delivery_mode=mode))
    try:
        raw = to_bytes(build_request())
        message = validated(harness, raw)
        record_id, _ = harness.store.reject(message, raw, "conversion failed: (an older mapping)")

        harness.service.accept(message, raw)  # the resend: no fault
        harness.worker.drain()

        [stored] = harness.store.find_by_message_id(message.message_id)
        assert stored.id == record_id and stored.status is Status.DELIVERED and stored.bundle_version == 1
        expected = convert_message(message, id_seed=record_id)
        assert [e["fullUrl"] for e in expected["entry"]] == [e["fullUrl"] for e in harness_bundle(stored.bundle)]
        assert [f.read_bytes() for f in harness.files()] == [stored.bundle.encode("utf-8")]
    finally:
        harness.close()


def harness_bundle(text: str | None) -> list[dict[str, object]]:
    assert text is not None
    return list(json.loads(text)["entry"])


def test_reconverting_a_rejected_message_delivers_it_or_says_why_not(tmp_path: Path) -> None:
    harness = Harness(fast_settings(tmp_path))
    try:
        root, element, _ = unconvertible_request("authored on 30 February")
        bad_raw = to_bytes(root)
        with pytest.raises(ItkFault):
            harness.service.accept(validated(harness, bad_raw), bad_raw)
        good_raw = to_bytes(build_request())
        good = validated(harness, good_raw)
        fixed_id, _ = harness.store.reject(good, good_raw, "conversion failed: (an older mapping)")
        [bad] = harness.store.list_messages(statuses=[Status.REJECTED], limit=10)[-1:]

        results = reconvert(harness.store, harness.settings, [bad.id, fixed_id])

        assert [(r.record_id, r.requeued, r.bundle_version) for r in results] == [
            (bad.id, False, None),
            (fixed_id, True, 1),
        ]
        assert (results[0].skipped or "").startswith(f"conversion failed: {element}")
        assert [o.status for o in harness.worker.drain()] == [Status.DELIVERED]
        assert harness.store.get(bad.id).status is Status.REJECTED
        assert harness.store.get(fixed_id).status is Status.DELIVERED
    finally:
        harness.close()


# == the console =================================================================================================



@pytest.fixture
def console(tmp_path: Path) -> Iterator[Console]:
    running = open_console(tmp_path)
    yield running
    running.close()


def test_the_console_shows_a_rejected_message_and_offers_only_reconversion(console: Console) -> None:
    root, element, value = unconvertible_request("patient born in month 13")
    assert console.post_report(root) == 500
    message_id = find(root, "wsa:MessageID").text or ""
    record_id = console.record_id(message_id)
    client = console.client
    csrf = sign_in(client)

    listing = client.get("/console/messages?status=rejected").text
    assert message_id in listing and "Rejected" in listing
    page = client.get(f"/console/messages/{record_id}").text
    assert element in page and 'id="reconvert"' in page and 'id="replay"' not in page

    response = client.post(
        f"/console/messages/{record_id}/replay", data=confirmed(csrf, "reconvert")
    )
    assert response.status_code == 303
    assert "Not queued: conversion failed" in client.get(response.headers["Location"]).text
    assert console.status(message_id) is Status.REJECTED
    assert client.post(
        f"/console/messages/{record_id}/replay", data={"csrf_token": csrf, "mode": "other"}
    ).status_code == 400


def test_the_console_redelivers_or_reconverts_a_delivered_message(console: Console) -> None:
    message_id, _ = console.accept()
    console.worker.drain()
    record_id = console.record_id(message_id)
    client = console.client
    csrf = sign_in(client)
    first = console.store.get(record_id)

    client.post(f"/console/messages/{record_id}/replay", data=confirmed(csrf, "redeliver"))
    console.worker.drain()
    assert console.store.get(record_id).bundle == first.bundle

    response = client.post(f"/console/messages/{record_id}/replay", data=confirmed(csrf, "reconvert"))
    assert "Reconverted as Bundle version 2" in client.get(response.headers["Location"]).text
    console.worker.drain()
    second = console.store.get(record_id)
    assert second.status is Status.DELIVERED and second.bundle_version == 2 and second.bundle != first.bundle
    assert "version 2" in client.get(f"/console/messages/{record_id}").text


# == one conversion, two ways in ===================================================================================


def test_the_accept_path_converts_the_validated_message_as_the_bytes_would_convert() -> None:
    """The request path maps the tree validation parsed (no second parse); reconversion maps the stored bytes.
    Both give the same Bundle for every corpus request (same time, same id seed)."""
    addresses = corpus_addresses()
    settings = fast_settings(Path("/nonexistent")).replace(
        itk_ods_code_list=tuple(addresses.ods_codes), itk_dos_id_list=tuple(addresses.dos_ids)
    )
    allow_list = AllowList(settings)
    now = utc_now()
    for path in corpus_requests():
        raw = path.read_bytes()
        message = itk.validate_request(itk.parse_request(raw, settings), settings, allow_list)
        from_message = bundle_text(convert_message(message, config=settings, now=now, id_seed="seed"))
        from_bytes = bundle_text(convert(raw, config=settings, now=now, id_seed="seed"))
        assert from_message == from_bytes, path.name
