"""``nhs111 send``: the zeep client against a real ``nhs111 serve`` process (tests/server_fixture.py).

The acceptance runs are real processes (``nhs111 send samples/ --url ...``); the other cases call the click
command in-process. Until ``adaptor.cli`` has the command, the processes run ``python -m adaptor.cli.operator``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from conftest import REPO, require_shared
from lxml import etree
from server_fixture import RunningServer, free_port, nhs111_command, start_server

from adaptor.cli.operator import send
from adaptor.cli.sender import (
    ItkSender,
    SendError,
    SendResult,
    build_session,
    refresh_ids,
    request_files,
    wrap_distribution_envelope,
)
from adaptor.itk.xmlsafe import ITK, NS, SOAP11, WSA, WSSE, WSU
from adaptor.samples import NULLIFICATIONS, SCENARIOS, addressed_codes, build_sample, generate, scenario
from adaptor.store import MessageStore

SAMPLES = REPO / "samples"
#: The files of the committed folder: a request per scenario, and the nullifications that withdraw some of them.
FILES = [s.file_name for s in SCENARIOS] + [n.file_name for n in NULLIFICATIONS]
COUNT = len(FILES)
ALLOW = addressed_codes()
ALLOWING = {"PEM111_ITK_ODS_CODE_LIST": ",".join(ALLOW.ods_codes), "PEM111_ITK_DOS_ID_LIST": ",".join(ALLOW.dos_ids)}
MESSAGE_ID = re.compile(r"MessageID ([0-9A-F-]{36})$")


def send_command() -> list[str]:
    """``nhs111 send`` once the command is wired into the CLI; the module's own entry point until then."""
    from adaptor.cli.commands import main

    if "send" in main.commands:
        return [*nhs111_command(), "send"]
    return [sys.executable, "-m", "adaptor.cli.operator", "send"]


def run_send(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*send_command(), *args], cwd=REPO, capture_output=True, text=True, timeout=120, check=False)


def invoke(*args: str) -> Result:
    return CliRunner().invoke(send, list(args))


def message_ids(stdout: str) -> list[str]:
    return [found.group(1) for line in stdout.splitlines() if (found := MESSAGE_ID.search(line))]


def stored(server: RunningServer, message_id: str) -> int:
    store = MessageStore(server.database_url)
    try:
        return len(store.find_by_message_id(message_id))
    finally:
        store.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """An adaptor whose allow-list holds every address of the samples."""
    running = start_server(tmp_path_factory.mktemp("send"), **ALLOWING)
    yield running
    running.stop()


@pytest.fixture
def fresh_samples(tmp_path: Path) -> Path:
    folder = tmp_path / "samples"
    generate(folder)
    return folder


# -- acceptance: the committed folder against a running adaptor ------------------------------------------------


def test_every_committed_sample_is_accepted(server: RunningServer) -> None:
    done = run_send("samples/", "--url", server.report_url)

    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == COUNT
    assert all(line.startswith("OK    samples/") for line in lines), lines
    assert sorted(line.split()[1].rstrip(":") for line in lines) == sorted(f"samples/{name}" for name in FILES)
    assert f"{COUNT} sent: {COUNT} OK, 0 refused, 0 failed" in done.stderr
    assert "Sending" in done.stderr  # the progress bar (its label only: stderr is not a terminal here)
    for message_id in message_ids(done.stdout):
        assert stored(server, message_id) == 1


def test_every_sample_is_refused_by_an_allow_list_without_its_addresses(tmp_path: Path) -> None:
    elsewhere = start_server(tmp_path, PEM111_ITK_ODS_CODE_LIST="XNOTUS", PEM111_ITK_DOS_ID_LIST="1")
    try:
        done = run_send("samples/", "--url", elsewhere.report_url)
    finally:
        elsewhere.stop()

    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert len(lines) == COUNT
    for line in lines:
        assert re.fullmatch(
            r"FAULT samples/[a-z-]+\.xml: soap:Client 1000 Message rejected "
            r"\(Both ODS code \([A-Z0-9, ]*\) and DOS ID \([0-9, ]*\) are invalid\)",
            line,
        ), line
    assert "XGP501, XGP502" in done.stdout  # every address of the two-location practice was checked
    assert f"{COUNT} sent: 0 OK, {COUNT} refused, 0 failed" in done.stderr


# -- resends and fresh ids -----------------------------------------------------------------------------------


def test_fresh_ids_let_the_same_folder_be_sent_and_stored_twice(server: RunningServer, fresh_samples: Path) -> None:
    before = {path.name: path.read_bytes() for path in fresh_samples.iterdir()}

    first, resend = (
        invoke(str(fresh_samples), "--url", server.report_url),
        invoke(str(fresh_samples), "--url", server.report_url),
    )
    assert first.exit_code == resend.exit_code == 0
    # A resend with the same ids is answered OK but recognised: one record per message (wire-contract §5.3).
    assert message_ids(first.stdout) == message_ids(resend.stdout)
    assert all(stored(server, message_id) == 1 for message_id in message_ids(first.stdout))

    runs = [invoke(str(fresh_samples), "--url", server.report_url, "--fresh-ids") for _ in range(2)]
    assert [run.exit_code for run in runs] == [0, 0]
    fresh = message_ids(runs[0].stdout) + message_ids(runs[1].stdout)
    assert len(fresh) == len(set(fresh)) == 2 * COUNT
    assert not set(fresh) & set(message_ids(first.stdout))
    assert all(stored(server, message_id) == 1 for message_id in fresh)
    assert {path.name: path.read_bytes() for path in fresh_samples.iterdir()} == before  # files untouched


def test_strict_profile_needs_fresh_timestamps(tmp_path: Path) -> None:
    folder = tmp_path / "old"
    generate(folder, now=datetime.now(UTC) - timedelta(days=1))
    strict = start_server(tmp_path / "server", PEM111_SOAP_VALIDATION_ENABLED="true", **ALLOWING)
    try:
        stale = invoke(str(folder / "gp-referral.xml"), "--url", strict.report_url)
        stamped = invoke(str(folder), "--url", strict.report_url, "--fresh-ids")
    finally:
        strict.stop()

    assert stale.exit_code == 1
    assert stale.stdout.startswith(f"FAULT {folder / 'gp-referral.xml'}: soap:Client 1000 Timestamp expired")
    assert stamped.exit_code == 0, stamped.output
    assert stamped.stdout.count("OK    ") == COUNT


# -- one file, errors ----------------------------------------------------------------------------------------


def test_a_single_file(server: RunningServer, fresh_samples: Path) -> None:
    path = fresh_samples / "repeat-caller.xml"
    result = invoke(str(path), "--url", server.report_url)

    assert result.exit_code == 0
    message_id = etree.parse(str(path)).findtext("soap:Header/wsa:MessageID", namespaces=NS)
    assert result.stdout == f"OK    {path}: MessageID {message_id}\n"
    assert "Sending" not in result.stderr  # no progress bar for a single file
    assert "1 sent: 1 OK, 0 refused, 0 failed" in result.stderr


def test_unreachable_url_gives_one_error_line_per_message(fresh_samples: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/report"
    result = invoke(str(fresh_samples), "--url", url, "--timeout", "5")

    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert len(lines) == COUNT
    assert all(re.fullmatch(rf"ERROR \S+\.xml: cannot send to {url}: Connection refused", line) for line in lines)
    assert "using the adaptor's own copy" in result.stderr  # the WSDL could not be fetched either
    assert f"{COUNT} sent: 0 OK, 0 refused, {COUNT} failed" in result.stderr
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)  # the command's own exit status, nothing raised


def test_an_answer_that_is_not_soap(server: RunningServer, fresh_samples: Path) -> None:
    result = invoke(str(fresh_samples / "gp-referral.xml"), "--url", f"{server.base_url}/no-such-path")
    assert result.exit_code == 1
    assert result.stdout == f"ERROR {fresh_samples / 'gp-referral.xml'}: HTTP 404: Not Found\n"


def test_files_that_are_not_requests(server: RunningServer, tmp_path: Path) -> None:
    (tmp_path / "notes.xml").write_text("not xml")
    (tmp_path / "fhir.xml").write_text('<Bundle xmlns="http://hl7.org/fhir"/>')
    result = invoke(str(tmp_path), "--url", server.report_url)
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        f"ERROR {tmp_path / 'fhir.xml'}: not a request: the root element is not a SOAP 1.1 Envelope",
        f"ERROR {tmp_path / 'notes.xml'}: not a request: not well-formed XML: Start tag expected, '<' not found, "
        "line 1, column 1",
    ]


def test_usage_errors(tmp_path: Path) -> None:
    empty = invoke(str(tmp_path), "--url", "http://127.0.0.1:1/report")
    assert empty.exit_code == 2 and "no *.xml request files" in empty.stderr
    key = tmp_path / "client.key"
    key.write_text("")
    lonely_key = invoke(str(SAMPLES), "--url", "http://127.0.0.1:1/report", "--key", str(key))
    assert lonely_key.exit_code == 2
    assert lonely_key.stderr == "Error: a client key (--key) needs its certificate (--cert)\n"


# -- units: TLS session, fresh ids, result lines, folders ----------------------------------------------------


def test_tls_options_build_the_session(tmp_path: Path) -> None:
    cert, key, ca = (tmp_path / name for name in ("client.pem", "client.key", "ca.pem"))
    for path in (cert, key, ca):
        path.write_text("PEM")

    session = build_session(str(cert), str(key), str(ca))
    assert session.cert == (str(cert), str(key)) and session.verify == str(ca)
    assert build_session(str(cert)).cert == str(cert)  # certificate and key in one file
    assert build_session().cert is None and build_session().verify is True
    with pytest.raises(SendError, match="needs its certificate"):
        build_session(key=str(key))
    with pytest.raises(SendError, match="no such file"):
        build_session(str(tmp_path / "missing.pem"))


def test_the_sender_posts_through_the_tls_session(server: RunningServer, tmp_path: Path) -> None:
    cert = tmp_path / "client.pem"
    cert.write_text("PEM")
    session = build_session(str(cert))
    sender = ItkSender(server.report_url, session=session)
    assert sender.transport.session is session  # the WSDL was loaded, and requests are posted, with it
    assert sender.wsdl_warning is None and sender.wsdl_location == f"{server.report_url}?wsdl"


def test_refresh_ids_stamps_new_ids_and_keeps_the_timestamp_lifetime() -> None:
    created = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
    raw = build_sample(scenario("gp-referral"), now=created)
    root = etree.fromstring(raw)
    header = root.find(f"{{{SOAP11}}}Header")
    header.find(f"{{{WSSE}}}Security/{{{WSU}}}Timestamp/{{{WSU}}}Expires").text = "2024-05-01T10:05:00Z"
    old_id = header.findtext(f"{{{WSA}}}MessageID")
    old_tracking = root.find(f".//{{{ITK}}}header").get("trackingid")

    now = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    refresh_ids(root, now)

    assert (
        re.fullmatch(r"[0-9A-F-]{36}", header.findtext(f"{{{WSA}}}MessageID"))
        and header.findtext(f"{{{WSA}}}MessageID") != old_id
    )
    assert root.find(f".//{{{ITK}}}header").get("trackingid") not in (old_tracking, None)
    stamp = header.find(f"{{{WSSE}}}Security/{{{WSU}}}Timestamp")
    assert stamp.findtext(f"{{{WSU}}}Created") == "2025-01-02T03:04:05.000Z"
    assert stamp.findtext(f"{{{WSU}}}Expires") == "2025-01-02T03:09:05.000Z"  # the 5-minute lifetime kept


def test_refresh_ids_adds_a_missing_message_id() -> None:
    root = etree.fromstring(f'<s:Envelope xmlns:s="{SOAP11}"><s:Body/></s:Envelope>')
    refresh_ids(root)
    assert root.findtext(f"{{{SOAP11}}}Header/{{{WSA}}}MessageID")


def test_result_lines() -> None:
    assert SendResult("a.xml", "OK", "ID", response="OK").line() == "OK    a.xml: MessageID ID"
    assert SendResult("a.xml", "OK", "ID", response="OK:ID").line() == "OK    a.xml: MessageID ID (OK:ID)"
    fault = SendResult("a.xml", "FAULT", fault_code="soap:Server", error_code="2100", error_text="Temporary")
    assert fault.line() == "FAULT a.xml: soap:Server 2100 Temporary"
    assert not fault.ok
    long = SendResult("a.xml", "ERROR", detail="x\n" * 400).line()
    assert "\n" not in long and len(long) < 400


def test_request_files_takes_the_xml_files_of_a_folder(tmp_path: Path) -> None:
    for name in ("b.xml", "a.XML", "README.md"):
        (tmp_path / name).write_text("")
    (tmp_path / "sub").mkdir()
    single = tmp_path / "README.md"
    assert request_files([tmp_path, single]) == [tmp_path / "a.XML", tmp_path / "b.xml", single]


def test_an_explicit_wsdl(server: RunningServer, fresh_samples: Path, tmp_path: Path) -> None:
    wsdl = REPO / "wsdl" / "SendNHS111Report-v2-0.wsdl"
    result = invoke(str(fresh_samples / "two-locations.xml"), "--url", server.report_url, "--wsdl", str(wsdl))
    assert result.exit_code == 0 and result.stdout.startswith("OK    ")
    assert "warning" not in result.stderr

    missing = invoke(str(fresh_samples), "--url", server.report_url, "--wsdl", str(tmp_path / "none.wsdl"))
    assert missing.exit_code == 2
    assert missing.stderr.startswith(f"Error: cannot load the WSDL {tmp_path / 'none.wsdl'}: ")
    assert len(missing.stderr.splitlines()) == 1


# -- bare DistributionEnvelopes: --wrap ----------------------------------------------------------------------

DE_PREAMBLE = b'<?xml version="1.0" encoding="UTF-8"?>\n<!--an example, as the IUC specification writes them-->\n'


def bare_distribution_envelope(folder: Path, name: str = "gp-referral", *, service: str | None = None) -> Path:
    """A sample's DistributionEnvelope alone in a file of its own, as the specification's examples are."""
    root = etree.fromstring(build_sample(scenario(name)))
    envelope = root.find(f"{{{SOAP11}}}Body/{{{ITK}}}DistributionEnvelope")
    if service is not None:
        envelope.find(f"{{{ITK}}}header").set("service", service)
    path = folder / f"{name}-de.xml"
    path.write_bytes(DE_PREAMBLE + etree.tostring(envelope))
    return path


def test_wrap_sends_a_bare_distribution_envelope_with_fresh_addressing(server: RunningServer, tmp_path: Path) -> None:
    path = bare_distribution_envelope(tmp_path)
    tracking_id = etree.parse(str(path)).getroot().find(f"{{{ITK}}}header").get("trackingid")

    sent = [invoke(str(path), "--url", server.report_url, "--wrap") for _ in range(2)]

    assert [result.exit_code for result in sent] == [0, 0], [result.output for result in sent]
    ids = [message_id for result in sent for message_id in message_ids(result.stdout)]
    assert len(ids) == len(set(ids)) == 2  # a new MessageID each time: two messages
    store = MessageStore(server.database_url)
    try:
        [record] = store.find_by_message_id(ids[0])
    finally:
        store.close()
    assert record.tracking_id == tracking_id  # the Distribution Envelope itself is sent as it is
    header = etree.fromstring(record.raw).find(f"{{{SOAP11}}}Header")
    assert header.findtext(f"{{{WSA}}}To") == server.report_url
    assert header.findtext(f"{{{WSA}}}Action") == "urn:nhs-itk:services:201005:SendNHS111Report-v2-0"
    assert header.find(f"{{{WSSE}}}Security/{{{WSU}}}Timestamp/{{{WSU}}}Created") is not None


def test_wrap_spells_out_a_short_service_name(server: RunningServer, tmp_path: Path) -> None:
    path = bare_distribution_envelope(tmp_path, "copy-for-information", service="SendNHS111Report-v2-0")
    result = invoke(str(path), "--url", server.report_url, "--wrap")
    assert result.exit_code == 0, result.output
    [message_id] = message_ids(result.stdout)
    [record] = server.stored(message_id)
    assert record.service == "SendNHS111Report-v2-0"
    action = etree.fromstring(record.raw).findtext(f"{{{SOAP11}}}Header/{{{WSA}}}Action")
    assert action == "urn:nhs-itk:services:201005:SendNHS111Report-v2-0"


def test_wrap_sends_soap_requests_as_they_are(server: RunningServer, fresh_samples: Path, tmp_path: Path) -> None:
    """A folder may hold both: the SOAP requests keep their own headers (and MessageIDs)."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    soap = folder / "gp-referral.xml"
    soap.write_bytes((fresh_samples / "gp-referral.xml").read_bytes())
    bare_distribution_envelope(folder, "ambulance-callout-copy")
    message_id = etree.parse(str(soap)).findtext("soap:Header/wsa:MessageID", namespaces=NS)

    result = invoke(str(folder), "--url", server.report_url, "--wrap")

    assert result.exit_code == 0, result.output
    assert f"OK    {soap}: MessageID {message_id}\n" in result.stdout
    assert "2 sent: 2 OK, 0 refused, 0 failed" in result.stderr


def test_a_bare_distribution_envelope_needs_wrap(server: RunningServer, tmp_path: Path) -> None:
    path = bare_distribution_envelope(tmp_path)
    result = invoke(str(path), "--url", server.report_url)
    assert result.exit_code == 1
    assert result.stdout == f"ERROR {path}: not a request: a bare DistributionEnvelope (send it with --wrap)\n"


def test_wrap_sends_the_specifications_own_example(server: RunningServer) -> None:
    """The published nullification example is a bare DistributionEnvelope: wrapped, it reaches the receiver,
    which answers it (as published it has no manifest profile id and another domain's interaction: a fault, not
    a send error; tests/test_nullification.py sends it as a 111 sender would)."""
    example = require_shared("spec", "nullification", "POCD_EX130001UK05_ITK_02_wrapped.xml")
    result = invoke(str(example), "--url", server.report_url, "--wrap")
    assert result.exit_code == 1
    assert result.stdout.startswith(f"FAULT {example}: soap:Client 1000 "), result.stdout


def test_wrap_distribution_envelope_builds_the_soap_part_only() -> None:
    root = etree.fromstring(build_sample(scenario("gp-referral")))
    envelope = root.find(f"{{{SOAP11}}}Body/{{{ITK}}}DistributionEnvelope")
    before = etree.tostring(envelope, method="c14n")

    wrapped = wrap_distribution_envelope(envelope, "https://receiver.example/report")

    assert wrapped.tag == f"{{{SOAP11}}}Envelope"
    [body_child] = wrapped.find(f"{{{SOAP11}}}Body")
    assert body_child is envelope and etree.tostring(body_child, method="c14n") == before
    header = wrapped.find(f"{{{SOAP11}}}Header")
    assert re.fullmatch(r"[0-9A-F]{8}(-[0-9A-F]{4}){3}-[0-9A-F]{12}", header.findtext(f"{{{WSA}}}MessageID"))
    assert header.findtext(f"{{{WSA}}}Action") == envelope.find(f"{{{ITK}}}header").get("service")
    assert header.findtext(f"{{{WSA}}}To") == "https://receiver.example/report"
    assert header.findtext(f"{{{WSA}}}ReplyTo/{{{WSA}}}Address") == "http://www.w3.org/2005/08/addressing/anonymous"
    stamp = header.find(f"{{{WSSE}}}Security/{{{WSU}}}Timestamp")
    created = datetime.fromisoformat(stamp.findtext(f"{{{WSU}}}Created").replace("Z", "+00:00"))
    assert abs(datetime.now(UTC) - created) < timedelta(minutes=5)
    assert header.find(f"{{{WSSE}}}Security/{{{WSSE}}}UsernameToken") is None
