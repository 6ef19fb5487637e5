"""The addressing allow-list (wire-contract.md section 7): matching, static lists, the polled JSON document, and
failing closed (no list: `nhs111 serve` refuses to start, unless any recipient is accepted explicitly, as `make run`
does)."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from conftest import REPO
from server_fixture import free_port, nhs111_command
from waiting import wait_until

from adaptor.config import ConfigError, Settings
from adaptor.itk.allowlist import (
    LIST_SETTINGS,
    AllowList,
    AllowListDocumentError,
    dos_id,
    ods_code,
    parse_document,
    require_allow_list,
)
from adaptor.itk.faults import FaultCode, ItkFault
from adaptor.itk.message import Address
from adaptor.itk.wire import DOS_ADDRESS_TYPE, ITK_ADDRESS_TYPE

ODS = "urn:nhs-uk:addressing:ods:"


def ods(code: str, address_type: str | None = None) -> Address:
    return Address(uri=ODS + code, type=address_type)


def dos(service_id: str) -> Address:
    return Address(uri=service_id, type=DOS_ADDRESS_TYPE)


def static(ods_codes: tuple[str, ...] = (), dos_ids: tuple[str, ...] = (), **changes: object) -> AllowList:
    settings = Settings(itk_ods_code_list=ods_codes, itk_dos_id_list=dos_ids).replace(**changes)
    return AllowList(settings)


def rejected(allow_list: AllowList, addresses: list[Address] | None, relates_to: str | None = None) -> ItkFault:
    with pytest.raises(ItkFault) as caught:
        allow_list.check(addresses, relates_to)
    return caught.value


# -- matching ----------------------------------------------------------------------------------------------------


def test_address_parts() -> None:
    assert ods_code(ods("5L399:445510770")) == "5L399:445510770"
    assert ods_code(ods("RYE", ITK_ADDRESS_TYPE)) == "RYE"
    assert ods_code(Address("URN:NHS-UK:ADDRESSING:ODS:RYE")) == "RYE"
    assert ods_code(ods("RYE", DOS_ADDRESS_TYPE)) is None
    assert ods_code(Address("urn:nhs-uk:addressing:other:RYE")) is None
    assert ods_code(Address(ODS)) is None
    assert dos_id(dos(" 26428 ")) == "26428"
    assert dos_id(Address("26428")) is None


@pytest.mark.parametrize(
    "address",
    [
        ods("EM396"),
        ods("em396"),
        ods("EM396", ITK_ADDRESS_TYPE),  # an explicit ITK type is still an ODS address
        ods("EM396:445510770"),  # first ':'-token
        ods("RSHSO14A"),
        dos("26428"),
        dos(" 2000006423 "),
    ],
)
def test_matching_addresses_are_accepted(address: Address) -> None:
    static(("EM396", "RSHSO14A"), ("26428", "2000006423")).check([address])


@pytest.mark.parametrize(
    "address",
    [
        ods("ZZZ99"),
        ods("EM39"),
        dos("999999999"),
        Address("26428"),  # a DoS id without the DoS type is an (invalid) ITK address
        Address("EM396", "2.16.840.1.113883.2.1.3.2.4.21.1"),  # DTS mailbox: ignored
        ods("EM396", "1.2.826.0.1285.0.2.0.107"),  # Spine ASID type: ignored
        Address("", None),
        dos(""),
    ],
)
def test_other_addresses_are_rejected(address: Address) -> None:
    assert rejected(static(("EM396",), ("26428",)), [address]).rule == "C17"


def test_every_address_is_considered_and_one_match_is_enough() -> None:
    allow_list = static(("EM396",), ("26428",))
    allow_list.check([ods("ZZZ99"), dos("999"), ods("YYY11"), dos("26428")])
    allow_list.check([dos("999"), ods("ZZZ99:1"), ods("EM396:2")])


def test_rejection_fault_names_every_code() -> None:
    fault = rejected(
        static(("EM396",), ("26428",)),
        [ods("ZZZ99"), dos("999999999"), ods("YYY11:445510770"), dos("888"), Address("mailbox", "x")],
        relates_to="MID-1",
    )
    assert (fault.rule, fault.error_code, fault.faultcode, fault.text) == (
        "C17",
        1000,
        FaultCode.CLIENT,
        "Message rejected",
    )
    assert fault.diagnostic == "Both ODS code (ZZZ99, YYY11) and DOS ID (999999999, 888) are invalid"
    assert fault.relates_to == "MID-1"


def test_an_empty_address_list_matches_nothing() -> None:
    fault = rejected(static(("EM396",)), [])
    assert fault.diagnostic == "Both ODS code () and DOS ID () are invalid"


def test_missing_addresslist_is_refused_unless_allowed() -> None:
    """The reference's behaviour by default; PEM111_ITK_REQUIRE_ADDRESSLIST=false lets it through (IUC DMS)."""
    fault = rejected(static(("EM396",)), None, relates_to="MID-4")
    assert (fault.rule, fault.error_code, fault.text, fault.relates_to) == ("C17", 1000, "Message rejected", "MID-4")
    static(("EM396",), itk_require_addresslist=False).check(None)
    # The setting is about the message's shape, not the list: the same without one.
    assert rejected(AllowList(Settings(itk_accept_any_address=True)), None).rule == "C17"
    AllowList(Settings(itk_accept_any_address=True, itk_require_addresslist=False)).check(None)


def test_accepting_any_address_checks_nothing_and_logs_nothing_per_message(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="adaptor.allowlist")
    allow_list = AllowList(Settings(itk_accept_any_address=True))
    assert not allow_list.configured
    assert allow_list.ready
    for _ in range(3):
        allow_list.check([ods("ANY")], "MID-2")
        allow_list.check([], "MID-2")
    assert caplog.records == []


# -- start-up: fail closed ---------------------------------------------------------------------------------------


def test_serving_without_a_list_is_refused_in_one_line_naming_the_settings() -> None:
    with pytest.raises(ConfigError) as caught:
        require_allow_list(Settings())
    text = str(caught.value)
    assert "\n" not in text
    for name in (*LIST_SETTINGS, "PEM111_ITK_ACCEPT_ANY_ADDRESS=true"):
        assert name in text


@pytest.mark.parametrize(
    "changes",
    [
        {"itk_ods_code_list": ("EM396",)},
        {"itk_dos_id_list": ("26428",)},
        {"itk_external_configuration_url": "http://127.0.0.1:1/allow-list.json"},
    ],
)
def test_any_one_list_setting_is_enough_to_serve(changes: dict[str, object], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="adaptor.allowlist")
    require_allow_list(Settings().replace(**changes))
    assert caplog.records == []


def test_accepting_any_address_is_said_once_at_start_up(caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(itk_accept_any_address=True)
    require_allow_list(settings)
    allow_list = AllowList(settings)
    assert caplog.records == []
    allow_list.start()
    for _ in range(3):
        allow_list.check([ods("ANY")])
    allow_list.stop()
    [record] = caplog.records
    assert record.levelname == "WARNING" and "PEM111_ITK_ACCEPT_ANY_ADDRESS=true" in record.getMessage()


def test_accepting_any_address_beside_a_list_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        require_allow_list(Settings(itk_accept_any_address=True, itk_dos_id_list=("26428",)))
    assert "PEM111_ITK_ACCEPT_ANY_ADDRESS" in str(caught.value) and "PEM111_ITK_DOS_ID_LIST" in str(caught.value)


def test_only_one_static_list_is_enough() -> None:
    allow_list = static(dos_ids=("26428",))
    assert allow_list.configured
    allow_list.check([dos("26428")])
    assert rejected(allow_list, [ods("EM396")]).rule == "C17"


# -- the remote document ------------------------------------------------------------------------------------------


def test_parse_document() -> None:
    assert parse_document(b'{"odsCodes":["EM396","RSHSO14A"],"dosIds":["26428",2000006423]}') == (
        ["EM396", "RSHSO14A"],
        ["26428", "2000006423"],
    )
    assert parse_document(b'{"odsCodes":[],"dosIds":[26428.0],"other":1}') == ([], ["26428"])


@pytest.mark.parametrize(
    "document",
    [
        b"not json",
        b"[]",
        b'{"odsCodes":["EM396"]}',
        b'{"dosIds":["1"]}',
        b'{"odsCodes":"EM396","dosIds":[]}',
        b'{"odsCodes":[true],"dosIds":[]}',
        b'{"odsCodes":[{"code":"EM396"}],"dosIds":[]}',
        b"\xff\xfe",
    ],
)
def test_parse_document_rejects_other_shapes(document: bytes) -> None:
    with pytest.raises(AllowListDocumentError):
        parse_document(document)


@dataclass
class _Served:
    """What the local allow-list server answers; tests change it between polls."""

    status: int = 200
    body: bytes = b'{"odsCodes":["EM396"],"dosIds":["26428"]}'
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture
def served() -> Iterator[tuple[_Served, str]]:
    """A real HTTP server on 127.0.0.1 serving the allow-list JSON at /allow-list.json."""
    state = _Served()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            with state.lock:
                state.requests += 1
                status, body = state.status, state.body
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (http.server's signature)
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}/allow-list.json"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _serve(state: _Served, status: int = 200, body: bytes | None = None) -> None:
    with state.lock:
        state.status = status
        if body is not None:
            state.body = body


def remote(url: str, **changes: object) -> AllowList:
    return AllowList(Settings(itk_external_configuration_url=url).replace(**changes))


def test_fetched_lists_are_used(served: tuple[_Served, str]) -> None:
    state, url = served
    allow_list = remote(url)
    assert allow_list.configured and not allow_list.ready
    assert allow_list.refresh()
    assert allow_list.ready
    assert (allow_list.ods_codes, allow_list.dos_ids) == ({"em396"}, {"26428"})
    allow_list.check([ods("EM396")])
    allow_list.check([dos("26428")])
    assert rejected(allow_list, [ods("ZZZ99")]).rule == "C17"
    assert state.requests == 1


def test_a_successful_fetch_replaces_the_fetched_lists(served: tuple[_Served, str]) -> None:
    state, url = served
    allow_list = remote(url)
    allow_list.refresh()
    _serve(state, body=b'{"odsCodes":["RSHSO14A"],"dosIds":[2000006423]}')
    assert allow_list.refresh()
    allow_list.check([ods("RSHSO14A")])
    allow_list.check([dos("2000006423")])
    assert rejected(allow_list, [ods("EM396")]).rule == "C17"


@pytest.mark.parametrize(
    ("status", "body"), [(500, b"oops"), (200, b"<html>not json</html>"), (200, b'{"odsCodes":[]}')]
)
def test_a_failed_poll_keeps_the_last_good_lists(served: tuple[_Served, str], status: int, body: bytes) -> None:
    state, url = served
    allow_list = remote(url)
    assert allow_list.refresh()
    _serve(state, status, body)
    assert not allow_list.refresh()
    allow_list.check([ods("EM396")])
    assert allow_list.ods_codes == {"em396"}


def test_static_and_fetched_lists_are_combined(served: tuple[_Served, str]) -> None:
    _, url = served
    allow_list = remote(url, itk_ods_code_list=("XSTATIC",))
    assert allow_list.ready  # the static list applies before the first fetch
    allow_list.check([ods("XSTATIC")])
    assert rejected(allow_list, [ods("EM396")]).rule == "C17"
    allow_list.refresh()
    allow_list.check([ods("EM396")])
    allow_list.check([ods("XSTATIC")])


def _closed_port_url() -> str:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/allow-list.json"


def test_unreachable_url_answers_retryable_until_the_first_fetch() -> None:
    allow_list = remote(_closed_port_url())
    assert not allow_list.refresh()
    fault = rejected(allow_list, [ods("EM396")], relates_to="MID-3")
    assert (fault.rule, fault.error_code, fault.faultcode) == ("E1", 2100, FaultCode.SERVER)
    assert fault.relates_to == "MID-3"
    assert rejected(allow_list, None).rule == "C17"  # no addresslist: refused before the list is needed


def test_unreachable_url_with_static_lists_uses_them() -> None:
    allow_list = remote(_closed_port_url(), itk_dos_id_list=("26428",))
    assert not allow_list.refresh()
    allow_list.check([dos("26428")])
    assert rejected(allow_list, [ods("EM396")]).rule == "C17"


def test_only_http_urls_are_fetched() -> None:
    allow_list = remote("file:///etc/passwd")
    assert not allow_list.refresh()
    assert not allow_list.ready


def test_polling_thread_fetches_at_start_and_then_every_interval(served: tuple[_Served, str]) -> None:
    state, url = served
    good = state.body
    _serve(state, 503, b"")  # the first fetch fails: start() must not block or raise
    allow_list = AllowList(Settings(itk_external_configuration_url=url), interval_seconds=0.05)
    allow_list.start()
    polling = allow_list._thread
    try:
        wait_until(lambda: state.requests >= 1, "the first fetch", 5.0)
        assert not allow_list.ready
        _serve(state, 200, good)
        wait_until(lambda: allow_list.ready, "the list to be ready", 5.0)
        allow_list.check([ods("EM396")])
        _serve(state, 200, b'{"odsCodes":["RSHSO14A"],"dosIds":[]}')
        wait_until(lambda: allow_list.ods_codes == {"rshso14a"}, "the new list", 5.0)
        _serve(state, 500, b"down")
        polls = state.requests
        wait_until(lambda: state.requests >= polls + 2, "two failed polls", 5.0)
        assert allow_list.ods_codes == {"rshso14a"}  # failed polls keep the last good lists
    finally:
        allow_list.stop()
    # Stopped: the polling thread has ended, so nothing can fetch again (not "no fetch seen for a while").
    assert polling is not None and not polling.is_alive()


def test_start_without_url_does_nothing() -> None:
    allow_list = static(("EM396",))
    allow_list.start()
    allow_list.stop()
    allow_list.check([ods("EM396")])


# -- the processes: `nhs111 serve` refuses, `make run` serves --------------------------------------------------


def _environment(tmp_path: Path, **settings: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PEM111_")}
    env.update(
        PEM111_HOST="127.0.0.1",
        PEM111_DATA_DIR=str(tmp_path / "data"),
        PEM111_FORWARD_TARGET=f"dir:{tmp_path / 'outbox'}",
        PEM111_LOG_FORMAT="text",
        **settings,
    )
    return env


def test_serve_without_an_allow_list_stops_at_once_in_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [*nhs111_command(), "serve", "--port", "0"],
        cwd=REPO,
        env=_environment(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert len(lines) == 1 and " ERROR " in lines[0] and "no addressing allow-list" in lines[0], lines
    assert "PEM111_ITK_ACCEPT_ANY_ADDRESS=true" in lines[0]
    assert not (tmp_path / "data").exists()  # refused before anything was opened


def test_make_run_serves_any_recipient_and_says_so_once(tmp_path: Path) -> None:
    """`make run` in one command, with nothing configured: the samples (addressed to invented recipients) are
    accepted, and the log says once, at start-up, that any recipient is."""
    scripts = Path(sys.prefix) / "bin"
    # `make test` runs this suite, so make and the installed script are there: their absence is a failure.
    assert shutil.which("make") is not None, "make is needed to show that `make run` works"
    assert (scripts / "nhs111").exists(), f"no nhs111 script in {scripts}"
    port = free_port()
    log_path = tmp_path / "make-run.log"
    with open(log_path, "wb") as log_file:
        # -o install: the environment running the tests is installed already (and may not be ./.venv).
        make = subprocess.Popen(
            ["make", "-s", "-o", "install", "run", f"VENV={sys.prefix}"],
            cwd=REPO,
            env=_environment(tmp_path, PEM111_PORT=str(port)),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: make and the server it runs are stopped together
        )
    try:
        wait_until(lambda: _answers(f"http://127.0.0.1:{port}/healthz") or make.poll() is not None, "healthz", 60)
        assert make.poll() is None, log_path.read_text()
        for sample in sorted((REPO / "samples").glob("*.xml"))[:3]:
            response = requests.post(
                f"http://127.0.0.1:{port}/report",
                data=sample.read_bytes(),
                headers={"Content-Type": "text/xml; charset=utf-8"},
                timeout=30,
            )
            assert response.status_code == 200 and b">OK<" in response.content, response.text
    finally:
        os.killpg(make.pid, signal.SIGTERM)
        make.wait(30)
    log = log_path.read_text()
    assert log.count("PEM111_ITK_ACCEPT_ANY_ADDRESS=true") == 1, log
    assert [line for line in log.splitlines() if " WARNING " in line and "allow-list" in line] == [
        line for line in log.splitlines() if "PEM111_ITK_ACCEPT_ANY_ADDRESS=true" in line
    ]


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False
