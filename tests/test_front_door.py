"""The adversarial suite of issue 12 ("Harden the front door"), short form: each attack against a real
``nhs111 serve`` process (:mod:`server_fixture`), sent as raw bytes by :mod:`attacks`, and the issue's acceptance
in terms of behaviour: the right answer (a SOAP fault with the right code, or 400/408/413 and the connection
closed), nothing stored, good clients still served, the server's resident memory within the issue's bounds (growth
under 100 MB for one request, peak under 300 MB for 16 at once; ``/proc`` of the server process). Time bounds here
only catch hangs; the times themselves are measured by the long form, ``benchmarks/frontdoor.py`` in
``make soak``, which writes them to ``docs/benchmarks.md``.

The issue's checklist, attack -> test (in this module unless another is named):

* Idle and trickling clients starve the server (plain HTTP):
    test_idle_and_trickling_clients_do_not_starve_the_server
* The same over mutual TLS, with a subject not allowed and handshakes that never start or never finish:
    test_idle_and_trickling_clients_do_not_starve_mutual_tls
    test_tls.py::test_silent_connections_hold_no_request_thread
* The same with bodies sent quickly but for their last byte:
    test_bodies_sent_but_for_their_last_byte_do_not_starve_the_server
* Connection limits, in total and per client address:
    test_connections_beyond_the_per_client_limit_are_closed_at_once
    test_connections_beyond_the_total_limit_are_closed_at_once
* Header and body timeouts; a client that stalls mid-body gets 408, is logged as a client timeout, no 2200:
    test_slow_clients_are_timed_out_as_client_timeouts
    test_http_endpoint.py::test_a_client_that_stalls_mid_body_gets_a_408
    test_http_endpoint.py::test_a_body_that_times_out_is_a_408_not_a_2200
* Compressed payload bombs (empty elements; a valid CDA padded with comments):
    test_compressed_payload_bombs_are_refused_in_bounded_memory
    test_payload_limits.py: each limit, and the same limits in conversion, console, replay, Pathways attachment
* Large plain bodies (10 MB of empty elements; one 10 MB text node):
    test_large_plain_bodies_are_refused_in_bounded_memory
    test_payload_limits.py::test_a_plain_request_meets_the_request_node_limit
* A DOCTYPE in UTF-16/UTF-32 naming a file, a missing file or a FIFO, in the request or a base64 payload:
    test_doctype_in_a_wide_encoding_gets_one_answer_whatever_it_names
    test_xmlsafe.py (every encoding and byte order, at the parser)
    test_http_endpoint.py::test_a2_utf16_doctype_naming_a_fifo_is_refused_fast
* The same in the Pathways attachment:
    test_doctype_in_a_pathways_attachment_is_never_read
    test_xmlsafe.py::test_pathways_case_with_doctype_is_not_read_in_any_encoding
* Smuggling: conflicting Content-Length, Content-Length with chunked, a bad chunk size (was a bare 500), HTTP/1.1
  without Host:
    test_ambiguous_framing_is_refused_and_the_connection_closed
* A body over twice the limit (refused without being read); chunked bodies over the limit:
    test_bodies_over_the_limit_are_refused_without_being_held
    test_http_endpoint.py::test_a1_oversized_body_is_refused_unread
* Peak RSS under 300 MB under any mix of hostile requests:
    the RSS checks above
    test_soak_hostile.py (peak RSS over its hypothesis cases)
* The subject check before any worker: 403:
    test_tls.py::test_a_subject_not_allowed_is_answered_403_before_the_endpoint
* Exact subject matching, every attribute of the name:
    test_tls.py::test_a_common_name_entry_matches_only_a_subject_with_that_one_cn
    test_tls.py::test_a_full_name_entry_compares_every_attribute
* Sign-out revokes the session on the server:
    test_console.py::test_a_signed_out_session_cookie_replayed_is_refused
    test_console.py::test_signed_out_sessions_are_forgotten_once_they_would_have_expired
* Text logs escape control characters (a MessageID holding a newline cannot forge a line):
    test_logs.py::test_text_lines_escape_control_characters_in_the_event_and_every_field
    test_logs.py::test_text_tracebacks_follow_indented_and_cannot_forge_a_line
* The CLI's tabular output escapes control characters:
    test_messages_cli.py::test_list_and_show_escape_control_characters
* WSDL addresses from a setting, never from the Host header:
    test_http_endpoint.py::test_wsdl_never_echoes_the_host_header
* A truncated gzip payload; a trailing second gzip member:
    test_payload_limits.py::test_truncated_gzip_is_refused
    test_payload_limits.py::test_a_second_gzip_member_is_refused
* What held up before (DOCTYPE and entity variants, billion laughs in every encoding, XInclude, deep nesting, huge
  text nodes, XSS, CSRF):
    test_soak_hostile.py (hostile family), test_xmlsafe.py, test_http_endpoint.py::test_a2_*, test_console.py
"""

from __future__ import annotations

import json
import re
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from attacks import (
    ADDRESSING,
    DOCTYPE_REFUSED,
    HIDDEN,
    NOT_DECODED,
    NOT_XML,
    SMUGGLING,
    TOO_LARGE,
    WIDE_ENCODINGS,
    Crowd,
    Fault,
    Reply,
    attachment_with_doctype,
    chunked,
    comment_bomb,
    connect,
    element_bomb,
    encoding_id,
    exchange,
    get,
    good_report,
    payload_with_doctype,
    plain_elements,
    plain_text,
    post,
    soap_body,
    with_doctype,
)
from itk_factory import new_id
from server_fixture import ClientTls, RunningServer, start_server
from tls_certs import CLIENT_DN, TlsPki, make_tls_pki

from adaptor.config import Settings
from adaptor.store import MessageStore

#: The issue's memory bounds for ``nhs111 serve`` at the default limits and thread count.
GROWTH_LIMIT_MB = 100
PEAK_LIMIT_MB = 300
#: The issue wants answers within 1-2 s; these only tell a hang from an answer (figures: docs/benchmarks.md).
ANSWER_TIMEOUT = 30.0
PROBE_TIMEOUT = 10.0
#: For the probe beside bodies sent but for their last byte: still five times the issue's 1 s.
STALLED_PROBE_TIMEOUT = 5.0
#: Where the attackers connect from; the good clients use 127.0.0.1.
ATTACKER = "127.0.0.2"
MAX_REQUEST_BYTES = Settings().max_request_bytes
PAYLOAD_DOCTYPE_REFUSED = f"decoded payload is not acceptable XML: {DOCTYPE_REFUSED}"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """Default limits and thread count: the issue's memory bounds are for those."""
    running = start_server(tmp_path_factory.mktemp("front-door"), **ADDRESSING)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TlsPki:
    return make_tls_pki(tmp_path_factory.mktemp("pki"))


def tls_client(pki: TlsPki, good: bool = True) -> ClientTls:
    pair = pki.good if good else pki.unlisted
    return ClientTls(pki.ca_cert, pair.cert, pair.key)


@pytest.fixture(scope="module")
def tls_server(pki: TlsPki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(
        tmp_path_factory.mktemp("front-door-tls"),
        tls=tls_client(pki),
        PEM111_TLS_CERT=str(pki.server_cert),
        PEM111_TLS_KEY=str(pki.server_key),
        PEM111_TLS_CLIENT_CA=str(pki.ca_cert),
        PEM111_TLS_CRL=str(pki.crl),
        PEM111_TLS_CLIENT_SUBJECTS=CLIENT_DN,
        **ADDRESSING,
    )
    yield running
    running.stop()


def log_records(server: RunningServer) -> list[dict[str, object]]:
    return [json.loads(line) for line in server.log_text().splitlines() if line.startswith("{")]


def errors_logged(server: RunningServer) -> list[dict[str, object]]:
    return [record for record in log_records(server) if record["level"] in ("ERROR", "CRITICAL")]


def at_once(requests: list[bytes], port: int) -> list[Reply]:
    """Each request on its own connection, all at once."""
    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(lambda raw: exchange(port, raw, timeout=ANSWER_TIMEOUT), requests))


def assert_fault(reply: Reply, text: str, *, faultcode: str = "Client", code: str = "1000") -> Fault:
    fault = reply.first.fault()
    assert fault is not None, reply
    assert (fault.faultcode, fault.code, fault.text) == (faultcode, code, text), fault
    return fault


# == starvation ======================================================================================================


def probe_while_held(server: RunningServer, crowd: Crowd, context: ssl.SSLContext | None = None) -> None:
    """/healthz and a good report (fresh MessageID), three times, each answered while the crowd is still held."""
    for _ in range(3):
        health = exchange(server.port, get("/healthz"), context=context, timeout=PROBE_TIMEOUT)
        assert health.status == 200, health
        body, message_id = good_report()
        report = exchange(server.port, post(body), context=context, timeout=PROBE_TIMEOUT)
        assert report.status == 200 and report.first.ok(), report
        assert len(server.stored(message_id)) == 1
        assert crowd.held() == len(crowd), "the server let go of attacking connections: the test proves nothing"


def test_idle_and_trickling_clients_do_not_starve_the_server(server: RunningServer) -> None:
    with Crowd(server.port, source=ATTACKER, idle=64, trickling=64) as crowd:
        time.sleep(1.0)  # a couple of trickled bytes each
        probe_while_held(server, crowd)


def test_idle_and_trickling_clients_do_not_starve_mutual_tls(tls_server: RunningServer, pki: TlsPki) -> None:
    """Over mutual TLS the crowd also holds connections that never start or never finish their handshake, and
    connections from a certificate of the trusted CA whose subject is not allowed."""
    contexts = [tls_client(pki).context(), tls_client(pki, good=False).context()]
    with Crowd(tls_server.port, source=ATTACKER, idle=64, trickling=64, contexts=contexts, half_handshakes=8) as crowd:
        time.sleep(1.0)
        probe_while_held(tls_server, crowd, tls_client(pki).context())
    assert any(record["event"] == "TLS client refused: subject not allowed" for record in log_records(tls_server))


def test_bodies_sent_but_for_their_last_byte_do_not_starve_the_server(server: RunningServer) -> None:
    """The trickling attack in its cheapest form: a client that sends its body quickly and trickles (or stalls on)
    only the end of it holds memory, not just a socket. The bodies of one address hold at most two thirds of the
    body budget (adaptor.http.budgets), so a good client elsewhere is still served, body and all."""
    with Crowd(server.port, source=ATTACKER, idle=0, trickling=0, stalled_bodies=4, body_length=MAX_REQUEST_BYTES):
        assert exchange(server.port, get("/healthz"), timeout=PROBE_TIMEOUT).status == 200
        body, _ = good_report()
        report = exchange(server.port, post(body), timeout=STALLED_PROBE_TIMEOUT)
        assert report.status == 200 and report.first.ok(), report


# == connection limits ===============================================================================================


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server closes ``sock`` (end of file or a reset) before the socket's timeout."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def closed_at_once(port: int, source: str) -> bool:
    """Whether a new connection from ``source`` is closed by the server before it sends anything (an admitted
    one would be held until the header timeout, 15 s)."""
    with connect(port, source=source, timeout=PROBE_TIMEOUT) as sock:
        return closed_by_server(sock)


def refusals_logged(server: RunningServer, setting: str) -> list[dict[str, object]]:
    return [
        record
        for record in log_records(server)
        if record["event"] == "connection refused: too many connections" and record.get("setting") == setting
    ]


def test_connections_beyond_the_per_client_limit_are_closed_at_once(tmp_path: Path) -> None:
    server = start_server(tmp_path, PEM111_SERVER_MAX_CONNECTIONS_PER_CLIENT="8", **ADDRESSING)
    try:
        with Crowd(server.port, source=ATTACKER, idle=8, trickling=0) as crowd:
            assert closed_at_once(server.port, ATTACKER)  # the 9th from that address
            assert crowd.held() == 8
            assert exchange(server.port, get("/healthz"), timeout=PROBE_TIMEOUT).status == 200  # others are served
    finally:
        server.stop()
    [refusal] = refusals_logged(server, "PEM111_SERVER_MAX_CONNECTIONS_PER_CLIENT")
    assert refusal["client"] == ATTACKER and refusal["level"] == "WARNING"


def test_connections_beyond_the_total_limit_are_closed_at_once(tmp_path: Path) -> None:
    server = start_server(tmp_path, PEM111_SERVER_MAX_CONNECTIONS="16", **ADDRESSING)
    try:
        with (
            Crowd(server.port, source=ATTACKER, idle=8, trickling=0) as first,
            Crowd(server.port, source="127.0.0.3", idle=8, trickling=0) as second,
        ):
            assert closed_at_once(server.port, "127.0.0.4")
            assert closed_at_once(server.port, "127.0.0.1")
            assert first.held() == second.held() == 8
        # Once the crowd has gone, everyone is served again.
        deadline = time.monotonic() + PROBE_TIMEOUT
        while exchange(server.port, get("/healthz"), timeout=PROBE_TIMEOUT).status != 200:
            assert time.monotonic() < deadline, "the connections were not given back"
            time.sleep(0.1)
    finally:
        server.stop()
    refusals = refusals_logged(server, "PEM111_SERVER_MAX_CONNECTIONS")
    assert {refusal["client"] for refusal in refusals[:2]} == {"127.0.0.4", "127.0.0.1"}


# == timeouts ========================================================================================================


def test_slow_clients_are_timed_out_as_client_timeouts(tmp_path: Path) -> None:
    """Short timeouts (1 s): a silent connection and one that trickles its headers are closed (the header
    timeout is for the whole header, however steadily it trickles); one that stalls mid-body gets 408 and is
    closed; each is logged as the client's doing, not as an error, and no fault is recorded."""
    server = start_server(
        tmp_path, PEM111_SERVER_HEADER_TIMEOUT_SECONDS="1", PEM111_SERVER_BODY_TIMEOUT_SECONDS="1", **ADDRESSING
    )
    try:
        body, message_id = good_report()
        with (
            connect(server.port, timeout=PROBE_TIMEOUT) as silent,
            connect(server.port, timeout=PROBE_TIMEOUT) as trickling,
        ):
            trickling.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            stalled = exchange(server.port, post(body)[: -len(body) // 2], timeout=ANSWER_TIMEOUT)
            assert closed_by_server(silent)
            deadline = time.monotonic() + ANSWER_TIMEOUT
            while not select.select([trickling], [], [], 0.2)[0]:
                trickling.sendall(b"a")
                assert time.monotonic() < deadline, "a trickling client was never timed out"
            assert closed_by_server(trickling)
        assert stalled.status == 408 and stalled.closed, stalled
        assert stalled.first.headers.get("connection") == "close"
        metrics = exchange(server.port, get("/metrics"), timeout=PROBE_TIMEOUT)
        assert metrics.status == 200 and b'error_code="2200"' not in metrics.first.body
    finally:
        server.stop()
    assert any(r["event"].startswith("client timeout") and r["level"] == "WARNING" for r in log_records(server))  # type: ignore[union-attr]
    assert errors_logged(server) == []
    store = MessageStore(server.database_url)
    try:
        assert store.count_rejections() == 0 and store.find_by_message_id(message_id) == []
    finally:
        store.close()


# == payload bombs and large bodies ==================================================================================


def memory_of_one(server: RunningServer, request: bytes) -> tuple[Reply, float]:
    """The reply to ``request`` and the server's RSS growth (peak during it, less RSS before) in MiB."""
    before, _ = server.memory_mb()
    server.reset_peak_memory()
    reply = exchange(server.port, request, timeout=ANSWER_TIMEOUT)
    return reply, server.memory_mb()[1] - before


@pytest.mark.parametrize("bomb", [element_bomb, comment_bomb], ids=["elements", "comments"])
def test_compressed_payload_bombs_are_refused_in_bounded_memory(
    server: RunningServer, bomb: Callable[[str], bytes]
) -> None:
    message_id = new_id()
    reply, growth = memory_of_one(server, post(bomb(message_id)))
    fault = assert_fault(reply, NOT_DECODED)
    assert "limit" in fault.diagnostic, fault
    assert growth < GROWTH_LIMIT_MB
    assert server.stored(message_id) == []

    ids = [new_id() for _ in range(16)]
    requests = [post(bomb(one)) for one in ids]
    server.reset_peak_memory()
    replies = at_once(requests, server.port)
    assert server.memory_mb()[1] < PEAK_LIMIT_MB
    assert {reply.first.fault() for reply in replies} == {fault}
    assert all(server.stored(one) == [] for one in ids)


@pytest.mark.parametrize("build", [plain_elements, plain_text], ids=["elements", "text"])
def test_large_plain_bodies_are_refused_in_bounded_memory(server: RunningServer, build: Callable[[], bytes]) -> None:
    """10 MB of empty elements meets the node limit; a 10 MB text node is no problem in itself: the envelope gets
    the fault it gets without it. 16 at once (the issue's 8, twice) while /healthz keeps answering."""
    body = build()
    assert 10_000_000 <= len(body) <= MAX_REQUEST_BYTES
    reply, growth = memory_of_one(server, post(body))
    fault = reply.first.fault()
    if build is plain_elements:
        assert fault is not None and fault.text == NOT_XML, reply
        assert "XML nodes" in fault.diagnostic and "limit" in fault.diagnostic, fault
    else:
        small = exchange(server.port, post(soap_body(b"<a>x</a>")), timeout=ANSWER_TIMEOUT)
        assert fault is not None and fault == small.first.fault() and fault.code == "1000", reply
    assert growth < GROWTH_LIMIT_MB

    probes: list[Reply] = []
    done = threading.Event()

    def probe() -> None:
        while not done.is_set():
            probes.append(exchange(server.port, get("/healthz"), timeout=PROBE_TIMEOUT))
            done.wait(0.1)

    server.reset_peak_memory()
    prober = threading.Thread(target=probe)
    prober.start()
    try:
        replies = at_once([post(body)] * 16, server.port)
    finally:
        done.set()
        prober.join()
    assert server.memory_mb()[1] < PEAK_LIMIT_MB
    assert {reply.first.fault() for reply in replies} == {fault}
    assert probes and all(probe.status == 200 for probe in probes), probes


# == DOCTYPEs ========================================================================================================




@pytest.mark.parametrize(("name", "codec", "bom"), WIDE_ENCODINGS, ids=[encoding_id(*e) for e in WIDE_ENCODINGS])
def test_doctype_in_a_wide_encoding_gets_one_answer_whatever_it_names(
    server: RunningServer, doctype_targets: dict[str, Path], name: str, codec: str, bom: bytes
) -> None:
    """In the request and in a base64 payload: the same fault whether the named file exists, is missing or is a
    FIFO (a FIFO would hold the request if libxml2 opened it)."""
    for kind, path in doctype_targets.items():
        reply = exchange(server.port, post(with_doctype(str(path), name, codec, bom)), timeout=PROBE_TIMEOUT)
        assert assert_fault(reply, NOT_XML).diagnostic == DOCTYPE_REFUSED, kind
        reply = exchange(server.port, post(payload_with_doctype(str(path), name, codec, bom)), timeout=PROBE_TIMEOUT)
        assert assert_fault(reply, NOT_DECODED).diagnostic == PAYLOAD_DOCTYPE_REFUSED
    assert doctype_targets["fifo"].exists() and not doctype_targets["missing"].exists()


def test_doctype_in_a_pathways_attachment_is_never_read(
    server: RunningServer, doctype_targets: dict[str, Path]
) -> None:
    """The attachment is optional: the report is accepted, and converted and delivered without the attachment
    (a FIFO would hold the conversion if it were opened)."""
    for name, codec, bom in WIDE_ENCODINGS[:3:2]:  # UTF-16 and UTF-32, with their byte order marks
        for path in doctype_targets.values():
            message_id = new_id()
            raw = attachment_with_doctype(str(path), name, codec, bom, message_id=message_id)
            reply = exchange(server.port, post(raw), timeout=PROBE_TIMEOUT)
            assert reply.status == 200 and reply.first.ok(), reply
            server.wait_for_status(message_id)


# == framing and sizes ===============================================================================================


@pytest.mark.parametrize("framing", SMUGGLING)
def test_ambiguous_framing_is_refused_and_the_connection_closed(server: RunningServer, framing: str) -> None:
    errors_before = len(errors_logged(server))
    reply = exchange(server.port, SMUGGLING[framing], timeout=ANSWER_TIMEOUT)
    assert reply.closed and reply.status == 400, reply
    assert len(reply.responses) == 1 and reply.rest == b"", "the hidden request was answered"
    assert HIDDEN in SMUGGLING[framing]
    assert len(errors_logged(server)) == errors_before


def test_bodies_over_the_limit_are_refused_without_being_held(server: RunningServer) -> None:
    limit = MAX_REQUEST_BYTES
    head = post(b"")[: -len(b"Content-Length: 0\r\nConnection: close\r\n\r\n")]
    head += b"Content-Length: %d\r\n\r\n" % (2 * limit + 1)
    declared = exchange(server.port, head, timeout=ANSWER_TIMEOUT)  # and not one byte of the body
    assert declared.status == 413 and declared.closed, declared

    within_twice = plain_text(limit + limit // 2)
    assert_fault(exchange(server.port, post(within_twice), timeout=ANSWER_TIMEOUT), TOO_LARGE)
    assert_fault(exchange(server.port, chunked(within_twice), timeout=ANSWER_TIMEOUT), TOO_LARGE)

    beyond = exchange(server.port, chunked(plain_text(2 * limit + limit // 2)), timeout=ANSWER_TIMEOUT)
    assert beyond.status == 413 and beyond.closed, beyond


def test_the_checklist_names_tests_that_exist() -> None:
    """The module docstring's checklist stays true: every ``module.py::test_name`` it names is defined."""
    assert __doc__ is not None
    folder = Path(__file__).parent
    named = re.findall(r"(test_\w+\.py)::(test_\w+)(?![\w*])", __doc__)
    named += [("test_front_door.py", name) for name in re.findall(r"^    (test_\w+)$", __doc__, re.MULTILINE)]
    assert len(named) > 20
    missing = [f"{module}::{name}" for module, name in named if f"def {name}(" not in (folder / module).read_text()]
    assert missing == []
