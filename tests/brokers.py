"""A private RabbitMQ node for tests that need a real AMQP broker (AMQP 0-9-1 and, via its plugin, AMQP 1.0).

The machine's own RabbitMQ (``rabbit@localhost`` on 5672) is shared by everyone and must never be stopped or
reconfigured, so the tests run their own node instead: its own node name, free loopback ports (AMQP, TLS,
Erlang distribution and a private epmd), its own data/log folder, config file and enabled-plugins file
(``rabbitmq_amqp1_0``, so AMQP 1.0 and 0-9-1 share one port), and its own Erlang cookie (``HOME`` points into
the node's folder, so ``rabbitmqctl`` from this module talks to this node and nothing else).

Use it through the fixtures, which ``pytest_plugins`` in ``tests/conftest.py`` registers for every test module: a
test names ``rabbitmq`` and imports only the type it annotates with. There is one node per test process::

    def test_something(rabbitmq: PrivateRabbitMQ) -> None:
        queue = rabbitmq.unique_queue()
        ...                                   # e.g. PEM111_AMQP_BROKER=rabbitmq.url
        [message] = rabbitmq.consume_amqp10(queue, 1, timeout=10)
        rabbitmq.stop()                       # a real, graceful broker shutdown (about 1-3 s)
        rabbitmq.start()                      # same data: durable queues and persistent messages survive (~6 s)
        rabbitmq.kill()                       # a crash: SIGKILL to the Erlang VM; start() recovers
        rabbitmq.pause(); rabbitmq.resume()   # a hung broker: SIGSTOP / SIGCONT, sockets stay open

Other helpers: ``url`` / ``tls_url`` / ``ca_file`` / ``username`` / ``password``, ``unique_queue()``,
``declare_queue()``, ``bind_queue()``, ``delete_queue()``, ``queue_depth()``, ``queue_exists()``,
``queue_is_durable()``, ``consume_091()``, ``rabbitmqctl(*args)`` and ``log_tail()``.

``private_rabbitmq`` (session scope) starts the node once per test session; ``rabbitmq`` (function scope) is
the same node, guaranteed running when the test starts, and resumed / started again afterwards if the test
left it paused, stopped or killed. When no broker can be started the tests are skipped on a developer machine
but FAIL when the ``CI`` environment variable is set.

A watchdog process stops the node if the test process dies without cleaning up, so no broker is left behind.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from unavailable import unavailable

STARTUP_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 30.0
USERNAME = "guest"  # RabbitMQ's default user; it may connect from loopback only, which is all we use
PASSWORD = "guest"
_DEBIAN_SCRIPTS = Path("/usr/lib/rabbitmq/bin")  # the real scripts; /usr/sbin's wrappers su to `rabbitmq`


class BrokerUnavailable(RuntimeError):
    """The private node could not be started (RabbitMQ missing, or it did not come up)."""


@dataclass(frozen=True)
class Received:
    """One message a test consumer took off a queue (and acknowledged).

    ``body`` is the payload as bytes (an AMQP 1.0 ``amqp-value`` string is UTF-8 encoded); ``body_kind`` says
    what it was on the wire: ``"amqp-value:str"``, ``"amqp-value:<type>"`` or ``"data"`` for AMQP 1.0 and
    ``"0-9-1"`` for AMQP 0-9-1. ``properties`` are the AMQP 1.0 application properties or the 0-9-1 headers.
    ``durable`` is the 1.0 header's durable flag or 0-9-1 ``delivery_mode == 2``. ``created`` is the 1.0
    ``creation-time`` or the 0-9-1 ``timestamp``, in seconds.
    """

    body: bytes
    body_kind: str
    properties: dict[str, Any]
    content_type: str | None
    message_id: str | None
    durable: bool
    annotations: dict[str, Any] = field(default_factory=dict)
    created: float | None = None

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _free_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = _free_port()
        if port not in ports:
            ports.append(port)
    return ports


def rabbitmq_scripts_dir() -> Path | None:
    """Where ``rabbitmq-server`` and ``rabbitmqctl`` are: ``$RABBITMQ_SCRIPTS_DIR`` if set, else Debian's or PATH's."""
    override = os.environ.get("RABBITMQ_SCRIPTS_DIR", "")
    candidates = [override] if override else [str(_DEBIAN_SCRIPTS)]
    found = shutil.which("rabbitmq-server")
    if found and not override:
        candidates.append(str(Path(found).resolve().parent))
    for candidate in candidates:
        if (
            candidate
            and (Path(candidate) / "rabbitmq-server").is_file()
            and (Path(candidate) / "rabbitmqctl").is_file()
        ):
            return Path(candidate)
    return None


# Runs in its own process: when the test process disappears without stopping the node, stop it (verifying the
# pid still belongs to our node, whose command line names its own home folder, before signalling it) and the
# private epmd, then exit.
_WATCHDOG = r"""
import os, signal, subprocess, sys, time
parent, pid_file, marker, epmd_port = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False
while alive(parent):
    time.sleep(1)
try:
    pid = int(open(pid_file).read().strip())
    if marker.encode() in open(f"/proc/{pid}/cmdline", "rb").read():
        os.kill(pid, signal.SIGCONT)  # in case a test had paused it
        os.kill(pid, signal.SIGTERM)
        for _ in range(200):
            if not alive(pid):
                break
            time.sleep(0.1)
        else:
            os.kill(pid, signal.SIGKILL)
except (OSError, ValueError):
    pass
env = dict(os.environ, ERL_EPMD_PORT=epmd_port)
subprocess.run(["epmd", "-port", epmd_port, "-kill"], env=env, capture_output=True, timeout=10)
"""


class PrivateRabbitMQ:
    """One RabbitMQ node owned by the test session; see the module docstring.

    ``url`` is ``amqp://127.0.0.1:PORT`` (no credentials: the node has the default ``guest``/``guest``, see
    :data:`USERNAME`, which both AMQP 1.0 SASL PLAIN and 0-9-1 accept; AMQP 1.0 ANONYMOUS maps to ``guest``).
    ``tls_url`` is ``amqps://localhost:TLS_PORT`` with a certificate for ``localhost``/``127.0.0.1`` signed by
    a throwaway CA in ``ca_file`` (``None`` when ``openssl`` is not installed).
    """

    def __init__(self, base_dir: Path, scripts_dir: Path) -> None:
        self.base_dir = Path(base_dir).resolve()
        self.scripts_dir = scripts_dir
        self.port, self.tls_port, self.dist_port, self.epmd_port = _free_ports(4)
        self.node = f"pem111test-{os.getpid()}-{secrets.token_hex(3)}@localhost"
        self.url = f"amqp://127.0.0.1:{self.port}"
        self.username, self.password = USERNAME, PASSWORD
        self.ca_file: Path | None = None
        self.tls_url: str | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._paused: int | None = None
        self._pid_file = self.base_dir / "rabbitmq.pid"
        self._stdout = self.base_dir / "log" / "stdout.log"
        self._home = str(self.base_dir / "home")
        self._prepare()

    # -- lifecycle ------------------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the node's process is alive (it may still be booting; :meth:`start` waits for readiness)."""
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = STARTUP_TIMEOUT_SECONDS) -> None:
        """Start the node (a no-op when it is running) and return once it accepts AMQP 0-9-1 and 1.0 clients.

        Data persists across :meth:`stop` / :meth:`start`: durable queues and persistent messages survive.
        Raises :class:`BrokerUnavailable` (with the log's tail) when the node exits or is not ready in time.
        """
        if not self.running:
            self._stdout.parent.mkdir(parents=True, exist_ok=True)
            with open(self._stdout, "ab") as stdout:
                # Our own session: a Ctrl-C aimed at pytest must not kill the broker behind the fixtures' back.
                self._process = subprocess.Popen(
                    [str(self.scripts_dir / "rabbitmq-server")],
                    env=self._env(),
                    cwd=self.base_dir,
                    stdin=subprocess.DEVNULL,
                    stdout=stdout,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            self._start_watchdog()
        self._wait_until_ready(timeout)

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        """Stop the node gracefully (SIGTERM: what ``rabbitmqctl stop`` does) and wait until its port is closed.

        Takes about 3 s. Falls back to :meth:`kill` if the node has not stopped within ``timeout`` seconds.
        A no-op when the node is not running.
        """
        self.resume()
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            # The rabbitmq-server script relays SIGTERM to the Erlang VM and waits for its clean shutdown.
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                return
        self._process = None
        self._wait_port_closed(timeout)

    def kill(self) -> None:
        """Crash the node: SIGKILL to the Erlang VM, no clean shutdown. :meth:`start` recovers from its data."""
        self.resume()
        beam = self._beam_pid()
        if beam is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(beam, signal.SIGKILL)
        process = self._process
        if process is not None:
            # The rabbitmq-server script reaps the VM and then exits; kill it only if it does not.
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        self._process = None
        self._pid_file.unlink(missing_ok=True)  # RabbitMQ removes it on a clean stop only
        self._wait_port_closed(10)

    def pause(self) -> None:
        """Hang the node: SIGSTOP the Erlang VM. Its sockets stay open but nothing answers (a stuck broker).

        Always :meth:`resume` afterwards (the ``rabbitmq`` fixture does if a test does not).
        """
        beam = self._beam_pid()
        if beam is None:
            raise BrokerUnavailable("the node is not running")
        os.kill(beam, signal.SIGSTOP)
        self._paused = beam
        _wait_until_stopped(beam)

    def resume(self) -> None:
        """Undo :meth:`pause` (a no-op when the node is not paused)."""
        beam, self._paused = self._paused, None
        if beam is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(beam, signal.SIGCONT)

    def close(self) -> None:
        """End of session: stop the node, its private epmd and the watchdog."""
        try:
            self.stop()
        finally:
            env = dict(self._env())
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                subprocess.run(
                    ["epmd", "-port", str(self.epmd_port), "-kill"], env=env, capture_output=True, timeout=10
                )
            watchdog, self._watchdog = self._watchdog, None
            if watchdog is not None and watchdog.poll() is None:
                watchdog.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    watchdog.wait(5)

    def rabbitmqctl(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run ``rabbitmqctl -n NODE ARGS`` against this node (never the machine's); output captured, not checked."""
        return subprocess.run(
            [str(self.scripts_dir / "rabbitmqctl"), "-n", self.node, *args],
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def log_tail(self, lines: int = 60) -> str:
        """The last lines of the node's log and console output, for failure messages."""
        parts = []
        for path in (self.base_dir / "log" / f"{self.node}.log", self._stdout):
            if path.exists():
                text = path.read_text(encoding="utf-8", errors="replace").splitlines()
                parts.append(f"--- {path} ---\n" + "\n".join(text[-lines:]))
        return "\n".join(parts) or "(no log written)"

    # -- queues and consumers ---------------------------------------------------------------------------------

    @staticmethod
    def unique_queue(prefix: str = "test") -> str:
        """A queue name no other test uses, so tests sharing the node never see each other's messages."""
        return f"{prefix}-{uuid.uuid4().hex[:12]}"

    def declare_queue(self, name: str, *, durable: bool = True, arguments: dict[str, Any] | None = None) -> None:
        """Declare a classic queue (durable by default) through AMQP 0-9-1."""
        with self._channel() as channel:
            channel.queue_declare(name, durable=durable, arguments=arguments)

    def bind_queue(self, name: str, exchange: str, routing_key: str) -> None:
        with self._channel() as channel:
            channel.queue_bind(name, exchange, routing_key=routing_key)

    def delete_queue(self, name: str) -> None:
        with self._channel() as channel:
            channel.queue_delete(name)

    def queue_depth(self, name: str) -> int:
        """Messages ready in queue ``name`` (not counting unacknowledged ones); 0 when the queue does not exist."""
        import pika.exceptions

        try:
            with self._channel() as channel:
                return int(channel.queue_declare(name, passive=True).method.message_count)
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code == 404:
                return 0
            raise

    def queue_is_durable(self, name: str) -> bool:
        """Whether existing queue ``name`` is durable (re-declaring it durable succeeds only if it is)."""
        import pika.exceptions

        if not self.queue_exists(name):
            raise AssertionError(f"queue {name!r} does not exist")
        try:
            with self._channel() as channel:
                channel.queue_declare(name, durable=True)  # classic and argument-free, as the forwarders make
            return True
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code == 406:  # PRECONDITION_FAILED: inequivalent arg 'durable'
                return False
            raise

    def queue_exists(self, name: str) -> bool:
        import pika.exceptions

        try:
            with self._channel() as channel:
                channel.queue_declare(name, passive=True)
            return True
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code == 404:
                return False
            raise

    def consume(self, queue: str, protocol: str, count: int, timeout: float = 10.0) -> list[Received]:
        """Read back with the protocol the messages were sent with (``"1.0"`` or ``"0-9-1"``): RabbitMQ 3.x does not
        translate AMQP 1.0 bodies for 0-9-1 consumers."""
        if protocol == "1.0":
            return self.consume_amqp10(queue, count, timeout)
        return self.consume_091(queue, count, timeout)

    def consume_amqp10(self, queue: str, count: int, timeout: float = 10.0) -> list[Received]:
        """Take up to ``count`` messages off ``queue`` over AMQP 1.0, accepting each; stops at ``timeout`` seconds.

        Returns what arrived in time (possibly fewer than ``count``, possibly none): assert on its length. The
        queue must exist (the source is RabbitMQ's ``/amq/queue/NAME``, which never declares anything). Every
        accept has been applied when this returns (see :func:`_detach`), so the queue's depth can be checked at once.
        """
        from proton import Delivery, Timeout
        from proton.utils import BlockingConnection

        received: list[Received] = []
        deadline = time.monotonic() + timeout
        connection = BlockingConnection(
            self.url, timeout=timeout, user=self.username, password=self.password, allowed_mechs="PLAIN"
        )
        try:
            receiver = connection.create_receiver(f"/amq/queue/{queue}", credit=count)
            while len(received) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    message = receiver.receive(timeout=remaining)
                except Timeout:  # nothing more arrived in time
                    break
                received.append(_from_proton(message))
                receiver.settle(Delivery.ACCEPTED)
            _detach(connection, receiver, timeout=max(deadline - time.monotonic(), 5.0))
        finally:
            connection.close()
        return received

    def consume_091(self, queue: str, count: int, timeout: float = 10.0) -> list[Received]:
        """Take up to ``count`` messages off ``queue`` over AMQP 0-9-1 (``basic.get`` + ack) within ``timeout``.

        Like :meth:`consume_amqp10`, returns what arrived in time. A message published over AMQP 1.0 reaches a
        0-9-1 consumer of RabbitMQ 3.x as the encoded AMQP 1.0 sections, not as the original payload.
        """
        received: list[Received] = []
        deadline = time.monotonic() + timeout
        with self._channel() as channel:
            while len(received) < count and time.monotonic() < deadline:
                method, properties, body = channel.basic_get(queue, auto_ack=False)
                if method is None:
                    time.sleep(0.05)
                    continue
                received.append(
                    Received(
                        body=bytes(body),
                        body_kind="0-9-1",
                        properties=dict(properties.headers or {}),
                        content_type=properties.content_type,
                        message_id=properties.message_id,
                        durable=properties.delivery_mode == 2,
                        created=None if properties.timestamp is None else float(properties.timestamp),
                    )
                )
                channel.basic_ack(method.delivery_tag)
        return received

    # -- internals --------------------------------------------------------------------------------------------

    def _prepare(self) -> None:
        for folder in ("home", "mnesia", "log", "conf.d"):
            (self.base_dir / folder).mkdir(parents=True, exist_ok=True)
        cookie = self.base_dir / "home" / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text(secrets.token_hex(20))
            cookie.chmod(0o400)  # Erlang refuses a cookie file others can read
        (self.base_dir / "enabled_plugins").write_text("[rabbitmq_amqp1_0].\n")
        # An empty env file replaces /etc/rabbitmq/rabbitmq-env.conf, whose NODENAME is the machine's node.
        (self.base_dir / "rabbitmq-env.conf").write_text("")
        config = [
            f"listeners.tcp.1 = 127.0.0.1:{self.port}",
            # A nearly full disk must not raise the free-disk alarm and silently block every publisher.
            "disk_free_limit.absolute = 1MB",
            "log.console = false",
            "log.file.level = info",
        ]
        if self._make_certificates():
            config += [
                f"listeners.ssl.1 = 127.0.0.1:{self.tls_port}",
                f"ssl_options.cacertfile = {self.base_dir / 'tls' / 'ca.pem'}",
                f"ssl_options.certfile = {self.base_dir / 'tls' / 'server.pem'}",
                f"ssl_options.keyfile = {self.base_dir / 'tls' / 'server.key'}",
                "ssl_options.verify = verify_none",
                "ssl_options.fail_if_no_peer_cert = false",
            ]
        (self.base_dir / "rabbitmq.conf").write_text("\n".join(config) + "\n")

    def _make_certificates(self) -> bool:
        """A throwaway CA and a server certificate for localhost/127.0.0.1; False when openssl is missing."""
        openssl = shutil.which("openssl")
        if not openssl:
            return False
        tls = self.base_dir / "tls"
        tls.mkdir(exist_ok=True)
        (tls / "server.ext").write_text(
            "subjectAltName = DNS:localhost\nbasicConstraints = CA:FALSE\n"
            "extendedKeyUsage = serverAuth\nkeyUsage = digitalSignature, keyEncipherment\n"
        )
        commands = [
            [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3", "-subj", "/CN=pem111 test CA",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             "-keyout", "ca.key", "-out", "ca.pem"],
            [openssl, "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
             "-keyout", "server.key", "-out", "server.csr"],
            [openssl, "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "3", "-extfile", "server.ext", "-out", "server.pem"],
        ]  # fmt: skip
        for command in commands:
            result = subprocess.run(command, cwd=tls, capture_output=True, timeout=60)
            if result.returncode != 0:
                raise BrokerUnavailable(f"{' '.join(command[:3])} failed: {result.stderr.decode(errors='replace')}")
        for key in ("ca.key", "server.key"):
            (tls / key).chmod(0o600)
        self.ca_file = tls / "ca.pem"
        self.tls_url = f"amqps://localhost:{self.tls_port}"
        return True

    def _env(self) -> dict[str, str]:
        # Nothing inherited may point this node (or its CLI) at the machine's broker.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        base = self.base_dir
        env.update(
            HOME=self._home,  # the Erlang cookie lives here
            RABBITMQ_NODENAME=self.node,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(base / "mnesia"),
            RABBITMQ_LOG_BASE=str(base / "log"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(base / "enabled_plugins"),
            RABBITMQ_CONFIG_FILE=str(base / "rabbitmq.conf"),
            RABBITMQ_CONFIG_FILES=str(base / "conf.d"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(base / "advanced.config"),
            RABBITMQ_CONF_ENV_FILE=str(base / "rabbitmq-env.conf"),
            RABBITMQ_PID_FILE=str(self._pid_file),
            # Distribution on loopback only, registered with a private epmd (not the machine's on 4369).
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
            ERL_EPMD_PORT=str(self.epmd_port),
            ERL_EPMD_ADDRESS="127.0.0.1",
        )
        return env

    def _start_watchdog(self) -> None:
        if self._watchdog is not None and self._watchdog.poll() is None:
            return
        self._watchdog = subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG, str(os.getpid()), str(self._pid_file), self._home, str(self.epmd_port)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def _beam_pid(self) -> int | None:
        """The Erlang VM's pid from RabbitMQ's pid file, if it is still our node's process."""
        try:
            pid = int(self._pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        # RabbitMQ passes the node name by environment, but the VM's command line carries ``-home OUR_HOME``.
        return pid if self._home.encode() in cmdline else None

    def _wait_until_ready(self, timeout: float) -> None:
        """Until a real AMQP 0-9-1 connection and a real AMQP 1.0 connection both open (or the node dies)."""
        import pika
        from proton.utils import BlockingConnection

        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if not self.running:
                code = self._process.returncode if self._process else None
                self._process = None
                raise BrokerUnavailable(f"RabbitMQ node {self.node} exited ({code}):\n{self.log_tail()}")
            if _port_open(self.port):
                try:
                    with contextlib.closing(pika.BlockingConnection(self._pika_parameters(timeout=2.0))) as conn:
                        conn.channel()
                    amqp10 = BlockingConnection(
                        self.url, timeout=2.0, user=self.username, password=self.password, allowed_mechs="PLAIN"
                    )
                    amqp10.close()
                    return
                except Exception as exc:  # still booting: not every listener and plugin is up yet
                    last_error = exc
            time.sleep(0.1)
        raise BrokerUnavailable(
            f"RabbitMQ node {self.node} not ready within {timeout} s (last error: {last_error!r}):\n{self.log_tail()}"
        )

    def _wait_port_closed(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while _port_open(self.port) and time.monotonic() < deadline:
            time.sleep(0.05)

    def _pika_parameters(self, timeout: float = 10.0) -> Any:
        import pika

        return pika.ConnectionParameters(
            host="127.0.0.1",
            port=self.port,
            credentials=pika.PlainCredentials(self.username, self.password),
            connection_attempts=1,
            socket_timeout=timeout,
            stack_timeout=timeout,
            blocked_connection_timeout=timeout,
        )

    @contextlib.contextmanager
    def _channel(self) -> Iterator[Any]:
        import pika

        connection = pika.BlockingConnection(self._pika_parameters())
        try:
            yield connection.channel()
        finally:
            with contextlib.suppress(Exception):
                connection.close()


def _wait_until_stopped(pid: int, timeout: float = 10.0) -> None:
    """Until every thread of process ``pid`` is stopped (state ``T`` in ``/proc/PID/task/*/stat``).

    ``kill`` returns once SIGSTOP is queued, and each thread stops only when it next handles the signal. A test
    that sends right after :meth:`PrivateRabbitMQ.pause` could still get an answer from a VM thread that has not
    stopped yet (the hung-broker test saw a send succeed once in about 50 runs).
    """
    deadline = time.monotonic() + timeout
    while True:
        states = []
        for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
            with contextlib.suppress(OSError):  # a thread that ended meanwhile
                states.append(stat.read_text().rpartition(")")[2].split()[0])
        if states and all(state in ("T", "t") for state in states):
            return
        if time.monotonic() > deadline:
            raise BrokerUnavailable(f"the node's VM (pid {pid}) did not stop: thread states {sorted(set(states))}")
        time.sleep(0.01)


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _detach(connection: Any, receiver: Any, timeout: float) -> None:
    """Detach ``receiver``'s link and wait until the broker has answered with its own detach.

    Closing the connection right after the last accept can lose that accept (2 runs in 40 on RabbitMQ 3.10), and
    the broker then puts the message back on the queue. RabbitMQ answers a detach only once it has cancelled the
    link's consumer, which it does after the accepts that came before the detach, so its answer means they have
    been applied. ``BlockingReceiver.close()`` cannot be used here: it waits for a detach with ``closed=true``,
    and RabbitMQ 3.x answers with ``closed=false``. Raises ``proton.Timeout`` if no answer comes in time.
    """
    from proton import Endpoint

    detached: list[Any] = []
    # proton dispatches events to the link's handler by method name, so an attribute on it receives this one.
    receiver.fetcher.on_link_remote_detach = detached.append
    receiver.link.close()
    connection.wait(
        lambda: bool(detached) or bool(receiver.link.state & Endpoint.REMOTE_CLOSED),
        timeout=timeout,
        msg="Waiting for the broker to detach the receiving link",
    )


def _from_proton(message: Any) -> Received:
    body = message.body
    if isinstance(body, str):
        raw, kind = body.encode("utf-8"), "amqp-value:str"
    elif isinstance(body, bytes | bytearray | memoryview):
        # proton hands a ``data`` section over as bytes; an amqp-value binary would look the same, and the
        # inferred flag tells them apart.
        raw, kind = bytes(body), ("data" if message.inferred else "amqp-value:bytes")
    else:
        raw, kind = repr(body).encode("utf-8"), f"amqp-value:{type(body).__name__}"
    return Received(
        body=raw,
        body_kind=kind,
        properties=dict(message.properties or {}),
        content_type=str(message.content_type) if message.content_type else None,
        message_id=None if message.id is None else str(message.id),
        durable=bool(message.durable),
        annotations={str(k): v for k, v in (message.annotations or {}).items()},
        created=message.creation_time or None,
    )


# -- fixtures -------------------------------------------------------------------------------------------------

_session_broker: PrivateRabbitMQ | None = None
_session_failure: str | None = None



def start_private_rabbitmq(base_dir: Path) -> PrivateRabbitMQ:
    """Start a :class:`PrivateRabbitMQ` in ``base_dir``; the caller must :meth:`~PrivateRabbitMQ.close` it."""
    scripts = rabbitmq_scripts_dir()
    if scripts is None:
        raise BrokerUnavailable(
            "rabbitmq-server not found (Debian: apt-get install rabbitmq-server; or set RABBITMQ_SCRIPTS_DIR)"
        )
    broker = PrivateRabbitMQ(base_dir, scripts)
    try:
        broker.start()
    except BaseException:
        broker.close()
        raise
    return broker


@pytest.fixture(scope="session")
def private_rabbitmq(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRabbitMQ]:
    """The session's private RabbitMQ node, started on first use (about 6 s) and stopped at the end.

    One node per test process even when several modules import this fixture (each import registers its own
    copy of the fixture, so the node itself is kept at module level). Prefer :func:`rabbitmq` in tests: it also
    guarantees the node is running.
    """
    global _session_broker, _session_failure
    if _session_failure is not None:
        unavailable(_session_failure)
    if _session_broker is None:
        try:
            _session_broker = start_private_rabbitmq(tmp_path_factory.mktemp("rabbitmq"))
        except BrokerUnavailable as exc:
            _session_failure = f"private RabbitMQ unavailable: {exc}"
            unavailable(_session_failure)
    broker = _session_broker
    assert broker is not None
    yield broker
    if _session_broker is broker:
        _session_broker = None
        broker.close()


@pytest.fixture
def rabbitmq(private_rabbitmq: PrivateRabbitMQ) -> Iterator[PrivateRabbitMQ]:
    """The session's node, running when the test starts; restarted after a test that stopped or killed it."""
    try:
        private_rabbitmq.start()
    except BrokerUnavailable as exc:
        unavailable(f"private RabbitMQ did not restart: {exc}")
    yield private_rabbitmq
    private_rabbitmq.resume()
    if not private_rabbitmq.running:
        private_rabbitmq.start()


@pytest.fixture
def forwarders() -> Iterator[list[Any]]:
    """Collects the forwarders a test makes and closes them afterwards."""
    made: list[Any] = []
    yield made
    for forwarder in made:
        forwarder.close()
