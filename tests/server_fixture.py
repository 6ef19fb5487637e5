"""A real ``nhs111 serve`` process for black-box tests: free port, temporary data folder, ``dir:`` outbox.

    server = start_server(tmp_path, PEM111_SOAP_VALIDATION_ENABLED="true")
    try:
        requests.post(server.report_url, data=..., headers=...)
    finally:
        server.stop()

With ``PEM111_TLS_CERT`` among the settings the server speaks HTTPS: pass ``tls=ClientTls(ca_cert, cert, key)``,
which the readiness check uses (and :attr:`RunningServer.requests_kwargs` gives to ``requests``).

The corpus of reference requests lives in ``../shared`` (read, never copied); :func:`corpus_requests` uses
``conftest.require_shared``: a missing corpus fails the test when ``CI`` is set and skips it otherwise.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conftest import REPO, SHARED, require_shared
from lxml import etree

from adaptor.store import MessageStore, Status, StoredMessage

SCHEMA_PACK = SHARED / "schemas"

SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
ITK = "urn:nhs-itk:ns:201005"
DOS_ADDRESS_TYPE = "2.16.840.1.113883.2.1.3.2.4.18.44"
ODS_ADDRESS_PREFIX = "urn:nhs-uk:addressing:ods:"
SENDER_PREFIX = "urn:nhs-uk:identity:ods:"

STARTUP_TIMEOUT_SECONDS = 30.0
DELIVERY_TIMEOUT_SECONDS = 30.0


def require_corpus() -> Path:
    """The reference corpus folder (see :func:`conftest.require_shared`)."""
    return require_shared("corpus", "reference")


def corpus_requests() -> list[Path]:
    """Every SOAP request in the reference corpus, sorted by name."""
    folder = require_corpus()
    return sorted(p for p in folder.glob("*.xml") if etree.parse(str(p)).getroot().tag == f"{{{SOAP11}}}Envelope")


@dataclass(frozen=True)
class CorpusAddresses:
    """What the corpus requests are addressed to and sent by: the allow-lists for a server under test."""

    ods_codes: tuple[str, ...]
    dos_ids: tuple[str, ...]
    senders: tuple[str, ...]


def corpus_addresses() -> CorpusAddresses:
    ods, dos, senders = set(), set(), set()
    for path in corpus_requests():
        root = etree.parse(str(path)).getroot()
        for address in root.iter(f"{{{ITK}}}address"):
            uri = (address.get("uri") or "").strip()
            if address.get("type") == DOS_ADDRESS_TYPE:
                dos.add(uri)
            elif uri.startswith(ODS_ADDRESS_PREFIX):
                ods.add(uri[len(ODS_ADDRESS_PREFIX) :].split(":")[0])
        for identity in root.iterfind(f".//{{{ITK}}}auditIdentity/{{{ITK}}}id"):
            uri = identity.get("uri") or ""
            if uri.startswith(SENDER_PREFIX):
                senders.add(uri[len(SENDER_PREFIX) :].split(":")[0])
    return CorpusAddresses(tuple(sorted(ods)), tuple(sorted(dos)), tuple(sorted(senders)))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def nhs111_command() -> list[str]:
    """The installed ``nhs111`` script of the running interpreter's environment (or the CLI via ``-c``)."""
    script = Path(sys.executable).parent / "nhs111"
    if script.exists():
        return [str(script)]
    found = shutil.which("nhs111")
    if found:
        return [found]
    return [sys.executable, "-c", "from adaptor.cli.commands import main; main()"]


@dataclass(frozen=True)
class ClientTls:
    """How a test client talks to a server under TLS: the CA that issued the server's certificate, and for
    mutual TLS the client's certificate and key."""

    ca_cert: Path
    cert: Path | None = None
    key: Path | None = None

    def context(self) -> ssl.SSLContext:
        """A client context that verifies the server (certificate and host name) and presents the client's."""
        context = ssl.create_default_context(cafile=str(self.ca_cert))
        if self.cert is not None:
            context.load_cert_chain(self.cert, self.key)
        return context

    def requests_kwargs(self) -> dict[str, Any]:
        """``verify=`` and ``cert=`` for ``requests``."""
        kwargs: dict[str, Any] = {"verify": str(self.ca_cert)}
        if self.cert is not None:
            kwargs["cert"] = (str(self.cert), str(self.key)) if self.key else str(self.cert)
        return kwargs


@dataclass
class RunningServer:
    process: subprocess.Popen[bytes]
    port: int
    data_dir: Path
    outbox: Path
    log_path: Path
    env: dict[str, str]
    tls: ClientTls | None = None

    @property
    def base_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def requests_kwargs(self) -> dict[str, Any]:
        """What ``requests`` needs to reach this server (nothing over plain HTTP)."""
        return self.tls.requests_kwargs() if self.tls else {}

    @property
    def report_url(self) -> str:
        return f"{self.base_url}/report"

    @property
    def database_url(self) -> str:
        return self.env.get("PEM111_DATABASE_URL") or f"sqlite:///{self.data_dir.resolve() / 'messages.db'}"

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def memory_mb(self) -> tuple[float, float]:
        """The process's resident set size now and its peak since start (or :meth:`reset_peak_memory`), in MiB:
        ``VmRSS`` and ``VmHWM`` from ``/proc``."""
        fields = {}
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                fields[name] = int(value.split()[0]) / 1024
        return fields["VmRSS"], fields["VmHWM"]

    def reset_peak_memory(self) -> None:
        """Start the peak (``VmHWM``) again from the current resident set size (Linux: ``clear_refs``)."""
        Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")

    def outbox_files(self) -> list[Path]:
        return sorted(p for p in self.outbox.rglob("*") if p.is_file()) if self.outbox.exists() else []

    def stored(self, message_id: str) -> list[StoredMessage]:
        """Every stored record with this MessageID, oldest first (read from the server's database)."""
        store = MessageStore(self.database_url)
        try:
            return store.find_by_message_id(message_id)
        finally:
            store.close()

    def wait_for_status(
        self,
        message_id: str,
        *statuses: Status,
        records: int = 1,
        timeout: float = DELIVERY_TIMEOUT_SECONDS,
    ) -> list[StoredMessage]:
        """Wait until ``records`` records with this MessageID are stored and each is in one of ``statuses``
        (default: delivered); returns them. The outbox delivers after the answer, so tests wait for it."""
        wanted = set(statuses or (Status.DELIVERED,))
        deadline = time.monotonic() + timeout
        found: list[StoredMessage] = []
        while time.monotonic() < deadline:
            found = self.stored(message_id)
            if len(found) >= records and all(m.status in wanted for m in found):
                return found
            time.sleep(0.05)
        states = [m.status.value for m in found]
        raise AssertionError(f"{message_id}: records in {states}, want {records} in {sorted(wanted)}")

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, then wait; kills the process if it does not stop in ``timeout`` seconds."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.process.returncode


def start_server(
    folder: Path, *, port: int | None = None, tls: ClientTls | None = None, **settings: str
) -> RunningServer:
    """Start ``nhs111 serve`` with the corpus allow-list (unless overridden); wait until /healthz answers.

    ``settings`` are ``PEM111_*`` variables; ``port`` defaults to a free one. Starting again in the same
    ``folder`` (after a stop or a kill) reuses its database and outbox. A server with ``PEM111_TLS_CERT`` is
    reached with ``tls`` (required then).
    """
    if settings.get("PEM111_TLS_CERT") and tls is None:
        raise ValueError("a server with PEM111_TLS_CERT speaks HTTPS only: pass tls=ClientTls(...)")
    folder.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    data_dir = folder / "data"
    outbox = folder / "outbox"
    env = {key: value for key, value in os.environ.items() if not key.startswith("PEM111_")}
    env.update(
        {
            "PEM111_HOST": "127.0.0.1",
            "PEM111_PORT": str(port),
            "PEM111_DATA_DIR": str(data_dir),
            "PEM111_FORWARD_TARGET": f"dir:{outbox}",
            "PEM111_LOG_LEVEL": "info",
        }
    )
    if "PEM111_ITK_ODS_CODE_LIST" not in settings or "PEM111_ITK_DOS_ID_LIST" not in settings:
        # Only then is the corpus needed (tests with synthetic requests name their own lists).
        addresses = corpus_addresses()
        env["PEM111_ITK_ODS_CODE_LIST"] = ",".join(addresses.ods_codes)
        env["PEM111_ITK_DOS_ID_LIST"] = ",".join(addresses.dos_ids)
    if SCHEMA_PACK.is_dir():
        env["PEM111_SCHEMA_DIR"] = str(SCHEMA_PACK)
    env.update(settings)
    env = {key: value for key, value in env.items() if value is not None}
    log_path = folder / "server.log"
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(
            [*nhs111_command(), "serve"], cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT
        )
    server = RunningServer(process, port, data_dir, outbox, log_path, env, tls)
    context = tls.context() if tls else None
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"nhs111 serve exited with {process.returncode}:\n{server.log_text()}")
        try:
            with urllib.request.urlopen(f"{server.base_url}/healthz", timeout=2, context=context) as response:
                if response.status == 200:
                    return server
        except (urllib.error.URLError, ConnectionError, TimeoutError, ssl.SSLError):
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"nhs111 serve did not answer /healthz within {STARTUP_TIMEOUT_SECONDS} s:\n{server.log_text()}")


def start_servers(folder: Path, count: int, **settings: str) -> list[RunningServer]:
    """Start ``count`` servers at the same moment, each with its own sub-folder of ``folder`` and its own port
    (replicas: give them one ``PEM111_DATABASE_URL``, and they also race to create its schema). When one fails to
    start, the others are stopped and its error raised."""
    started: dict[int, RunningServer] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(count)

    def start(index: int) -> None:
        try:
            barrier.wait()
            started[index] = start_server(folder / f"replica-{index}", **settings)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        for server in started.values():
            server.stop()
        raise errors[0]
    return [started[index] for index in range(count)]
