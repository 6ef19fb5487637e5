"""TLS and mutual TLS in ``nhs111 serve``, against the real server process (``server_fixture``) and a PKI made
for the run (``tls_certs``).

Refusals at the TLS layer are observed with raw TLS sockets that send nothing: the handshake (TLS 1.2) or the
first read after it (TLS 1.3, where the server judges the client's certificate after the client has finished
its side) fails with the server's alert, and not one byte of HTTP ever arrives. A client whose certificate is
valid but whose subject is not allowed is answered HTTP 403 before the application sees the request.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from itk_factory import RECIPIENT_DOS, RECIPIENT_ODS, build_request, new_id, to_bytes
from lxml import etree
from server_fixture import ClientTls, RunningServer, free_port, nhs111_command, start_server
from tls_certs import CLIENT_DN, UNLISTED_DN, KeyPair, TlsPki, make_tls_pki

from adaptor.config import ConfigError, Settings
from adaptor.http.tls import ServerTls, SubjectAllowList, format_subject, parse_dn

ITK = "urn:nhs-itk:ns:201005"
ADDRESSING = {"PEM111_ITK_ODS_CODE_LIST": RECIPIENT_ODS, "PEM111_ITK_DOS_ID_LIST": RECIPIENT_DOS}
TLS_VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}
LOG_TIMEOUT_SECONDS = 10.0


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TlsPki:
    return make_tls_pki(tmp_path_factory.mktemp("pki"))


def tls_settings(pki: TlsPki, **overrides: str) -> dict[str, str]:
    """Mutual TLS with the CRL, and the good client's DN plus a CN nobody has on the subject allow-list."""
    settings = {
        "PEM111_TLS_CERT": str(pki.server_cert),
        "PEM111_TLS_KEY": str(pki.server_key),
        "PEM111_TLS_CLIENT_CA": str(pki.ca_cert),
        "PEM111_TLS_CRL": str(pki.crl),
        "PEM111_TLS_CLIENT_SUBJECTS": f"{CLIENT_DN};someone-else.test",
        **ADDRESSING,
    }
    settings.update(overrides)
    return settings


def as_client(pki: TlsPki, pair: KeyPair | None) -> ClientTls:
    return ClientTls(pki.ca_cert, pair.cert if pair else None, pair.key if pair else None)


@pytest.fixture(scope="module")
def server(pki: TlsPki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    port = free_port()
    running = start_server(
        tmp_path_factory.mktemp("mtls"),
        port=port,
        tls=as_client(pki, pki.good),
        PEM111_SOAP_SEND_TO=f"https://itk.example.test:{port}/report",
        **tls_settings(pki),
    )
    yield running
    running.stop()


def client_context(
    pki: TlsPki, pair: KeyPair | None, *, trust: Path | None = None, version: ssl.TLSVersion | None = None
) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(trust or pki.ca_cert))
    if pair is not None:
        context.load_cert_chain(pair.cert, pair.key)
    if version is not None:
        context.minimum_version = context.maximum_version = version
    return context


def tls_refusal(port: int, context: ssl.SSLContext) -> ssl.SSLError:
    """Connect, handshake and read, sending nothing; the TLS error that ends it (fails if any byte arrives)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        try:
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                received = tls.recv(1)
        except ssl.SSLError as exc:
            return exc
    raise AssertionError(f"the server accepted the connection (received {received!r})")


def wait_for_log(server: RunningServer, text: str, timeout: float = LOG_TIMEOUT_SECONDS) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = server.log_text()
        if text in log:
            return log
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not in the server's log:\n{server.log_text()}")


def post_report(server: RunningServer, client: ClientTls) -> tuple[requests.Response, str]:
    message_id = new_id()
    body = to_bytes(build_request(message_id=message_id))
    response = requests.post(
        server.report_url,
        data=body,
        headers={"Content-Type": "text/xml; charset=utf-8"},
        timeout=30,
        **client.requests_kwargs(),
    )
    return response, message_id


# == accepted =======================================================================================================


def test_a_good_client_is_served_over_mutual_tls(server: RunningServer, pki: TlsPki) -> None:
    response, message_id = post_report(server, as_client(pki, pki.good))

    assert response.status_code == 200, response.text[:500]
    answer = etree.fromstring(response.content)
    assert answer.findtext(f".//{{{ITK}}}SimpleMessageResponse") == "OK"
    server.wait_for_status(message_id)
    # The WSDL gives the configured (https) address.
    wsdl = requests.get(f"{server.report_url}?wsdl", timeout=10, **server.requests_kwargs)
    location = etree.fromstring(wsdl.content).find(".//{http://schemas.xmlsoap.org/wsdl/soap/}address")
    assert location is not None and location.get("location") == f"https://itk.example.test:{server.port}/report"
    assert f"listening on https://127.0.0.1:{server.port}/report" in server.log_text()


@pytest.mark.parametrize("version", TLS_VERSIONS)
def test_a_good_client_completes_the_handshake_with_either_tls_version(
    server: RunningServer, pki: TlsPki, version: str
) -> None:
    context = client_context(pki, pki.good, version=TLS_VERSIONS[version])
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        assert tls.version() == version
        tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        assert tls.recv(4096).startswith(b"HTTP/1.1 200 ")


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_tls_1_1_is_refused(server: RunningServer, pki: TlsPki) -> None:
    context = client_context(pki, pki.good)
    context.set_ciphers("DEFAULT:@SECLEVEL=0")  # this client would offer TLS 1.1: only the server refuses it
    context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    context.maximum_version = ssl.TLSVersion.TLSv1_1

    assert tls_refusal(server.port, context).reason == "TLSV1_ALERT_PROTOCOL_VERSION"


# == refused at the TLS layer ======================================================================================

#: client -> (the alert the client receives, by TLS version; what the server logs)
REFUSALS = {
    "no certificate": (
        {"TLSv1.2": "SSLV3_ALERT_HANDSHAKE_FAILURE", "TLSv1.3": "TLSV13_ALERT_CERTIFICATE_REQUIRED"},
        "no client certificate",
    ),
    "another CA's certificate": (
        {"TLSv1.2": "TLSV1_ALERT_UNKNOWN_CA", "TLSv1.3": "TLSV1_ALERT_UNKNOWN_CA"},
        "unable to get local issuer certificate",
    ),
    "a revoked certificate": (
        {"TLSv1.2": "SSLV3_ALERT_CERTIFICATE_REVOKED", "TLSv1.3": "SSLV3_ALERT_CERTIFICATE_REVOKED"},
        "certificate revoked",
    ),
    "an expired certificate": (
        {"TLSv1.2": "SSLV3_ALERT_CERTIFICATE_EXPIRED", "TLSv1.3": "SSLV3_ALERT_CERTIFICATE_EXPIRED"},
        "certificate has expired",
    ),
}


def refused_pair(pki: TlsPki, client: str) -> KeyPair | None:
    return {
        "no certificate": None,
        "another CA's certificate": pki.other_ca_client,
        "a revoked certificate": pki.revoked,
        "an expired certificate": pki.expired,
    }[client]


@pytest.mark.parametrize("version", TLS_VERSIONS)
@pytest.mark.parametrize("client", REFUSALS)
def test_refused_at_the_tls_layer(server: RunningServer, pki: TlsPki, client: str, version: str) -> None:
    alerts, logged = REFUSALS[client]
    context = client_context(pki, refused_pair(pki, client), version=TLS_VERSIONS[version])

    error = tls_refusal(server.port, context)

    assert error.reason == alerts[version]
    wait_for_log(server, logged)


@pytest.mark.parametrize("client", REFUSALS)
def test_refused_clients_get_no_http_answer_from_requests(server: RunningServer, pki: TlsPki, client: str) -> None:
    """What a sender's HTTP library sees: a TLS or connection error, never a response; nothing is stored."""
    with pytest.raises((requests.exceptions.SSLError, requests.exceptions.ConnectionError)):
        post_report(server, as_client(pki, refused_pair(pki, client)))


# == refused over HTTP: a subject not on the allow-list =============================================================


def test_a_subject_not_allowed_is_answered_403_before_the_endpoint(server: RunningServer, pki: TlsPki) -> None:
    response, message_id = post_report(server, as_client(pki, pki.unlisted))

    assert response.status_code == 403
    assert response.text.strip() == "Mutual authentication failed"
    assert response.headers["Connection"] == "close"
    assert server.stored(message_id) == []
    log = wait_for_log(server, UNLISTED_DN)
    assert message_id not in log  # the request was never read as a message
    health = requests.get(f"{server.base_url}/healthz", timeout=10, **as_client(pki, pki.unlisted).requests_kwargs())
    assert health.status_code == 403  # every path: the connection is refused, not the message


# == the client's side: the server's certificate =====================================================================


def test_clients_verify_the_server_certificate(server: RunningServer, pki: TlsPki) -> None:
    untrusting = client_context(pki, pki.good, trust=pki.other_ca_cert)
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw,
        pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"),
    ):
        untrusting.wrap_socket(raw, server_hostname="127.0.0.1")

    trusting = client_context(pki, pki.good)
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw,
        pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"),
    ):
        trusting.wrap_socket(raw, server_hostname="not-this-server.example")

    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw,
        trusting.wrap_socket(raw, server_hostname="localhost") as tls,  # the certificate names localhost too
    ):
        assert tls.getpeercert()["subjectAltName"] == (("IP Address", "127.0.0.1"), ("DNS", "localhost"))


# == the server's robustness ========================================================================================


def test_plain_http_on_the_tls_port_gets_a_plain_answer(server: RunningServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
        raw.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer = raw.recv(4096)
    assert answer.startswith(b"HTTP/1.1 400 Bad Request") and b"HTTPS only" in answer


def test_silent_connections_hold_no_request_thread(server: RunningServer, pki: TlsPki) -> None:
    """Three times as many connections as request threads, each opened and left without a ClientHello, or
    with half of one: a good client is still served at once."""
    threads = Settings().server_threads
    silent = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(3 * threads)]
    try:
        for connection in silent[::2]:
            connection.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # the start of a ClientHello
        time.sleep(0.5)
        started = time.monotonic()
        response = requests.get(f"{server.base_url}/healthz", timeout=10, **server.requests_kwargs)
        assert response.status_code == 200
        assert time.monotonic() - started < 2.0
    finally:
        for connection in silent:
            connection.close()


# == reloading the CRL ==============================================================================================


def test_sighup_reloads_the_crl(pki: TlsPki, tmp_path: Path) -> None:
    crl = tmp_path / "crl.pem"
    shutil.copy(pki.crl_before_revocation, crl)
    settings = tls_settings(pki, PEM111_TLS_CRL=str(crl), PEM111_TLS_RELOAD_SECONDS="0")
    running = start_server(tmp_path / "server", tls=as_client(pki, pki.good), **settings)
    try:
        revoked = client_context(pki, pki.revoked)
        assert _healthz(running.port, revoked) == 200  # not revoked yet: the CRL is from before

        shutil.copy(pki.crl, crl)
        time.sleep(1.5)
        assert _healthz(running.port, revoked) == 200  # no periodic reload with PEM111_TLS_RELOAD_SECONDS=0
        running.process.send_signal(signal.SIGHUP)
        wait_for_log(running, "TLS certificates and CRL reloaded")

        assert tls_refusal(running.port, revoked).reason == "SSLV3_ALERT_CERTIFICATE_REVOKED"
        assert _healthz(running.port, client_context(pki, pki.good)) == 200
    finally:
        assert running.stop() == 0


def test_a_changed_crl_file_is_reloaded_and_a_broken_one_is_not(pki: TlsPki, tmp_path: Path) -> None:
    crl = tmp_path / "crl.pem"
    shutil.copy(pki.crl_before_revocation, crl)
    settings = tls_settings(pki, PEM111_TLS_CRL=str(crl), PEM111_TLS_RELOAD_SECONDS="0.2")
    running = start_server(tmp_path / "server", tls=as_client(pki, pki.good), **settings)
    try:
        revoked = client_context(pki, pki.revoked)
        assert _healthz(running.port, revoked) == 200

        crl.write_text("not a CRL\n")
        wait_for_log(running, "TLS reload failed")
        assert _healthz(running.port, revoked) == 200  # the previous CRL still applies

        shutil.copy(pki.crl, crl)
        wait_for_log(running, "TLS certificates and CRL reloaded")
        assert tls_refusal(running.port, revoked).reason == "SSLV3_ALERT_CERTIFICATE_REVOKED"
    finally:
        running.stop()


def _healthz(port: int, context: ssl.SSLContext) -> int:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        return int(tls.recv(4096).split(b" ", 2)[1])


# == other modes ====================================================================================================


def test_tls_without_client_certificates(pki: TlsPki, tmp_path: Path) -> None:
    settings = {"PEM111_TLS_CERT": str(pki.server_cert), "PEM111_TLS_KEY": str(pki.server_key), **ADDRESSING}
    running = start_server(tmp_path, tls=ClientTls(pki.ca_cert), **settings)
    try:
        response, message_id = post_report(running, ClientTls(pki.ca_cert))
        assert response.status_code == 200
        running.wait_for_status(message_id)
        assert "TLS without client certificates" in running.log_text()
    finally:
        running.stop()


def test_plain_http_is_unaffected_when_tls_is_off(pki: TlsPki, tmp_path: Path) -> None:
    running = start_server(tmp_path, **ADDRESSING)
    try:
        assert running.base_url.startswith("http://")
        response, message_id = post_report(running, ClientTls(pki.ca_cert))  # verify= is ignored over http
        assert response.status_code == 200
        running.wait_for_status(message_id)
        # A TLS client gets no TLS server: the plain HTTP answer to its ClientHello is not a handshake.
        assert tls_refusal(running.port, client_context(pki, pki.good)).reason == "WRONG_VERSION_NUMBER"
    finally:
        assert running.stop() == 0
    log = running.log_text()
    assert f"listening on http://127.0.0.1:{running.port}/report" in log and "adaptor.tls" not in log


# == start-up refused: one line naming the variable, exit status 2 ==================================================


def _bad_settings(pki: TlsPki, tmp_path: Path) -> dict[str, tuple[dict[str, str], str]]:
    good = tls_settings(pki)
    return {
        "missing certificate": (
            {**good, "PEM111_TLS_CERT": str(tmp_path / "nope.pem")},
            "PEM111_TLS_CERT: no such file",
        ),
        "key as certificate": ({**good, "PEM111_TLS_CERT": str(pki.server_key)}, "PEM111_TLS_CERT: no PEM certificate"),
        "missing key": ({**good, "PEM111_TLS_KEY": str(tmp_path / "nope.key")}, "PEM111_TLS_KEY: no such file"),
        "another certificate's key": (
            {**good, "PEM111_TLS_KEY": str(pki.good.key)},
            "PEM111_TLS_KEY: the key in",
        ),
        "missing client CA": (
            {**good, "PEM111_TLS_CLIENT_CA": str(tmp_path / "nope-ca.pem")},
            "PEM111_TLS_CLIENT_CA: no such file",
        ),
        "certificate as CRL": ({**good, "PEM111_TLS_CRL": str(pki.ca_cert)}, "PEM111_TLS_CRL: no PEM CRL"),
        "client CA without a certificate": (
            {"PEM111_TLS_CLIENT_CA": str(pki.ca_cert), **ADDRESSING},
            "PEM111_TLS_CLIENT_CA is set but PEM111_TLS_CERT is not",
        ),
        "CRL without a client CA": (
            {**good, "PEM111_TLS_CLIENT_CA": ""},
            "PEM111_TLS_CRL needs PEM111_TLS_CLIENT_CA",
        ),
        "malformed subject": (
            {**good, "PEM111_TLS_CLIENT_SUBJECTS": "CN=a,O"},
            "PEM111_TLS_CLIENT_SUBJECTS: 'CN=a,O' is not an RFC 4514 name",
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "missing certificate",
        "key as certificate",
        "missing key",
        "another certificate's key",
        "missing client CA",
        "certificate as CRL",
        "client CA without a certificate",
        "CRL without a client CA",
        "malformed subject",
    ],
)
def test_bad_tls_settings_stop_start_up(pki: TlsPki, tmp_path: Path, case: str) -> None:
    settings, expected = _bad_settings(pki, tmp_path)[case]
    env = {key: value for key, value in os.environ.items() if not key.startswith("PEM111_")}
    env.update(settings, PEM111_DATA_DIR=str(tmp_path / "data"), PEM111_LOG_FORMAT="text", PEM111_PORT="0")

    result = subprocess.run([*nhs111_command(), "serve"], env=env, capture_output=True, text=True, timeout=60)

    assert result.returncode == 2, result.stdout + result.stderr
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert len(lines) == 1 and " ERROR " in lines[0] and expected in lines[0], lines
    assert not (tmp_path / "data").exists()  # refused before anything was opened


# == the pieces, in process =========================================================================================


def _peercert(*rdns: tuple[tuple[str, str], ...]) -> dict[str, object]:
    """What ``getpeercert()`` gives: the subject's RDNs in certificate order (least specific first)."""
    return {"subject": rdns}


GOOD_RDNS = ((("countryName", "GB"),), (("organizationName", "NHS111 adaptor tests"),), (("commonName", "good"),))
GOOD = _peercert(*GOOD_RDNS)


def test_subjects_as_common_names_and_as_rfc_4514_names() -> None:
    by_cn = SubjectAllowList.parse(["GOOD"])
    by_dn = SubjectAllowList.parse(["cn=good,  o=NHS111   Adaptor Tests,C=gb"])
    reversed_dn = SubjectAllowList.parse(["C=GB,O=NHS111 adaptor tests,CN=good"])
    partial_dn = SubjectAllowList.parse(["CN=good"])

    assert by_cn.allows(GOOD) and by_dn.allows(GOOD)
    assert not reversed_dn.allows(GOOD) and not partial_dn.allows(GOOD)
    assert SubjectAllowList.parse([]).allows(GOOD)  # no list: any certificate the CA issued
    assert format_subject(GOOD) == "CN=good,O=NHS111 adaptor tests,C=GB"


def test_rfc_4514_escapes_and_multi_valued_rdns() -> None:
    awkward = _peercert(
        (("organizationName", "Smith, Jones + Co"),),
        (("commonName", "#1 ;x"), ("userId", "u1")),
    )
    written = format_subject(awkward)
    assert written == "CN=\\#1 \\;x+UID=u1,O=Smith\\, Jones \\+ Co"
    assert parse_dn(written) == parse_dn("UID=u1+CN=\\231 \\;x,O=Smith\\2C Jones \\+ Co")
    assert SubjectAllowList.parse([written]).allows(awkward)
    assert Settings.from_env({"PEM111_TLS_CLIENT_SUBJECTS": f"{written};\nother"}).tls_client_subjects == (
        written,
        "other",
    )


def test_a_common_name_entry_matches_only_a_subject_with_that_one_cn() -> None:
    by_cn = SubjectAllowList.parse(["good"])
    two_rdns = _peercert(*GOOD_RDNS, (("commonName", "someone else"),))
    multi_valued = _peercert((("countryName", "GB"),), (("commonName", "good"), ("commonName", "other")))
    twice = _peercert((("commonName", "good"),), (("commonName", "good"),))
    no_cn = _peercert((("countryName", "GB"),), (("organizationName", "good"),))
    assert by_cn.allows(GOOD)
    for subject in (two_rdns, multi_valued, twice, no_cn):
        assert not by_cn.allows(subject), format_subject(subject)
    # Either CN alone on the list does not admit the certificate that has both.
    assert not SubjectAllowList.parse(["good", "someone else"]).allows(two_rdns)


def test_a_full_name_entry_compares_every_attribute() -> None:
    by_dn = SubjectAllowList.parse(["CN=good,O=NHS111 adaptor tests,C=GB"])
    extra_rdn = _peercert(*GOOD_RDNS, (("organizationalUnitName", "x"),))
    extra_in_rdn = _peercert(*GOOD_RDNS[:2], (("commonName", "good"), ("userId", "u")))
    missing = _peercert((("organizationName", "NHS111 adaptor tests"),), (("commonName", "good"),))
    assert by_dn.allows(GOOD)
    for subject in (extra_rdn, extra_in_rdn, missing):
        assert not by_dn.allows(subject), format_subject(subject)
    # A repeated attribute in a multi-valued RDN counts: "CN=a+CN=a" is not "CN=a".
    repeated = _peercert((("commonName", "a"), ("commonName", "a")))
    assert not SubjectAllowList.parse(["CN=a"]).allows(repeated)
    assert SubjectAllowList.parse(["CN=a+CN=a"]).allows(repeated)


@pytest.mark.parametrize("text", ["CN=a,O", "=a", "C N=a", "CN=a\\q", "CN=#0403", 'CN=a"b', "CN=\\ff"])
def test_malformed_names_are_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="PEM111_TLS_CLIENT_SUBJECTS"):
        SubjectAllowList.parse([text])


def test_a_failed_reload_keeps_the_previous_context(pki: TlsPki, tmp_path: Path) -> None:
    crl = tmp_path / "crl.pem"
    shutil.copy(pki.crl, crl)
    settings = Settings.from_env({key: value for key, value in tls_settings(pki, PEM111_TLS_CRL=str(crl)).items()})
    tls = ServerTls(settings)
    context = tls.context
    assert not tls.reload_if_changed()  # nothing changed

    crl.write_text("-----BEGIN X509 CRL-----\nbroken\n-----END X509 CRL-----\n")
    assert not tls.reload_if_changed() and tls.context is context
    assert not tls.reload_if_changed()  # the broken file is reported once, not retried until it changes

    shutil.copy(pki.crl_before_revocation, crl)
    assert tls.reload_if_changed() and tls.context is not context
