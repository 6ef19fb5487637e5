"""FHIR over HTTP: the forwarder against a real HTTP(S) server on 127.0.0.1 (see ``fhir_server.py``).

What is proved here: the Bundle arrives byte for byte with its headers; every class of answer is classified
(2xx delivered, 4xx permanent except 408/425/429, 3xx permanent and not followed, 5xx transient); network
failures (refused, timeout) are transient and quick; over https the server is verified against the CA bundle
and host name, and mutual TLS presents the client certificate. No mocks: every case crosses a real socket.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import require_shared
from fhir_server import FhirServer, Pki, free_port, make_pki, server_tls
from itk_factory import sample_delivery as delivery

from adaptor.config import ConfigError, Settings
from adaptor.delivery.conversion import convert as convert_request
from adaptor.delivery.conversion import read_request
from adaptor.delivery.forwarders import Delivery, DeliveryError, PermanentDeliveryError, forwarder_from_settings
from adaptor.delivery.forwarders.fhir_http import FhirHttpForwarder, HttpRejectedError, HttpStatusError

OPERATION_OUTCOME = {
    "resourceType": "OperationOutcome",
    "issue": [{"severity": "error", "code": "invalid", "diagnostics": "Bundle.type must be 'message'"}],
}




def forwarder(url: str, **settings: object) -> FhirHttpForwarder:
    return FhirHttpForwarder(Settings(forward_target=url).replace(**settings))


@pytest.fixture
def server() -> Iterator[FhirServer]:
    with FhirServer() as running:
        yield running


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


# -- the request -----------------------------------------------------------------------------------------------


def test_posts_the_converted_bundle_with_its_headers(server: FhirServer) -> None:
    folder = require_shared("corpus", "reference")
    request = sorted(folder.glob("*-itk-request.xml"))[0].read_bytes()
    _, envelope = read_request(request)
    bundle = convert_request(request, now=datetime(2022, 5, 12, 7, 25, 14, tzinfo=UTC))
    bundle_json = json.dumps(bundle, ensure_ascii=False).encode("utf-8")  # as the receiver service encodes it
    message = Delivery(
        record_id="rec-1",
        message_id=envelope.message_id,
        tracking_id="TRACK-9",
        interaction=envelope.interaction,
        ods_codes=("A91000",),
        dos_ids=("2000012345", "2000067890"),
        bundle_json=bundle_json,
    )
    server.reply(201, json.dumps({"resourceType": "Bundle", "id": "server-id"}).encode())
    sender = forwarder(
        server.url + "?tenant=111",
        fhir_headers=(("X-Api-Key", "key-123"), ("Accept", "application/fhir+json; fhirVersion=3.0")),
        fhir_bearer_token="token-abc",
    )
    try:
        sender.send(message)
    finally:
        sender.close()

    [seen] = server.requests
    assert (seen.method, seen.path) == ("POST", "/fhir/Bundle?tenant=111")
    assert seen.body == bundle_json
    assert json.loads(seen.body)["resourceType"] == "Bundle"
    headers = seen.headers
    assert headers["content-type"] == "application/fhir+json; charset=utf-8"
    assert headers["accept"] == "application/fhir+json; fhirVersion=3.0"  # configured headers override Accept
    assert headers["authorization"] == "Bearer token-abc"
    assert headers["x-api-key"] == "key-123"
    assert headers["x-message-id"] == envelope.message_id
    assert headers["x-tracking-id"] == "TRACK-9"
    assert headers["x-interaction"] == envelope.interaction
    assert headers["x-ods-code"] == "A91000"
    assert headers["x-dos-service-id"] == "2000012345,2000067890"
    assert headers["content-length"] == str(len(bundle_json))


def test_the_target_hides_credentials_and_query_but_requests_use_them(server: FhirServer) -> None:
    url = server.url.replace("http://", "http://user%40x:p%3Ass@") + "?_apikey=secret#fragment"
    sender = forwarder(url)
    assert sender.target == server.url
    assert "secret" not in sender.target and "p%3Ass" not in sender.target
    sender.send(delivery())
    sender.close()
    [seen] = server.requests
    assert seen.path == "/fhir/Bundle?_apikey=secret"
    assert seen.headers["authorization"] == "Basic dXNlckB4OnA6c3M="  # base64("user@x:p:ss")


def test_property_values_cannot_inject_headers(server: FhirServer) -> None:
    sender = forwarder(server.url)
    sender.send(delivery(message_id="MSG-1\r\nX-Injected: yes"))
    sender.send(delivery(message_id="café 100%"))
    sender.close()
    first, second = server.requests
    assert "x-injected" not in first.headers
    assert first.headers["x-message-id"] == "MSG-1%0D%0AX-Injected: yes"
    assert second.headers["x-message-id"] == "caf%C3%A9 100%25"


def test_connections_are_kept_alive_and_shared_between_threads(server: FhirServer) -> None:
    sender = forwarder(server.url)
    sender.send(delivery())
    sender.send(delivery())
    first, second = server.requests
    assert first.client_port == second.client_port, "the second POST should reuse the first connection"

    errors: list[BaseException] = []

    def send_many() -> None:
        try:
            for _ in range(5):
                sender.send(delivery())
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=send_many) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(server.requests) == 2 + 8 * 5

    sender.close()  # and usable again afterwards: it reconnects
    sender.send(delivery())
    assert server.requests[-1].client_port != first.client_port
    sender.close()


def test_a_connection_the_server_closed_while_idle_is_replaced_not_failed() -> None:
    # Receivers close idle keep-alive connections; the pool must notice rather than fail the next message.
    with FhirServer(idle_timeout=0.2) as short_lived:
        sender = forwarder(short_lived.url)
        sender.send(delivery())
        time.sleep(0.6)
        sender.send(delivery())
        sender.close()
        first, second = short_lived.requests
        assert first.client_port != second.client_port


# -- the answer ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 201, 202, 204])
def test_2xx_is_delivered(server: FhirServer, status: int) -> None:
    server.reply(status, b"" if status == 204 else b'{"resourceType":"OperationOutcome","issue":[]}')
    sender = forwarder(server.url)
    sender.send(delivery())
    sender.send(delivery())  # the connection is still usable after each kind of answer
    sender.close()
    assert len(server.requests) == 2


def test_a_large_success_body_is_not_read_whole(server: FhirServer) -> None:
    server.reply(200, b"x" * (2 * 1024 * 1024), {"Content-Type": "application/fhir+json"})
    sender = forwarder(server.url)
    sender.send(delivery())
    sender.send(delivery())  # the abandoned connection was closed, not reused half-read
    sender.close()
    assert len(server.requests) == 2


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 413, 415, 422])
def test_4xx_is_permanent_with_the_operation_outcome(server: FhirServer, status: int) -> None:
    server.reply(status, json.dumps(OPERATION_OUTCOME).encode(), {"Content-Type": "application/fhir+json"})
    sender = forwarder(server.url)
    with pytest.raises(PermanentDeliveryError) as caught:
        sender.send(delivery(bundle_json=b'{"resourceType":"Bundle","id":"REQUEST-BODY-MARKER"}'))
    sender.close()
    error = caught.value
    assert isinstance(error, HttpRejectedError)
    assert error.status == status
    assert str(error) == f"HTTP {status}: OperationOutcome: error invalid Bundle.type must be 'message'"
    assert "REQUEST-BODY-MARKER" not in str(error)


def test_a_refusal_quotes_only_a_short_one_line_snippet(server: FhirServer) -> None:
    server.reply(400, b"<html>\n  <body>" + b"bad request " * 100 + b"</body></html>", {"Content-Type": "text/html"})
    sender = forwarder(server.url)
    with pytest.raises(PermanentDeliveryError) as caught:
        sender.send(delivery())
    sender.close()
    detail = caught.value.detail if isinstance(caught.value, HttpStatusError) else ""
    assert detail.startswith("<html> <body>bad request bad request")
    assert len(detail) <= 200 and detail.endswith("…") and "\n" not in str(caught.value)


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504])
def test_408_429_and_5xx_are_transient(server: FhirServer, status: int) -> None:
    server.reply(status, json.dumps(OPERATION_OUTCOME).encode(), {"Retry-After": "120"})
    sender = forwarder(server.url)
    with pytest.raises(DeliveryError) as caught:
        sender.send(delivery())
    sender.close()
    assert not isinstance(caught.value, PermanentDeliveryError)
    assert isinstance(caught.value, HttpStatusError) and caught.value.status == status
    assert str(caught.value).startswith(f"HTTP {status}: Retry-After 120; OperationOutcome: error invalid")


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirects_are_not_followed_and_are_permanent(server: FhirServer, status: int) -> None:
    server.reply(status, headers={"Location": "https://user:pw@elsewhere.example/fhir?key=secret"})
    sender = forwarder(server.url)
    with pytest.raises(PermanentDeliveryError) as caught:
        sender.send(delivery())
    sender.close()
    assert len(server.requests) == 1, "the redirect must not be followed"
    message = str(caught.value)
    assert "https://elsewhere.example/fhir" in message and "PEM111_FORWARD_TARGET" in message
    assert "secret" not in message and "pw" not in message


# -- the network -----------------------------------------------------------------------------------------------


def test_a_server_that_is_down_is_a_quick_transient_failure() -> None:
    sender = forwarder(f"http://127.0.0.1:{free_port()}/fhir", fhir_timeout_seconds=10.0)
    started = time.monotonic()
    with pytest.raises(DeliveryError) as caught:
        sender.send(delivery())
    assert time.monotonic() - started < 2.0
    assert not isinstance(caught.value, PermanentDeliveryError)
    assert "ConnectionRefusedError" in str(caught.value) or "NewConnectionError" in str(caught.value)


def test_a_slow_server_times_out_as_a_transient_failure(server: FhirServer) -> None:
    server.reply(200, delay=10.0)
    sender = forwarder(server.url, fhir_timeout_seconds=0.5)
    started = time.monotonic()
    with pytest.raises(DeliveryError) as caught:
        sender.send(delivery())
    elapsed = time.monotonic() - started
    sender.close()
    # Well before the server's 10 s answer: the timeout gave up, however busy the machine (no finer bound).
    assert 0.4 <= elapsed < 8.0, f"gave up after {elapsed:.2f}s with a 0.5s timeout"
    assert not isinstance(caught.value, PermanentDeliveryError)
    assert "ReadTimeoutError" in str(caught.value)


# -- TLS -------------------------------------------------------------------------------------------------------


def test_https_verifies_the_server_against_the_ca_bundle(pki: Pki) -> None:
    with FhirServer(tls=server_tls(pki.server_cert, pki.server_key)) as tls_server:
        sender = forwarder(tls_server.url, fhir_ca_bundle=str(pki.ca_cert))
        sender.send(delivery())
        sender.close()

        # Without the bundle the test CA is unknown (system trust store): refused before anything is sent.
        untrusting = forwarder(tls_server.url)
        with pytest.raises(DeliveryError) as caught:
            untrusting.send(delivery())
        untrusting.close()
        assert not isinstance(caught.value, PermanentDeliveryError)
        assert "SSLError" in str(caught.value)
        assert len(tls_server.requests) == 1


def test_https_refuses_a_server_certificate_from_another_ca(pki: Pki) -> None:
    with FhirServer(tls=server_tls(pki.untrusted_server_cert, pki.untrusted_server_key)) as tls_server:
        sender = forwarder(tls_server.url, fhir_ca_bundle=str(pki.ca_cert))
        with pytest.raises(DeliveryError) as caught:
            sender.send(delivery())
        sender.close()
        assert not isinstance(caught.value, PermanentDeliveryError)
        assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value) or "SSLError" in str(caught.value)
        assert tls_server.requests == []


def test_https_checks_the_host_name(pki: Pki) -> None:
    with FhirServer(tls=server_tls(pki.wrong_host_cert, pki.wrong_host_key)) as tls_server:
        sender = forwarder(tls_server.url, fhir_ca_bundle=str(pki.ca_cert))
        with pytest.raises(DeliveryError) as caught:
            sender.send(delivery())
        sender.close()
        assert not isinstance(caught.value, PermanentDeliveryError)
        assert tls_server.requests == []


def test_mutual_tls_presents_the_client_certificate(pki: Pki) -> None:
    context = server_tls(pki.server_cert, pki.server_key, client_ca=pki.ca_cert, require_client_cert=True)
    with FhirServer(tls=context) as tls_server:
        sender = forwarder(
            tls_server.url,
            fhir_ca_bundle=str(pki.ca_cert),
            fhir_client_cert=str(pki.client_cert),
            fhir_client_key=str(pki.client_key),
        )
        sender.send(delivery())
        sender.close()
        [seen] = tls_server.requests
        assert seen.client_cert_subject == "nhs111-adaptor-test-client"


def test_mutual_tls_without_a_client_certificate_is_transient(pki: Pki) -> None:
    # Transient, not permanent: the handshake failure says nothing about this Bundle, and installing the
    # certificate (or trusting it on the server) lets the very same message through.
    context = server_tls(pki.server_cert, pki.server_key, client_ca=pki.ca_cert, require_client_cert=True)
    with FhirServer(tls=context) as tls_server:
        sender = forwarder(tls_server.url, fhir_ca_bundle=str(pki.ca_cert), fhir_timeout_seconds=5.0)
        started = time.monotonic()
        with pytest.raises(DeliveryError) as caught:
            sender.send(delivery())
        sender.close()
        assert time.monotonic() - started < 4.0
        assert not isinstance(caught.value, PermanentDeliveryError)
        assert tls_server.requests == []
        # The server's alert can reach the client before the server thread records its side of the failure.
        deadline = time.monotonic() + 2.0
        while not tls_server.tls_failures and time.monotonic() < deadline:
            time.sleep(0.01)
        assert tls_server.tls_failures, "the server should have refused the handshake"


def test_a_client_key_inside_the_certificate_file_is_enough(pki: Pki, tmp_path: Path) -> None:
    combined = tmp_path / "client-with-key.pem"
    combined.write_bytes(pki.client_cert.read_bytes() + pki.client_key.read_bytes())
    context = server_tls(pki.server_cert, pki.server_key, client_ca=pki.ca_cert, require_client_cert=True)
    with FhirServer(tls=context) as tls_server:
        sender = forwarder(tls_server.url, fhir_ca_bundle=str(pki.ca_cert), fhir_client_cert=str(combined))
        sender.send(delivery())
        sender.close()
        assert [r.client_cert_subject for r in tls_server.requests] == ["nhs111-adaptor-test-client"]


# -- configuration ---------------------------------------------------------------------------------------------


def test_the_factory_builds_it_for_http_and_https_targets() -> None:
    for url in ("http://fhir.example/Bundle", "HTTPS://fhir.example:8443/base/$process-message"):
        built = forwarder_from_settings(Settings(forward_target=url))
        assert isinstance(built, FhirHttpForwarder)
        built.close()
    assert built.target == "https://fhir.example:8443/base/$process-message"


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"forward_target": "https:///no-host"}, "PEM111_FORWARD_TARGET"),
        ({"forward_target": "https://fhir.example:99999/x"}, "PEM111_FORWARD_TARGET"),
        ({"fhir_headers": (("Content-Type", "application/json"),)}, "PEM111_FHIR_HEADERS"),
        ({"fhir_headers": (("x-message-id", "fixed"),)}, "PEM111_FHIR_HEADERS"),
        ({"fhir_headers": (("Bad Name", "v"),)}, "PEM111_FHIR_HEADERS"),
        ({"fhir_headers": (("X-Key", "a\r\nX-Evil: 1"),)}, "PEM111_FHIR_HEADERS"),
        ({"fhir_headers": (("Authorization", "Basic abc"),), "fhir_bearer_token": "t"}, "PEM111_FHIR_BEARER_TOKEN"),
        ({"fhir_bearer_token": "line\nbreak"}, "PEM111_FHIR_BEARER_TOKEN"),
        ({"forward_target": "https://u:p@fhir.example/x", "fhir_bearer_token": "t"}, "PEM111_FHIR_BEARER_TOKEN"),
        ({"fhir_client_key": "/nonexistent/client.key"}, "PEM111_FHIR_CLIENT_CERT"),
        ({"fhir_client_cert": "/nonexistent/client.pem"}, "PEM111_FHIR_CLIENT_CERT"),
        ({"fhir_ca_bundle": "/nonexistent/ca.pem"}, "PEM111_FHIR_CA_BUNDLE"),
    ],
)
def test_unusable_settings_fail_at_start_up_naming_the_variable(changes: dict[str, object], named: str) -> None:
    settings = Settings(forward_target="https://fhir.example/Bundle").replace(**changes)
    with pytest.raises(ConfigError, match=named):
        FhirHttpForwarder(settings)


def test_an_unreadable_certificate_is_a_config_error(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    with pytest.raises(ConfigError, match="PEM111_FHIR_CLIENT_CERT"):
        forwarder("https://fhir.example/Bundle", fhir_client_cert=str(garbage))
    with pytest.raises(ConfigError, match="PEM111_FHIR_CA_BUNDLE"):
        forwarder("https://fhir.example/Bundle", fhir_ca_bundle=str(garbage))
