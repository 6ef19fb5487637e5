"""``/readyz``: 200 while the store takes writes and the delivery target is reachable, 503 naming the failing check
otherwise, and 200 again once it is back; against real servers (``nhs111 serve``), a real RabbitMQ node and a real
PostgreSQL server that the tests stop and start. The checks' building blocks are tested in-process first."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from brokers import PrivateRabbitMQ
from conftest import require_shared
from itk_factory import RECIPIENT_DOS, RECIPIENT_ODS
from postgres import PrivatePostgres
from server_fixture import RunningServer, free_port, start_server

from adaptor.config import Settings
from adaptor.delivery.forwarders import DeliveryError
from adaptor.delivery.forwarders.fhir_http import FhirHttpForwarder
from adaptor.delivery.forwarders.folder import FolderForwarder
from adaptor.ops.readiness import CachedCheck, CheckResult, check_store_writable
from adaptor.store import MessageStore, StoreError

#: Long enough for the delivery check's cache (5 s) to expire and a broker connect to time out (5 s).
FLIP_SECONDS = 30.0


def serve(folder: Path, **settings: str) -> RunningServer:
    """``nhs111 serve`` with the synthetic requests' allow-list."""
    settings.setdefault("PEM111_ITK_ODS_CODE_LIST", RECIPIENT_ODS)
    settings.setdefault("PEM111_ITK_DOS_ID_LIST", RECIPIENT_DOS)
    return start_server(folder, port=None, tls=None, **settings)


def readyz(server: RunningServer, query: str = "") -> requests.Response:
    return requests.get(f"{server.base_url}/readyz{query}", timeout=30)


def wait_for_readyz(server: RunningServer, status: int, timeout: float = FLIP_SECONDS) -> dict[str, Any]:
    """Poll /readyz until it answers ``status``; returns the body."""
    deadline = time.monotonic() + timeout
    response = readyz(server)
    while response.status_code != status and time.monotonic() < deadline:
        time.sleep(0.25)
        response = readyz(server)
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    return body


def assert_ready(body: dict[str, Any], checks: tuple[str, ...] = ("store", "delivery", "allow_list")) -> None:
    assert body["status"] == "ready" and body["failing"] == []
    assert body["checks"] == {name: {"ok": True} for name in checks}


def assert_failing(body: dict[str, Any], check: str) -> None:
    assert body["status"] == "unavailable" and body["failing"] == [check]
    assert body["checks"][check]["ok"] is False and body["checks"][check]["error"]
    assert all(state == {"ok": True} for name, state in body["checks"].items() if name != check)


# == the building blocks ==========================================================================================


def test_a_cached_check_runs_at_most_once_per_ttl_and_shares_a_run() -> None:
    calls: list[float] = []
    gate = threading.Event()

    def probe() -> None:
        calls.append(time.monotonic())
        gate.wait(5)

    check = CachedCheck("test", probe, ttl=60.0, wait=5.0)
    waiters = [check.begin() for _ in range(5)]  # five callers while the first run is in progress
    gate.set()
    assert [waiter() for waiter in waiters] == [CheckResult(True)] * 5
    assert check.result() == CheckResult(True)
    assert len(calls) == 1


def test_a_hanging_check_answers_failed_in_time_and_starts_no_second_run() -> None:
    release = threading.Event()
    runs: list[int] = []

    def probe() -> None:
        runs.append(1)
        release.wait(10)

    check = CachedCheck("hangs", probe, ttl=0.0, wait=0.2)
    started = time.monotonic()
    first, second = check.result(), check.result()
    assert time.monotonic() - started < 2.0
    assert first.ok is False and first.kind == "Timeout" and second.kind == "Timeout"
    assert runs == [1]
    release.set()


def test_a_failing_check_names_the_error_class_and_recovers() -> None:
    failing = [True]

    def probe() -> None:
        if failing[0]:
            raise ConnectionRefusedError(111, "Connection refused")

    check = CachedCheck("flaky", probe, ttl=0.0)
    result = check.result()
    assert result.ok is False and result.kind == "ConnectionRefusedError"
    assert "Connection refused" in (result.error or "")
    failing[0] = False
    assert check.result() == CheckResult(True)


def test_the_store_check_needs_write_access(tmp_path: Path) -> None:
    writable = MessageStore(f"sqlite:///{tmp_path / 'messages.db'}")
    writable.open()
    check_store_writable(writable)
    # The same file opened read-only (what a read-only mount or a PostgreSQL standby amounts to): reads work.
    read_only = MessageStore(f"sqlite:///file:{tmp_path / 'messages.db'}?mode=ro&uri=true")
    assert read_only.count_by_status()
    with pytest.raises(StoreError, match="takes no writes"):
        check_store_writable(read_only)
    assert writable.count_by_status() == read_only.count_by_status()  # the check left nothing behind
    writable.close()
    read_only.close()


def test_the_folder_check_needs_a_folder_that_takes_files(tmp_path: Path) -> None:
    forwarder = FolderForwarder(tmp_path / "outbox")
    forwarder.check()  # creates the folder, as a send would
    assert (tmp_path / "outbox").is_dir() and list((tmp_path / "outbox").iterdir()) == []
    blocked = FolderForwarder(tmp_path / "a-file")
    (tmp_path / "a-file").write_text("not a folder")
    with pytest.raises(DeliveryError, match="cannot take files"):
        blocked.check()


def test_the_http_check_connects_without_sending_a_request(tmp_path: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        forwarder = FhirHttpForwarder(Settings(forward_target=f"http://127.0.0.1:{port}/fhir/Bundle"))
        forwarder.check()
        connection, _ = listener.accept()
        with connection:
            connection.settimeout(1.0)
            assert connection.recv(100) == b""  # connected, then closed: not a byte of HTTP
    closed = FhirHttpForwarder(Settings(forward_target=f"http://127.0.0.1:{free_port()}/fhir/Bundle"))
    with pytest.raises(DeliveryError, match="ConnectionRefusedError"):
        closed.check()


# == a real server ================================================================================================


def test_ready_until_the_outbox_folder_is_replaced_by_a_file(tmp_path: Path) -> None:
    server = serve(tmp_path)
    try:
        response = readyz(server)
        assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
        assert_ready(response.json())

        aside = server.outbox.with_name("outbox-aside")
        server.outbox.rename(aside)
        server.outbox.write_text("a file where the outbox folder should be")
        assert_failing(wait_for_readyz(server, 503), "delivery")

        server.outbox.unlink()
        aside.rename(server.outbox)
        assert_ready(wait_for_readyz(server, 200))
        assert requests.get(f"{server.base_url}/healthz", timeout=10).status_code == 200
    finally:
        server.stop()
    log = server.log_text()
    assert '"event": "readiness check failing", "check": "delivery"' in log
    assert '"event": "readiness check passes again", "check": "delivery"' in log


def test_the_check_parameter_limits_the_answer(tmp_path: Path) -> None:
    server = serve(tmp_path)
    try:
        server.outbox.parent.mkdir(parents=True, exist_ok=True)
        server.outbox.write_text("not a folder")
        only_store = readyz(server, "?check=store")
        assert only_store.status_code == 200 and only_store.json()["checks"] == {"store": {"ok": True}}
        both = readyz(server, "?check=store&check=delivery")
        assert both.status_code == 503 and both.json()["failing"] == ["delivery"]
        assert readyz(server, "?check=database").status_code == 400
    finally:
        server.stop()


def test_the_schema_rules_in_force_are_logged_and_named_with_the_missing_schemas(tmp_path: Path) -> None:
    """Informational: a pack folder without the schemas does not fail readiness, but /readyz names what is missing
    and the start-up line which rules are active (D5 also needs saxonche, which the test environment lacks)."""
    empty_pack = tmp_path / "pack"
    empty_pack.mkdir()
    server = serve(tmp_path / "server", PEM111_SCHEMA_DIR=str(empty_pack), PEM111_LOG_FORMAT="text")
    try:
        body = wait_for_readyz(server, 200)
        assert body["schemas"] == {
            "rules": {
                "C18": "active",
                "D4": "skipped: schema missing",
                "D5": "skipped: schema missing",
                "D6": "skipped: schema missing",
            },
            "missing": [
                "iuc/Schemas/POCD_MT000002UK01.xsd",
                "iuc/Schemas/POCD_MT200001GB02.xsd",
                "iuc/Transforms/TrueCDAToCDALike_v2.xsl",
                "pathways/pathwaysCase_v2.4.xsd",
            ],
        }
        skipped = "D4 (schema missing); D5 (schema missing); D6 (schema missing)"
        assert f'schema validation rules rules_active=C18 rules_skipped="{skipped}"' in server.log_text()
    finally:
        server.stop()

    pack = require_shared("schemas")
    server = serve(tmp_path / "with-pack", PEM111_SCHEMA_DIR=str(pack), PEM111_CDA_LEVEL2_VALIDATION="off")
    try:
        rules = wait_for_readyz(server, 200)["schemas"]
        assert rules == {
            "rules": {
                "C18": "active",
                "D4": "active",
                "D5": "skipped: PEM111_CDA_LEVEL2_VALIDATION=off",
                "D6": "active",
            },
            "missing": [],
        }
    finally:
        server.stop()


def test_an_allow_list_that_was_never_fetched_is_not_ready(tmp_path: Path) -> None:
    server = start_server(
        tmp_path,
        PEM111_ITK_ODS_CODE_LIST="",
        PEM111_ITK_DOS_ID_LIST="",
        PEM111_ITK_EXTERNAL_CONFIGURATION_URL=f"http://127.0.0.1:{free_port()}/allow-list.json",
    )
    try:
        assert_failing(wait_for_readyz(server, 503), "allow_list")
    finally:
        server.stop()


@pytest.mark.parametrize("protocol", ["1.0", "0-9-1"])
def test_readyz_follows_the_broker(
    rabbitmq: PrivateRabbitMQ,
    tmp_path: Path,
    protocol: str,
) -> None:
    server = serve(
        tmp_path,
        PEM111_FORWARD_TARGET=rabbitmq.url,
        PEM111_AMQP_QUEUE_NAME=rabbitmq.unique_queue(),
        PEM111_AMQP_PROTOCOL=protocol,
        PEM111_AMQP_USERNAME=rabbitmq.username,
        PEM111_AMQP_PASSWORD=rabbitmq.password,
    )
    try:
        assert_ready(wait_for_readyz(server, 200))
        rabbitmq.stop()
        assert_failing(wait_for_readyz(server, 503), "delivery")
        rabbitmq.start()
        assert_ready(wait_for_readyz(server, 200))
    finally:
        server.stop()


def test_readyz_follows_the_postgresql_store(
    running_postgres: PrivatePostgres,
    tmp_path: Path,
) -> None:
    server = serve(tmp_path, PEM111_DATABASE_URL=running_postgres.new_database())
    try:
        assert_ready(wait_for_readyz(server, 200))
        running_postgres.stop()
        assert_failing(wait_for_readyz(server, 503), "store")
        running_postgres.start()
        assert_ready(wait_for_readyz(server, 200))
    finally:
        server.stop()

