"""The Docker image, built and run: ``make image-test`` (these tests are marked ``image``; ``make test`` leaves them
out, and ``.ci/run`` runs ``make test`` and then ``make image-test``).

The image is built on the local Debian base (``image/base.sh``) with ``../shared/schemas`` as its schema pack, by a
Docker engine that :mod:`image.engine` starts when none runs. Every container shares the host's network and listens
on 127.0.0.1 (free ports), so the tests send traffic to loopback only. Each run of the image is what an operator
would do: a read-only root filesystem, the data folder a volume, settings in the environment, a CA file mounted.

What is checked: inside the image (non-root uid, proton with SSL, the schema pack, no compiler); a folder target
(the samples sent with ``nhs111 send`` are delivered, ``/readyz`` and ``/metrics`` answer, schema validation D4 is
on and refuses a schema-invalid CDA, ``SIGTERM`` stops it cleanly); AMQP 1.0 over TLS to the tests' private
RabbitMQ. The build time and image size are written to ``tests/artifacts/image.txt``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from brokers import PrivateRabbitMQ
from conftest import REPO, load_module, require_shared
from lxml import etree
from server_fixture import free_port, nhs111_command
from unavailable import unavailable

from adaptor.samples.catalogue import NULLIFICATIONS

pytestmark = pytest.mark.image

TAG = "nhs111-adaptor:test"
UID = 10111
SAMPLES = REPO / "samples"
SAMPLE_ODS = "XED201,XGP101,XGP501,XGP502,XGP601,XOH401,XUT301"  # samples/README.md
START_SECONDS = 60.0
DELIVERY_SECONDS = 60.0
ARTIFACTS = REPO / "tests" / "artifacts"


engine = load_module(REPO / "image" / "engine.py", "nhs111_image_engine")


@pytest.fixture(scope="module")
def docker() -> Iterator[Any]:
    """The Docker engine (started here, and stopped afterwards, when none runs)."""
    try:
        started = engine.start_engine()
    except engine.EngineUnavailable as exc:
        unavailable(f"no Docker engine: {exc}")
    try:
        yield started
    finally:
        started.close()


@pytest.fixture(scope="module")
def image(docker: Any) -> str:
    """The image, built on the local base with ``../shared/schemas`` as its pack; timings to the artifacts."""
    pack = require_shared("schemas")
    seconds = engine.build_image(docker, tag=TAG, base="local", schema_pack=pack)
    size = engine.image_size(docker, TAG)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "image.txt").write_text(f"image {TAG}: built in {seconds:.0f} s, {size / 1e6:.0f} MB\n")
    return TAG


@dataclass
class Container:
    docker: Any
    name: str
    port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def logs(self) -> str:
        result = self.docker.run("logs", self.name, check=False)
        return str(result.stdout) + str(result.stderr)

    def state(self) -> dict[str, Any]:
        return dict(json.loads(self.docker.run("inspect", "--format", "{{json .State}}", self.name).stdout))

    def wait_ready(self) -> dict[str, Any]:
        """Poll ``/readyz`` until it answers 200 (the container may still be starting); returns its body."""
        deadline = time.monotonic() + START_SECONDS
        while True:
            try:
                response = requests.get(f"{self.base_url}/readyz", timeout=10)
                if response.status_code == 200:
                    return dict(response.json())
            except requests.ConnectionError:
                pass
            if not self.state()["Running"] or time.monotonic() > deadline:
                pytest.fail(f"the container did not become ready:\n{self.logs()[-3000:]}")
            time.sleep(0.2)

    def stop(self) -> int:
        """``docker stop`` (SIGTERM, then SIGKILL after 30 s); the exit code."""
        self.docker.run("stop", "--time", "30", self.name, timeout=60)
        return int(self.state()["ExitCode"])


@contextlib.contextmanager
def running(
    docker: Any, image: str, data: Path, env: dict[str, str], mounts: tuple[str, ...] = ()
) -> Iterator[Container]:
    """``nhs111 serve`` in a container on the host's network at 127.0.0.1:PORT, as an operator would run it: root
    filesystem read-only, ``data`` (owned by the image's user) as the data volume. Removed afterwards."""
    data.mkdir(parents=True, exist_ok=True)
    os.chown(data, UID, UID)
    container = Container(docker, f"nhs111-test-{uuid.uuid4().hex[:10]}", free_port())
    settings = {"PEM111_HOST": "127.0.0.1", "PEM111_PORT": str(container.port), "PEM111_LOG_FORMAT": "json", **env}
    args = ["run", "--detach", "--name", container.name, "--network", "host", "--read-only",
            "--volume", f"{data}:/var/lib/nhs111"]  # fmt: skip
    for mount in mounts:
        args += ["--volume", mount]
    for name, value in settings.items():
        args += ["--env", f"{name}={value}"]
    docker.run(*args, image)
    try:
        yield container
    finally:
        docker.run("rm", "--force", "--volumes", container.name, check=False)


def send(container: Container, *paths: Path) -> subprocess.CompletedProcess[str]:
    """``nhs111 send --fresh-ids`` from the checkout's environment, as a sender would."""
    command = [*nhs111_command(), "send", "--fresh-ids", "--url", f"{container.base_url}/report", *map(str, paths)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


#: The sample files that are nullifications (the catalogue that writes samples/ names them).
NULLIFICATION_FILES = frozenset(n.file_name for n in NULLIFICATIONS)


def sample_files() -> list[Path]:
    """The samples that are referrals or copies: one Bundle delivered each. A nullification sample withdraws one
    of them, and what that does depends on whether the original was delivered yet: it is sent on its own, after
    them (:func:`nullification_files`)."""
    files = sorted(path for path in SAMPLES.glob("*.xml") if path.name not in NULLIFICATION_FILES)
    assert files, "samples/ holds no requests"
    return files


def nullification_files() -> list[Path]:
    files = sorted(SAMPLES / name for name in NULLIFICATION_FILES)
    assert all(path.is_file() for path in files), f"samples/ lacks one of {sorted(NULLIFICATION_FILES)}"
    return files


def schema_invalid_request(folder: Path) -> Path:
    """A sample whose CDA holds an element its schema does not know (rule D4 refuses it)."""
    tree = etree.parse(str(SAMPLES / "ed-referral.xml"))
    [document] = tree.getroot().iter("{urn:hl7-org:v3}ClinicalDocument")
    document.insert(0, etree.Element("{urn:hl7-org:v3}notInTheSchema"))
    path = folder / "schema-invalid.xml"
    tree.write(str(path), xml_declaration=True, encoding="UTF-8")
    return path


def json_lines(text: str) -> list[dict[str, Any]]:
    lines = []
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            lines.append(json.loads(line))
    return lines


def wait_for(condition: Any, what: str, timeout: float = DELIVERY_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.2)


# -- the tests ---------------------------------------------------------------------------------------------------


def test_inside_the_image(docker: Any, image: str) -> None:
    """A non-root user, proton with SSL, the schema pack where PEM111_SCHEMA_DIR says, and no compiler."""
    probe = (
        "import json, os, pathlib, shutil, proton; d = pathlib.Path(os.environ['PEM111_SCHEMA_DIR']); "
        "print(json.dumps({'uid': os.getuid(), 'gid': os.getgid(), 'ssl': proton.SSL.present(), "
        "'cda': (d / 'iuc/Schemas/POCD_MT000002UK01.xsd').is_file(), "
        "'pathways': (d / 'pathways/pathwaysCase_v2.4.xsd').is_file(), "
        "'compilers': [c for c in ('gcc', 'cc', 'pip') if shutil.which(c)]}))"
    )
    result = docker.run("run", "--rm", "--network", "none", "--read-only", "--entrypoint", "python", image, "-c", probe)
    facts = json.loads(result.stdout)
    assert facts == {"uid": UID, "gid": UID, "ssl": True, "cda": True, "pathways": True, "compilers": []}


def test_folder_target(docker: Any, image: str, tmp_path: Path) -> None:
    env = {"PEM111_ITK_ODS_CODE_LIST": SAMPLE_ODS}
    with running(docker, image, tmp_path / "data", env) as container:
        ready = container.wait_ready()
        assert ready["status"] == "ready"
        assert ready["schemas"] == {
            "rules": {"C18": "active", "D4": "active", "D5": "skipped: no XSLT 2.0 processor (package saxonche)",
                      "D6": "active"},
            "missing": [],
        }  # fmt: skip

        files = sample_files()
        sent = send(container, *files)
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert sent.stdout.count("OK") == len(files), sent.stdout

        outbox = tmp_path / "data" / "outbox"
        wait_for(lambda: len(list(outbox.glob("*.json"))) == len(files), f"{len(files)} Bundles in {outbox}")
        for path in outbox.glob("*.json"):
            assert json.loads(path.read_bytes())["resourceType"] == "Bundle"

        # The nullification sample withdraws a delivered referral: its file is replaced by the withdrawal.
        withdrawing = nullification_files()
        assert send(container, *withdrawing).stdout.count("OK") == len(withdrawing)
        withdrawn = lambda: sum(b"entered-in-error" in p.read_bytes() for p in outbox.glob("*.json"))  # noqa: E731
        wait_for(lambda: withdrawn() == len(withdrawing), f"{len(withdrawing)} withdrawal(s) in {outbox}")
        assert len(list(outbox.glob("*.json"))) == len(files)

        refused = send(container, schema_invalid_request(tmp_path))
        assert refused.returncode == 1 and "FAULT" in refused.stdout, refused.stdout + refused.stderr
        assert "schema validation failed" in refused.stdout

        metrics = requests.get(f"{container.base_url}/metrics", timeout=10)
        assert metrics.status_code == 200
        assert f"nhs111_messages_accepted_total {float(len(files) + len(withdrawing))}" in metrics.text
        assert 'rule="D4"' in metrics.text
        assert requests.get(f"{container.base_url}/healthz", timeout=10).status_code == 200

        assert container.stop() == 0  # SIGTERM: drained and closed, exit status 0
        events = json_lines(container.logs())
        started = [e for e in events if e.get("event") == "schema validation rules"]
        assert started and started[0]["rules_active"] == "C18,D4,D6", started
        assert [e["event"] for e in events][-2:] == ["received SIGTERM, shutting down", "stopped"], events[-5:]
        assert not [e for e in events if e.get("level") in ("ERROR", "CRITICAL")], events


def test_amqp_over_tls(docker: Any, image: str, rabbitmq: PrivateRabbitMQ, tmp_path: Path) -> None:
    """AMQP 1.0 over TLS to the private RabbitMQ, trusting its CA through a mounted file and SSL_CERT_FILE."""
    if rabbitmq.tls_url is None or rabbitmq.ca_file is None:
        pytest.fail("the private broker has no TLS listener (openssl missing)")
    queue = rabbitmq.unique_queue("image")
    rabbitmq.declare_queue(queue)
    env = {
        "PEM111_ITK_ODS_CODE_LIST": SAMPLE_ODS,
        "PEM111_AMQP_BROKER": rabbitmq.tls_url,  # amqps://localhost:PORT, the certificate's name
        "PEM111_AMQP_USERNAME": rabbitmq.username,
        "PEM111_AMQP_PASSWORD": rabbitmq.password,
        "PEM111_AMQP_QUEUE_NAME": queue,
        "SSL_CERT_FILE": "/run/secrets/broker-ca.pem",
    }
    mounts = (f"{rabbitmq.ca_file}:/run/secrets/broker-ca.pem:ro",)
    with running(docker, image, tmp_path / "data", env, mounts) as container:
        ready = container.wait_ready()
        assert ready["checks"]["delivery"] == {"ok": True}  # TLS handshake and login passed
        files = sample_files()
        sent = send(container, *files)
        assert sent.returncode == 0, sent.stdout + sent.stderr
        received: list[Any] = []
        deadline = time.monotonic() + DELIVERY_SECONDS
        while len(received) < len(files) and time.monotonic() < deadline:
            received += rabbitmq.consume_amqp10(queue, len(files) - len(received), timeout=5)
        assert len(received) == len(files), container.logs()[-3000:]
        assert {json.loads(message.text)["resourceType"] for message in received} == {"Bundle"}
        assert container.stop() == 0
        assert "amqps://localhost" in container.logs()


# -- compose.yaml ------------------------------------------------------------------------------------------------


def compose_command(docker: Any) -> list[str]:
    """``docker compose`` (the plugin) or Debian's ``docker-compose``."""
    if docker.run("compose", "version", check=False).returncode == 0:
        return [docker.client, "compose"]
    found = shutil.which("docker-compose")
    if found is None:
        unavailable(
            "neither the docker compose plugin nor docker-compose is installed (apt-get install docker-compose)"
        )
    return [found]


def test_compose_brings_up_the_adaptor_with_postgresql_and_rabbitmq(docker: Any, image: str, tmp_path: Path) -> None:
    """compose.yaml as shipped passes ``config``; with image/compose.local.yaml (local PostgreSQL and RabbitMQ images
    from Debian's packages, the host's network) it comes up in order, migrates, serves and delivers over AMQP 1.0."""
    engine.build_service_images(docker)
    compose = compose_command(docker)
    pg_port, amqp_port, dist_port, epmd_port, adaptor_port = (free_port() for _ in range(5))
    env = {
        **docker.env,
        "NHS111_ADAPTOR_IMAGE": image,
        "NHS111_PG_PORT": str(pg_port),
        "NHS111_AMQP_PORT": str(amqp_port),
        "NHS111_AMQP_DIST_PORT": str(dist_port),
        "NHS111_EPMD_PORT": str(epmd_port),
        "NHS111_ADAPTOR_PORT": str(adaptor_port),
        "NHS111_DB_PASSWORD": uuid.uuid4().hex,
        "NHS111_AMQP_PASSWORD": uuid.uuid4().hex,
        "PEM111_ITK_ODS_CODE_LIST": SAMPLE_ODS,
    }

    def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*compose, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)

    shipped = run("-f", "compose.yaml", "config", "--quiet")
    assert shipped.returncode == 0, shipped.stderr
    merged = run("-f", "compose.yaml", "-f", "image/compose.local.yaml", "config")
    assert merged.returncode == 0, merged.stderr
    # Port mappings mean nothing on the host's network and Compose refuses them there; an override cannot remove a
    # key, so the merged file is brought up without them.
    resolved = yaml.safe_load(merged.stdout)
    resolved["services"]["adaptor"].pop("ports")
    local_file = tmp_path / "compose.resolved.yaml"
    local_file.write_text(yaml.safe_dump(resolved))
    files = ("-f", str(local_file), "--project-name", f"nhs111test{uuid.uuid4().hex[:8]}")
    try:
        up = run(*files, "up", "--detach", "--no-build", timeout=600)
        assert up.returncode == 0, up.stdout + up.stderr
        container = Container(docker, run(*files, "ps", "--quiet", "adaptor").stdout.strip(), adaptor_port)
        container.wait_ready()
        migrate = run(*files, "ps", "--quiet", "migrate").stdout.strip()
        assert docker.run("inspect", "--format", "{{.State.ExitCode}}", migrate).stdout.strip() == "0"

        files_sent = sample_files()
        sent = send(container, *files_sent)
        assert sent.returncode == 0, sent.stdout + sent.stderr
        delivered = f'nhs111_messages_delivered_total{{target="amqp"}} {float(len(files_sent))}'
        wait_for(lambda: delivered in requests.get(f"{container.base_url}/metrics", timeout=10).text, delivered)
        assert container.stop() == 0
    except BaseException:
        print(run(*files, "logs", "--no-color", "--tail", "40").stdout)
        raise
    finally:
        run(*files, "down", "--volumes", "--timeout", "30")
