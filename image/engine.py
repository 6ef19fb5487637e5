"""Build the adaptor's image, starting a private Docker engine when none runs: ``make image`` and the image tests.

A machine with Docker running uses it as it is (``DOCKER_HOST`` or the default socket). Otherwise, as root with
Debian's ``docker.io`` installed, a private ``dockerd`` is started for the duration of the command: its own data
root in the image cache (so images and build caches survive from one run to the next), its own socket, and no
networking of its own (``--bridge=none --iptables=false``): every build and container uses the host's network
(``--network host``), so nothing listens on or talks to a bridge address.

The cache folder (``NHS111_IMAGE_CACHE``, by default ``~/.cache/nhs111-image``, outside the repository) holds the
local base's root filesystem (``image/base.sh``) and the private engine's data.

    python3 image/engine.py build [--base local|IMAGE] [--schema-pack DIR] [--tag TAG]

Standard library only: it runs with the machine's ``python3`` as well as the project's virtual environment.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parents[1]
LOCAL_BASE = "nhs111-base:bookworm-py311"
DEFAULT_BASE = "python:3.11-slim"
DEFAULT_TAG = "nhs111-adaptor:local"
#: The private engine's socket and run-time state: short paths (a Unix socket path has at most 107 bytes).
PRIVATE_RUN_DIR = Path("/run/nhs111-docker")
ENGINE_START_SECONDS = 90.0
#: What the build context holds besides the schema pack (the Dockerfile copies nothing else).
CONTEXT_PATHS = ("Dockerfile", "setup.cfg", "pyproject.toml", "README.md", "adaptor", "mappings", "wsdl",
                 "image/schema_pack.py", "image/schema-pack.sha256")  # fmt: skip


class EngineUnavailable(RuntimeError):
    """No Docker engine answers and none can be started here (the reason says why)."""


def cache_dir() -> Path:
    configured = os.environ.get("NHS111_IMAGE_CACHE")
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "nhs111-image"


def _client_version(client: str) -> tuple[int, ...]:
    result = subprocess.run(
        [client, "version", "--format", "{{.Client.Version}}"], capture_output=True, text=True, timeout=30
    )
    digits = result.stdout.strip().split("+")[0].split("-")[0].split(".")
    try:
        return tuple(int(part) for part in digits)
    except ValueError:
        return ()


def find_client() -> tuple[str, dict[str, str]]:
    """A ``docker`` command that builds with BuildKit, and the environment it needs for that.

    Docker 23 and later build with the buildx plugin; without the plugin they fall back to the legacy builder,
    which cannot skip the unused schema stage or mount build caches. Docker 20.10 (Debian bookworm's ``docker.io``)
    has BuildKit built in, enabled by ``DOCKER_BUILDKIT=1``.
    """
    candidates = [found for found in (shutil.which("docker"), "/usr/bin/docker") if found and Path(found).exists()]
    for client in dict.fromkeys(candidates):
        if subprocess.run([client, "buildx", "version"], capture_output=True, timeout=30).returncode == 0:
            return client, {"DOCKER_BUILDKIT": "1"}
        version = _client_version(client)
        if version and version < (23,):
            return client, {"DOCKER_BUILDKIT": "1"}
    raise EngineUnavailable(
        "no docker command that builds with BuildKit: install the buildx plugin, or Debian's docker.io "
        f"(tried {', '.join(candidates) or 'none found'})"
    )


class Engine:
    """A ``docker`` client and the engine it talks to; :meth:`close` stops the engine if this process started it."""

    def __init__(self, client: str, env: dict[str, str], daemon: subprocess.Popen[bytes] | None = None) -> None:
        self.client = client
        self.env = env
        self.daemon = daemon

    @property
    def started_here(self) -> bool:
        return self.daemon is not None

    def run(
        self, *args: str, check: bool = True, timeout: float = 600, stdin: IO[bytes] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``docker ARGS`` with output captured as text; raises with the output when ``check`` and it fails."""
        result = subprocess.run(
            [self.client, *args], env=self.env, capture_output=True, text=True, timeout=timeout, stdin=stdin
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"docker {' '.join(args[:3])} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
            )
        return result

    def answers(self) -> bool:
        try:
            return self.run("info", "--format", "{{.ServerVersion}}", check=False, timeout=20).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def has_image(self, tag: str) -> bool:
        return self.run("image", "inspect", tag, check=False).returncode == 0

    def close(self) -> None:
        daemon, self.daemon = self.daemon, None
        if daemon is None or daemon.poll() is not None:
            return
        daemon.send_signal(signal.SIGTERM)  # dockerd stops its containers and its own containerd
        try:
            daemon.wait(60)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait(10)


def _base_env(client_env: dict[str, str]) -> dict[str, str]:
    return {**os.environ, **client_env}


def start_engine(cache: Path | None = None) -> Engine:
    """The running engine, or a private one started now (see the module docstring)."""
    client, client_env = find_client()
    current = Engine(client, _base_env(client_env))
    if current.answers():
        return current
    socket = PRIVATE_RUN_DIR / "docker.sock"
    private = Engine(client, {**_base_env(client_env), "DOCKER_HOST": f"unix://{socket}"})
    if private.answers():  # one this tool started earlier and left running
        return private
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        raise EngineUnavailable(
            "no Docker engine runs and dockerd is not installed (Debian: apt-get install docker.io)"
        )
    if os.geteuid() != 0:
        raise EngineUnavailable("no Docker engine runs, and starting one (dockerd) needs root")
    cache = cache or cache_dir()
    (cache / "docker").mkdir(parents=True, exist_ok=True)
    PRIVATE_RUN_DIR.mkdir(parents=True, exist_ok=True)
    socket.unlink(missing_ok=True)
    log = cache / "dockerd.log"
    with open(log, "ab") as output:
        daemon = subprocess.Popen(
            [dockerd, f"--data-root={cache / 'docker'}", f"--exec-root={PRIVATE_RUN_DIR / 'exec'}",
             f"--pidfile={PRIVATE_RUN_DIR / 'dockerd.pid'}", f"--host=unix://{socket}",
             "--bridge=none", "--iptables=false", "--ip-masq=false", "--ip-forward=false", "--userland-proxy=false"],
            stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    private.daemon = daemon
    deadline = time.monotonic() + ENGINE_START_SECONDS
    while not private.answers():
        if daemon.poll() is not None or time.monotonic() > deadline:
            private.close()
            tail = log.read_text(errors="replace").splitlines()[-15:]
            raise EngineUnavailable("the private dockerd did not start:\n" + "\n".join(tail))
        time.sleep(0.5)
    return private


@contextlib.contextmanager
def engine(cache: Path | None = None) -> Iterator[Engine]:
    """:func:`start_engine`, stopped on exit when it was started here."""
    started = start_engine(cache)
    try:
        yield started
    finally:
        started.close()


def ensure_local_base(docker: Engine, tag: str = LOCAL_BASE) -> None:
    """Import (and, the first time, debootstrap) the local base unless the engine has it."""
    if docker.has_image(tag):
        return
    env = {**docker.env, "DOCKER": docker.client}
    subprocess.run(["bash", str(REPO / "image" / "base.sh"), tag], env=env, check=True, timeout=1800)


def build_context(schema_pack: Path | None) -> bytes:
    """The build context as a tar.gz archive: :data:`CONTEXT_PATHS`, and the schema pack as ``schema-pack/``.

    A tar rather than a folder, so that a local pack (``../shared/schemas``) goes in without being copied into the
    checkout; caches and bytecode are left out."""
    buffer = io.BytesIO()

    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        name = Path(info.name).name
        if name == "__pycache__" or name.endswith(".pyc"):
            return None
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info

    # gzip: docker recognises a compressed archive on its standard input by its magic number, where an
    # uncompressed one can be taken for a Dockerfile.
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1, format=tarfile.GNU_FORMAT) as tar:
        for path in CONTEXT_PATHS:
            tar.add(REPO / path, arcname=path, filter=keep)
        if schema_pack is not None:
            tar.add(schema_pack.resolve(), arcname="schema-pack", filter=keep)
    return buffer.getvalue()


def build_ca_file() -> str | None:
    """A CA bundle for the build's downloads (behind a TLS-inspecting proxy): ``NHS111_BUILD_CA_FILE``, or the one
    pip or OpenSSL on this machine is told to trust (``PIP_CERT``, ``SSL_CERT_FILE``)."""
    for name in ("NHS111_BUILD_CA_FILE", "PIP_CERT", "SSL_CERT_FILE"):
        value = os.environ.get(name)
        if value and Path(value).is_file():
            return value
    return None


def build_image(
    docker: Engine,
    *,
    tag: str = DEFAULT_TAG,
    base: str = DEFAULT_BASE,
    schema_pack: Path | None = None,
    stream: bool = False,
) -> float:
    """Build the adaptor's image; returns the seconds it took. ``base="local"`` builds on :data:`LOCAL_BASE`."""
    if base == "local":
        ensure_local_base(docker)
        base = LOCAL_BASE
    elif not docker.has_image(base):
        pulled = docker.run("pull", base, check=False)
        if pulled.returncode != 0:
            reason = (pulled.stderr.strip().splitlines() or ["no answer"])[-1]
            raise EngineUnavailable(
                f"cannot pull the base image {base} ({reason}); where no image registry is reachable, build on the "
                "local base: make image IMAGE_BASE=local"
            )
    args = ["build", "--network", "host", "--tag", tag, "--build-arg", f"BASE_IMAGE={base}",
            "--build-arg", f"SCHEMA_PACK={'local' if schema_pack else 'fetch'}"]  # fmt: skip
    ca = build_ca_file()
    if ca:
        args += ["--secret", f"id=build_ca,src={ca}"]
    started = time.monotonic()
    with tempfile.TemporaryFile() as context:
        context.write(build_context(schema_pack))
        context.seek(0)
        if stream:  # the build's progress as it happens (make image)
            subprocess.run([docker.client, *args, "--progress=plain", "-"], env=docker.env, stdin=context,
                           check=True, timeout=3600)  # fmt: skip
        else:
            docker.run(*args, "-", stdin=context, timeout=3600)
    seconds = time.monotonic() - started
    # The image this tag named before is now nameless: drop it (the build cache keeps its layers for reuse).
    docker.run("image", "prune", "--force", check=False)
    return seconds


#: The stand-ins for the official postgres and rabbitmq images that compose.yaml names (image/compose.local.yaml).
SERVICE_IMAGES = {"nhs111-postgres:local": "postgres.Dockerfile", "nhs111-rabbitmq:local": "rabbitmq.Dockerfile"}


def build_service_images(docker: Engine) -> None:
    """Build :data:`SERVICE_IMAGES` from Debian's packages on the local base (cached like any build)."""
    ensure_local_base(docker)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1, format=tarfile.GNU_FORMAT) as tar:
        tar.add(REPO / "image" / "services", arcname=".")
    for tag, dockerfile in SERVICE_IMAGES.items():
        with tempfile.TemporaryFile() as context:
            context.write(buffer.getvalue())
            context.seek(0)
            docker.run("build", "--network", "host", "--tag", tag, "--build-arg", f"BASE_IMAGE={LOCAL_BASE}",
                       "--file", dockerfile, "-", stdin=context, timeout=1800)  # fmt: skip


def image_size(docker: Engine, tag: str) -> int:
    return int(docker.run("image", "inspect", "--format", "{{.Size}}", tag).stdout.strip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the adaptor's Docker image (see image/engine.py).")
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build the image")
    build.add_argument("--base", default=DEFAULT_BASE, help=f"base image, or 'local' ({LOCAL_BASE}, image/base.sh)")
    build.add_argument("--schema-pack", type=Path, help="a local copy of the schema pack instead of fetching it")
    build.add_argument("--tag", default=DEFAULT_TAG)
    args = parser.parse_args(argv)
    try:
        with engine() as docker:
            seconds = build_image(docker, tag=args.tag, base=args.base, schema_pack=args.schema_pack, stream=True)
            size = image_size(docker, args.tag)
            print(f"built {args.tag} on {args.base} in {seconds:.0f} s: {size / 1e6:.0f} MB")
            if docker.started_here:
                print(f"(a private engine was started and stopped for this; its data is in {cache_dir() / 'docker'})")
    except EngineUnavailable as exc:
        print(f"image: {exc}", file=sys.stderr)
        return 2
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        print(f"image: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
