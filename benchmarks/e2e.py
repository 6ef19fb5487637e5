"""End-to-end throughput: a real ``nhs111 serve`` per configuration, loaded by :mod:`benchmarks.load`.

For each configuration and message mix a fresh server starts on a free loopback port with a temporary data
folder, the corpus allow-lists, the published schema pack when ``../shared/schemas`` exists (as ``make run``
does) and otherwise default settings. The load generator runs as a separate process against it; then the server
is stopped with SIGTERM. The configurations are the data in :data:`CONFIGURATIONS` (one place: the store, the
target, the delivery processes, the mixes and whether the issue's targets are judged on it):

* **store** ``sqlite``: the SQLite file in the temporary data folder. ``postgresql``: a fresh database, made for
  the run and dropped afterwards, on the machine's PostgreSQL (``127.0.0.1:5432``, trust authentication;
  ``PEM111_BENCH_POSTGRES_URL`` names another server), through the helpers of ``tests/postgres.py``. When that
  server cannot be reached the configuration's row says so and the other configurations still run.
* **target** ``folder``: a folder in the temporary data folder. ``amqp10``: a private RabbitMQ node
  (``tests/brokers.py``; never the machine's shared broker), a durable queue per run, and a consumer in the load
  generator. The node is started before the first configuration that needs it and stopped after the last.
* **separate_worker**: ``nhs111 serve`` with ``PEM111_DELIVERY_WORKERS=0`` beside an ``nhs111 worker`` process
  (same store), so conversion runs on the other core, outside the server's GIL; otherwise the delivery threads
  run inside ``nhs111 serve`` (its default).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from benchmarks.load import StepResult, corpus_allow_lists, peak_rss_mb

ROOT = Path(__file__).resolve().parents[1]
STARTUP_TIMEOUT_SECONDS = 60.0

#: The targets of issue 7, for the 110 KB messages on SQLite on 2 cores.
TARGET_OK_PER_S = 150.0
TARGET_P99_MS = 100.0
TARGET_PEAK_RSS_MB = 300.0
#: The verdict of a figure that has no target.
INFORMATION = "for information"


#: The machine's PostgreSQL, where the PostgreSQL configurations create (and drop) their databases.
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
#: Names of the databases made for a run: ``nhs111_bench_<pid>_<random>``.
POSTGRES_DATABASE_PREFIX = "nhs111_bench_"


@dataclass(frozen=True)
class Configuration:
    """One deployment under load; see the module docstring."""

    name: str
    store: str = "sqlite"  # "sqlite" or "postgresql"
    target: str = "folder"  # "folder" or "amqp10"
    separate_worker: bool = False
    #: The mixes it runs, of those asked for; ``None``: all of them.
    mixes: tuple[str, ...] | None = None
    #: "target": the issue's throughput target is judged on it (the ~110 KB mix); "informational": the same
    #: figures are given for information; "": no row in the targets table (its memory always counts).
    verdict: str = ""
    #: One line for the report: how this deployment differs.
    note: str = ""

    def __post_init__(self) -> None:
        if self.store not in ("sqlite", "postgresql") or self.target not in ("folder", "amqp10"):
            raise ValueError(f"{self.name}: unknown store {self.store!r} or target {self.target!r}")
        if self.verdict not in ("", "target", "informational"):
            raise ValueError(f"{self.name}: unknown verdict {self.verdict!r}")

    @property
    def services(self) -> tuple[str, ...]:
        """The shared services it needs, the quickest to check first: "postgresql", "rabbitmq"."""
        needed = (("postgresql", self.store == "postgresql"), ("rabbitmq", self.target == "amqp10"))
        return tuple(name for name, used in needed if used)

    def mixes_of(self, asked: list[str]) -> list[str]:
        return [mix for mix in asked if self.mixes is None or mix in self.mixes]


#: Every configuration `make bench` measures, in report order. Change the deployments here (and only here).
CONFIGURATIONS = (
    Configuration(
        "SQLite + folder",
        verdict="target",
        note="the default deployment: SQLite store, folder target, delivery threads inside `nhs111 serve`",
    ),
    Configuration(
        "SQLite + folder, separate `nhs111 worker`",
        separate_worker=True,
        verdict="informational",
        note="`nhs111 serve` with `PEM111_DELIVERY_WORKERS=0` beside an `nhs111 worker` (2 delivery threads, "
        "same store)",
    ),
    Configuration(
        "SQLite + RabbitMQ (AMQP 1.0)",
        target="amqp10",
        note="a private RabbitMQ node, a durable queue, a consumer in the load generator",
    ),
    Configuration(
        "PostgreSQL + RabbitMQ (AMQP 1.0)",
        store="postgresql",
        target="amqp10",
        mixes=("110kb",),
        verdict="informational",
        note="a fresh database on the machine's PostgreSQL, the private RabbitMQ node; `110kb` mix only",
    ),
    Configuration(
        "PostgreSQL + folder",
        store="postgresql",
        mixes=("110kb",),
        verdict="informational",
        note="a fresh database on the machine's PostgreSQL, folder target; `110kb` mix only",
    ),
)


@dataclass
class RunResult:
    """One configuration with one message mix: the load steps and each adaptor process's peak memory."""

    configuration: str
    mix: str
    steps: list[StepResult] = field(default_factory=list)
    #: ``VmHWM`` in MiB per adaptor process ("serve", "worker"), read just before it was stopped.
    peak_rss_mb: dict[str, float] = field(default_factory=dict)
    #: Why it failed while running.
    error: str | None = None
    #: Why it was not run at all (a service it needs is unavailable).
    not_run: str | None = None


# -- processes -------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def nhs111() -> str:
    script = Path(sys.executable).parent / "nhs111"
    found = str(script) if script.exists() else shutil.which("nhs111")
    if not found:
        raise RuntimeError("the nhs111 command is not installed (make install)")
    return found


def server_env(folder: Path, port: int, corpus: Path, **settings: str) -> dict[str, str]:
    """The environment of a server under load: defaults plus a temporary data folder and the corpus lists."""
    ods, dos = corpus_allow_lists(corpus)
    env = {key: value for key, value in os.environ.items() if not key.startswith("PEM111_")}
    env.update(
        PEM111_HOST="127.0.0.1",
        PEM111_PORT=str(port),
        PEM111_DATA_DIR=str(folder / "data"),
        PEM111_FORWARD_TARGET=f"dir:{folder / 'outbox'}",
        PEM111_ITK_ODS_CODE_LIST=",".join(ods),
        PEM111_ITK_DOS_ID_LIST=",".join(dos),
        PEM111_LOG_LEVEL="info",
    )
    schemas = ROOT.parent / "shared" / "schemas"
    if schemas.is_dir():
        env["PEM111_SCHEMA_DIR"] = str(schemas)
    env.update(settings)
    return env


@dataclass
class Process:
    """An ``nhs111`` subprocess with its log file."""

    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self, timeout: float = 30.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        return self.popen.returncode

    def log_tail(self, lines: int = 30) -> str:
        text = self.log.read_text(encoding="utf-8", errors="replace").splitlines()
        return "\n".join(text[-lines:])


def start(command: str, env: dict[str, str], log: Path) -> Process:
    with open(log, "ab") as handle:
        popen = subprocess.Popen([nhs111(), command], cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT)
    return Process(popen, log)


def wait_until_serving(server: Process, port: int) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if server.popen.poll() is not None:
            raise RuntimeError(f"nhs111 serve exited with {server.popen.returncode}:\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"nhs111 serve did not answer within {STARTUP_TIMEOUT_SECONDS} s:\n{server.log_tail()}")


# -- the private broker ----------------------------------------------------------------------------------------


def _brokers_module() -> ModuleType:
    """``tests/brokers.py`` (the private RabbitMQ node the tests use), loaded in place."""
    return load_tests_module("brokers", "pem111_bench_brokers")


def load_tests_module(stem: str, name: str) -> ModuleType:
    """``tests/<stem>.py`` loaded as module ``name`` (tests/ is not a package): how a benchmark uses a helper the
    tests define (the private broker, throwaway databases, the front door's attacks), so that there is one."""
    path = ROOT / "tests" / f"{stem}.py"
    if name in sys.modules:
        return sys.modules[name]
    if str(path.parent) not in sys.path:
        sys.path.append(str(path.parent))  # for its own imports of tests/ helpers, as under pytest
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@contextmanager
def private_rabbitmq(folder: Path) -> Iterator[Any]:
    """A private RabbitMQ node for the duration of the block (about 6 s to start, 3 s to stop)."""
    broker = _brokers_module().start_private_rabbitmq(folder)
    try:
        yield broker
    finally:
        broker.close()


# -- PostgreSQL ------------------------------------------------------------------------------------------------


def _postgres_module() -> ModuleType:
    """``tests/postgres.py`` (throwaway databases on the shared server), loaded in place, its databases named
    ``nhs111_bench_...`` rather than ``nhs111_test_...``."""
    module = load_tests_module("postgres", "pem111_bench_postgres")
    module.DATABASE_PREFIX = POSTGRES_DATABASE_PREFIX  # type: ignore[attr-defined]  # read when one is named
    return module


def postgres_admin_url() -> str:
    return os.environ.get("PEM111_BENCH_POSTGRES_URL") or DEFAULT_POSTGRES_URL


def _where(url: str) -> str:
    """``host:port`` of a URL (no user name or password) for the report."""
    location = url.partition("://")[2].partition("/")[0]
    return location.rpartition("@")[2] or location


@contextmanager
def shared_postgres(admin_url: str) -> Iterator[Any]:
    """The PostgreSQL server the PostgreSQL configurations make their databases on (``SharedPostgres``: a
    watchdog drops them if this process dies first). Raises :class:`ServiceUnavailable` when it cannot be used."""
    server = _postgres_module().SharedPostgres(admin_url)
    try:
        try:
            server.check()
        except Exception as exc:
            root: BaseException = exc
            while root.__cause__ is not None:  # the driver's own error, not the helper's wrapping of it
                root = root.__cause__
            why = str(root).strip().splitlines()[0] if str(root).strip() else type(root).__name__
            raise ServiceUnavailable(f"PostgreSQL unreachable at {_where(admin_url)} ({why})") from exc
        yield server
    finally:
        server.close()


# -- the shared services ---------------------------------------------------------------------------------------


class ServiceUnavailable(RuntimeError):
    """A service some configurations need cannot be had; they are reported as not run."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


class Services:
    """The broker and the database server, each started when a configuration first needs it and stopped after
    the last configuration that needs it, so it does not compete for the CPUs with the others."""

    def __init__(self) -> None:
        self._open: dict[str, tuple[Any, ExitStack]] = {}
        self._failed: dict[str, str] = {}

    def get(self, name: str) -> Any:
        if name in self._failed:
            raise ServiceUnavailable(self._failed[name])
        if name not in self._open:
            stack = ExitStack()
            try:
                self._open[name] = (stack.enter_context(self._start(name, stack)), stack)
            except Exception as exc:
                stack.close()
                shown = {"rabbitmq": "private RabbitMQ node", "postgresql": "PostgreSQL"}.get(name, name)
                reason = f"{shown} unavailable ({_first_line(exc)})"
                reason = str(exc) if isinstance(exc, ServiceUnavailable) else reason
                self._failed[name] = reason
                raise ServiceUnavailable(reason) from exc
        return self._open[name][0]

    @staticmethod
    def _start(name: str, stack: ExitStack) -> AbstractContextManager[Any]:
        if name == "rabbitmq":
            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="pem111-bench-rabbitmq-"))
            return private_rabbitmq(Path(folder))
        if name == "postgresql":
            return shared_postgres(postgres_admin_url())
        raise ValueError(f"unknown service {name!r}")

    def release(self, keep: set[str]) -> None:
        """Stop every service not in ``keep``."""
        for name in [n for n in self._open if n not in keep]:
            _, stack = self._open.pop(name)
            stack.close()

    def close(self) -> None:
        self.release(set())


# -- one run ---------------------------------------------------------------------------------------------------


def run_load(
    url: str,
    corpus: Path,
    mix: str,
    concurrency: list[int],
    duration: float,
    warmup: float,
    server_pid: int,
    watch: list[str],
) -> list[StepResult]:
    """``python -m benchmarks.load`` in its own process; its JSON lines back as :class:`StepResult`."""
    command = [
        sys.executable, "-m", "benchmarks.load", "--url", url, "--corpus", str(corpus), "--mix", mix,
        "--concurrency", *map(str, concurrency), "--duration", str(duration), "--warmup", str(warmup),
        "--server-pid", str(server_pid), *watch,
    ]  # fmt: skip
    completed = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, text=True, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"the load generator failed with {completed.returncode}")
    return [StepResult(**json.loads(line)) for line in completed.stdout.splitlines() if line.startswith("{")]


@dataclass
class Served:
    """A running deployment (:func:`serving`): its endpoint, processes and how the load generator watches it."""

    url: str
    folder: Path
    server: Process
    worker: Process | None
    #: The load generator's arguments that watch the target (``--outbox DIR`` or the queue's).
    watch: list[str]
    #: ``VmHWM`` in MiB per process ("serve", "worker"), read just before it was stopped.
    peak_rss_mb: dict[str, float] = field(default_factory=dict)


@contextmanager
def serving(
    configuration: Configuration,
    corpus: Path,
    *,
    broker: Any = None,
    postgres: Any = None,
    settings: dict[str, str] | None = None,
) -> Iterator[Served]:
    """``nhs111 serve`` (and ``nhs111 worker``) for ``configuration`` in a temporary folder, ready for requests,
    for the duration of the block; stopped afterwards (their peak memory kept in :attr:`Served.peak_rss_mb`).
    ``broker``: the private RabbitMQ node, for an ``amqp10`` target; ``postgres``: the server to make a fresh
    database on, for a ``postgresql`` store (dropped afterwards); ``settings``: more ``PEM111_`` settings of the
    server. Raises :class:`RuntimeError` when it cannot be started."""
    with tempfile.TemporaryDirectory(prefix="pem111-bench-") as temporary, ExitStack() as cleanup:
        folder = Path(temporary)
        port = free_port()
        extra: dict[str, str] = {}
        watch = ["--outbox", str(folder / "outbox")]
        if configuration.store == "postgresql":
            try:
                database = postgres.new_database()
            except Exception as exc:
                raise RuntimeError(f"could not create a PostgreSQL database: {_first_line(exc)}") from exc
            cleanup.callback(_drop_database, postgres, database)  # after the processes below have stopped
            extra["PEM111_DATABASE_URL"] = database
        if configuration.target == "amqp10":
            queue = broker.unique_queue("bench")
            broker.declare_queue(queue)
            extra.update(
                PEM111_FORWARD_TARGET=broker.url,
                PEM111_AMQP_QUEUE_NAME=queue,
                PEM111_AMQP_PROTOCOL="1.0",
                PEM111_AMQP_USERNAME=broker.username,
                PEM111_AMQP_PASSWORD=broker.password,
            )
            watch = [
                "--amqp-url", broker.url, "--amqp-queue", queue,
                "--amqp-username", broker.username, "--amqp-password", broker.password,
            ]  # fmt: skip
        if configuration.separate_worker:
            extra["PEM111_DELIVERY_WORKERS"] = "0"
        env = server_env(folder, port, corpus, **{**extra, **(settings or {})})
        served = Served(
            f"http://127.0.0.1:{port}/report", folder, start("serve", env, folder / "server.log"), None, watch
        )
        try:
            wait_until_serving(served.server, port)
            if configuration.separate_worker:
                served.worker = start("worker", {**env, "PEM111_DELIVERY_WORKERS": "2"}, folder / "worker.log")
            yield served
        finally:
            for name, process in (("serve", served.server), ("worker", served.worker)):
                if process is None:
                    continue
                peak = peak_rss_mb(process.pid)
                if peak is not None:
                    served.peak_rss_mb[name] = peak
                process.stop()


def run_configuration(
    configuration: Configuration,
    corpus: Path,
    mix: str,
    concurrency: list[int],
    duration: float,
    warmup: float,
    broker: Any = None,
    postgres: Any = None,
) -> RunResult:
    """Start the server (and worker) for ``configuration`` (:func:`serving`), load it with ``mix``, stop it."""
    result = RunResult(configuration.name, mix)
    try:
        with serving(configuration, corpus, broker=broker, postgres=postgres) as served:
            result.peak_rss_mb = served.peak_rss_mb  # filled in when the processes stop
            result.steps = run_load(
                served.url, corpus, mix, concurrency, duration, warmup, served.server.pid, served.watch
            )
    except RuntimeError as exc:
        result.error = str(exc)
    return result


def _drop_database(postgres: Any, url: str) -> None:
    try:
        postgres.drop_database(url)
    except Exception as exc:  # dropped again when the server is closed, or by its watchdog
        print(f"e2e: could not drop {url.rpartition('/')[2]}: {_first_line(exc)}", file=sys.stderr, flush=True)


def run_all(
    corpus: Path,
    *,
    mixes: list[str],
    concurrency: list[int],
    duration: float,
    warmup: float,
    configurations: tuple[Configuration, ...] = CONFIGURATIONS,
) -> list[RunResult]:
    """Every configuration with each of its mixes, in order. The configurations that need RabbitMQ share one
    private node, those that need PostgreSQL one server (a fresh database per run); a service that cannot be had
    makes its configurations "not run" instead of failing the benchmark."""
    results: list[RunResult] = []
    services = Services()
    try:
        for index, configuration in enumerate(configurations):
            runs = configuration.mixes_of(mixes)
            try:
                needed = {name: services.get(name) for name in configuration.services} if runs else {}
            except ServiceUnavailable as exc:
                print(f"e2e: {configuration.name}: not run: {exc}", file=sys.stderr, flush=True)
                results += [RunResult(configuration.name, mix, not_run=str(exc)) for mix in runs]
                runs = []
            for mix in runs:
                print(f"e2e: {configuration.name}, {mix}", file=sys.stderr, flush=True)
                results.append(
                    run_configuration(
                        configuration,
                        corpus,
                        mix,
                        concurrency,
                        duration,
                        warmup,
                        broker=needed.get("rabbitmq"),
                        postgres=needed.get("postgresql"),
                    )
                )
            services.release({name for later in configurations[index + 1 :] for name in later.services})
    finally:
        services.close()
    return results


# -- the report ------------------------------------------------------------------------------------------------


def _fmt_errors(errors: dict[str, int]) -> str:
    return ", ".join(f"{kind}: {count}" for kind, count in sorted(errors.items())) or "none"


def configurations_markdown(configurations: tuple[Configuration, ...] = CONFIGURATIONS) -> str:
    """The configurations as a list for the report: name and note."""
    return "\n".join(f"* **{c.name}**: {c.note}" if c.note else f"* **{c.name}**" for c in configurations)


def markdown(results: list[RunResult]) -> str:
    """One table row per load step (or one per run that was not measured), then the peak memory per process."""
    lines = [
        "| configuration | mix | concurrency | mean KB | OK/s | OK p50 ms | OK p99 ms | OK max ms | other answers "
        "| delivered | delivered/s | OK→delivered p50 ms | p99 ms | drain s | drained/s | duplicates | serve peak MB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in results:
        if run.not_run or run.error:
            why = f"not run: {run.not_run}" if run.not_run else f"not measured: {(run.error or '').splitlines()[0]}"
            lines.append(f"| {run.configuration} | {run.mix} | {why} |" + " |" * 14)
            continue
        for s in run.steps:
            lines.append(
                f"| {run.configuration} | {run.mix} | {s.concurrency} | {s.mean_request_kb:.0f} | {s.ok_per_s:.1f} "
                f"| {s.ok_p50_ms:.1f} | {s.ok_p99_ms:.1f} | {s.ok_max_ms:.1f} | {_fmt_errors(s.errors)} "
                f"| {s.delivered}/{s.ok} | {s.delivered_per_s:.1f} | {s.delivery_p50_ms:.0f} | {s.delivery_p99_ms:.0f} "
                f"| {s.drain_s:.1f} | {s.drained_per_s:.1f} | {s.duplicates} | {s.server_peak_rss_mb or 0:.0f} |"
            )
    lines += ["", "| configuration | mix | peak RSS per process (VmHWM) |", "|---|---|---|"]
    for run in results:
        if run.not_run:
            continue
        memory = ", ".join(f"`nhs111 {name}` {mb:.0f} MB" for name, mb in run.peak_rss_mb.items()) or "—"
        lines.append(f"| {run.configuration} | {run.mix} | {memory} |")
    return "\n".join(lines)


@dataclass(frozen=True)
class Verdict:
    target: str
    measured: str
    verdict: str

    @property
    def met(self) -> bool:
        """Met, or not a target at all (a figure given for information)."""
        return self.verdict in ("met", INFORMATION)


def _rate_verdict(steps: list[StepResult]) -> tuple[str, str]:
    """What the steps show against "≥ 150 OK/s with p99 < 100 ms": the figures, and "met" or how it was missed."""
    within = [s for s in steps if s.ok_p99_ms < TARGET_P99_MS and not s.errors]
    best = max(within, key=lambda s: s.ok_per_s, default=None)
    fastest = max(steps, key=lambda s: s.ok_per_s)
    if best is not None:
        measured = (
            f"best rate with p99 under 100 ms: {best.ok_per_s:.0f} OK/s (p99 {best.ok_p99_ms:.0f} ms, "
            f"concurrency {best.concurrency})"
        )
    else:
        lowest = min(steps, key=lambda s: s.ok_p99_ms)
        measured = (
            f"p99 under 100 ms at no concurrency (lowest: {lowest.ok_p99_ms:.0f} ms at {lowest.ok_per_s:.0f} OK/s, "
            f"concurrency {lowest.concurrency})"
        )
    highest = f"{fastest.ok_per_s:.0f} OK/s (p99 {fastest.ok_p99_ms:.0f} ms, concurrency {fastest.concurrency})"
    measured += f"; highest rate {highest}"
    if best is not None and best.ok_per_s >= TARGET_OK_PER_S:
        return measured, "met"
    if fastest.ok_per_s < TARGET_OK_PER_S:
        within_rate = f"{best.ok_per_s:.0f} OK/s" if best is not None else "no rate"
        return measured, (
            f"missed: {TARGET_OK_PER_S - fastest.ok_per_s:.0f} OK/s short at any latency, and {within_rate} with p99 "
            "under 100 ms"
        )
    fast_enough = [s for s in steps if s.ok_per_s >= TARGET_OK_PER_S]
    p99 = min(s.ok_p99_ms for s in fast_enough)
    return measured, f"missed: 150 OK/s reached only with p99 {p99:.0f} ms ({p99 - TARGET_P99_MS:.0f} ms over)"


def verdicts(results: list[RunResult], configurations: tuple[Configuration, ...] = CONFIGURATIONS) -> list[Verdict]:
    """The issue's targets against the measurements: "met", or how they were missed, with the figures.

    The throughput target is judged on the configuration marked ``verdict="target"`` (SQLite + folder) with the
    ~110 KB messages, and whether its delivery keeps up is given for information; the same throughput figures
    for the configurations marked "informational" are given for information too.
    """
    found: list[Verdict] = []
    for configuration in configurations:
        if not configuration.verdict:
            continue
        informational = configuration.verdict == "informational"
        target = f"≥ 150 accepted/s with p99 < 100 ms, ~110 KB, {configuration.name}"
        target += " (informational)" if informational else ""
        runs = [r for r in results if r.configuration == configuration.name and r.mix == "110kb"]
        steps = [s for r in runs for s in r.steps]
        if not steps:
            why = next((r.not_run or r.error for r in runs if r.not_run or r.error), None)
            if why and informational:
                found.append(Verdict(target, why.splitlines()[0], "not run" if runs[0].not_run else "not measured"))
            continue
        measured, verdict = _rate_verdict(steps)
        found.append(Verdict(target, measured, verdict))
        if not informational:
            drained = max(steps, key=lambda s: s.drained_per_s)
            found.append(
                Verdict(
                    f"delivery after a burst, {configuration.name} (no target; for information)",
                    f"the backlog of a 10 s step drained at up to {drained.drained_per_s:.0f} delivered/s once "
                    f"sending stopped (concurrency {drained.concurrency}: {drained.ok_per_s:.0f} OK/s, drain "
                    f"{drained.drain_s:.0f} s); during the step delivery lets requests go first "
                    "(`PEM111_DELIVERY_DEFER_SECONDS` per message), at most "
                    f"{max(s.delivered_per_s for s in steps):.0f} delivered/s over a whole step",
                    INFORMATION,
                )
            )
    peaks = [
        (f"{r.configuration}, {r.mix}, `nhs111 {name}`", mb) for r in results for name, mb in r.peak_rss_mb.items()
    ]
    if peaks:
        where, peak = max(peaks, key=lambda p: p[1])
        verdict = "met" if peak < TARGET_PEAK_RSS_MB else f"missed by {peak - TARGET_PEAK_RSS_MB:.0f} MB"
        found.append(Verdict("peak memory < 300 MB per process", f"{peak:.0f} MB ({where})", verdict))
    return found


def verdict_table(found: list[Verdict]) -> str:
    lines = ["| target | measured | verdict |", "|---|---|---|"]
    lines += [f"| {v.target} | {v.measured} | {v.verdict if v.met else '**' + v.verdict + '**'} |" for v in found]
    return "\n".join(lines)
