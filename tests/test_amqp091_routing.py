"""AMQP 0-9-1 routing as the reference adaptor reads ``PEM111_AMQP_EXCHANGE`` and ``PEM111_AMQP_ROUTING_KEY``,
and the configurations that would route every message to a queue nobody reads, which refuse to start.

What is proved here: a reference RabbitMQ configuration (a routing key, no exchange) publishes to ``amq.direct``
with that key, and the message arrives in the queue bound there, against a real broker, with nothing declared; an
unbound key is a transient failure, never a new queue; an exchange or routing key under AMQP 1.0, and an AMQP 1.0
address as a 0-9-1 queue name, stop ``nhs111 worker`` and ``nhs111 serve`` with one line naming the variables and
exit status 2; and a Qpid failover URI, which used to stop start-up, starts the worker.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
from brokers import PrivateRabbitMQ
from itk_factory import sample_delivery as delivery
from server_fixture import nhs111_command
from waiting import wait_until

from adaptor.config import ConfigError, Settings
from adaptor.delivery.forwarders import DeliveryError, PermanentDeliveryError, forwarder_from_settings
from adaptor.delivery.forwarders.amqp091 import Amqp091Forwarder, route


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, ("", "encounter-report")),  # the default exchange: the routing key is the queue
        ({"PEM111_AMQP_QUEUE_NAME": "referrals"}, ("", "referrals")),
        ({"PEM111_AMQP_ROUTING_KEY": "111.referral"}, ("amq.direct", "111.referral")),  # the reference's default
        ({"PEM111_AMQP_ROUTING_KEY": "k", "PEM111_AMQP_QUEUE_NAME": "q"}, ("amq.direct", "k")),
        ({"PEM111_AMQP_EXCHANGE": "nhs111", "PEM111_AMQP_ROUTING_KEY": "k"}, ("nhs111", "k")),
        ({"PEM111_AMQP_EXCHANGE": "nhs111"}, ("nhs111", "encounter-report")),
    ],
)
def test_route_as_the_reference(env: dict[str, str], expected: tuple[str, str]) -> None:
    assert route(Settings.from_env({"PEM111_AMQP_PROTOCOL": "0-9-1", **env})) == expected


def test_only_a_routing_key_delivers_through_amq_direct(rabbitmq: PrivateRabbitMQ) -> None:
    queue, key = rabbitmq.unique_queue("bound"), rabbitmq.unique_queue("key")
    rabbitmq.declare_queue(queue)
    rabbitmq.bind_queue(queue, "amq.direct", key)
    env = {
        "PEM111_AMQP_BROKER": rabbitmq.url,
        "PEM111_AMQP_PROTOCOL": "0-9-1",
        "PEM111_AMQP_USERNAME": rabbitmq.username,
        "PEM111_AMQP_PASSWORD": rabbitmq.password,
        "PEM111_AMQP_ROUTING_KEY": key,
        "PEM111_AMQP_QUEUE_NAME": rabbitmq.unique_queue("named"),  # has no say once a routing key is set
    }
    forwarder = forwarder_from_settings(Settings.from_env(env))
    try:
        assert isinstance(forwarder, Amqp091Forwarder)
        assert "exchange amq.direct" in forwarder.target
        forwarder.send(delivery("uuid:ROUTED-1"))
        [got] = rabbitmq.consume_091(queue, 1)
        assert got.message_id == "uuid:ROUTED-1"
        # The routing key is a key, not a queue: nothing was declared under it (or under the queue name).
        assert not rabbitmq.queue_exists(key)
        assert not rabbitmq.queue_exists(env["PEM111_AMQP_QUEUE_NAME"])
    finally:
        forwarder.close()

    unbound = forwarder_from_settings(Settings.from_env({**env, "PEM111_AMQP_ROUTING_KEY": key + "-unbound"}))
    try:
        with pytest.raises(DeliveryError, match="no queue is bound") as returned:
            unbound.send(delivery("uuid:ROUTED-1"))
        assert not isinstance(returned.value, PermanentDeliveryError)  # held in the outbox until a binding exists
        assert not rabbitmq.queue_exists(key + "-unbound")
    finally:
        unbound.close()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"PEM111_AMQP_ROUTING_KEY": "k"}, "PEM111_AMQP_ROUTING_KEY applies to AMQP 0-9-1 only"),
        ({"PEM111_AMQP_EXCHANGE": "x"}, "PEM111_AMQP_EXCHANGE applies to AMQP 0-9-1 only"),
        (
            {"PEM111_AMQP_EXCHANGE": "x", "PEM111_AMQP_ROUTING_KEY": "k", "PEM111_AMQP_PROTOCOL": "1.0"},
            "PEM111_AMQP_EXCHANGE and PEM111_AMQP_ROUTING_KEY apply to AMQP 0-9-1 only: set PEM111_AMQP_PROTOCOL=0-9-1",
        ),
        (
            {"PEM111_AMQP_PROTOCOL": "0-9-1", "PEM111_AMQP_QUEUE_NAME": "/amq/queue/referrals"},
            "PEM111_AMQP_QUEUE_NAME '/amq/queue/referrals' is an AMQP 1.0 address",
        ),
    ],
)
def test_configurations_that_could_route_nowhere_are_refused(env: dict[str, str], expected: str) -> None:
    with pytest.raises(ConfigError, match="^" + expected.replace("(", r"\(")):
        forwarder_from_settings(Settings.from_env({"PEM111_AMQP_BROKER": "amqp://mq.example", **env}))


def cli_env(tmp_path: Path, **settings: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PEM111_")}
    env.update(
        PEM111_DATA_DIR=str(tmp_path / "data"),
        PEM111_LOG_FORMAT="text",
        PEM111_PORT="0",
        PEM111_ITK_ODS_CODE_LIST="A91000",
        **settings,
    )
    return env


@pytest.mark.parametrize("command", ["worker", "serve"])
@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"PEM111_AMQP_ROUTING_KEY": "111.referral"}, ("PEM111_AMQP_ROUTING_KEY", "PEM111_AMQP_PROTOCOL")),
        (
            {"PEM111_AMQP_PROTOCOL": "0-9-1", "PEM111_AMQP_QUEUE_NAME": "/queue/referrals"},
            ("PEM111_AMQP_QUEUE_NAME", "PEM111_AMQP_EXCHANGE"),
        ),
        ({"PEM111_AMQP_BROKER": "failover:(amqpws://a:80,amqp://b)"}, ("PEM111_AMQP_BROKER", "amqpws://")),
    ],
)
def test_start_up_refused_in_one_line(
    tmp_path: Path, command: str, settings: dict[str, str], named: tuple[str, ...]
) -> None:
    env = cli_env(tmp_path, **{"PEM111_AMQP_BROKER": "amqp://127.0.0.1:5672", **settings})
    result = subprocess.run([*nhs111_command(), command], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert len(lines) == 1 and " ERROR " in lines[0], lines
    assert all(name in lines[0] for name in named), lines[0]
    assert not (tmp_path / "data").exists()  # refused before the store was opened


def test_a_failover_uri_starts_the_worker(tmp_path: Path, rabbitmq: PrivateRabbitMQ) -> None:
    url = f"failover:(amqp://127.0.0.1:1,{rabbitmq.url})?failover.maxReconnectAttempts=10&amqp.idleTimeout=60000"
    env = cli_env(tmp_path, PEM111_AMQP_BROKER=url, PEM111_AMQP_PROTOCOL="0-9-1")
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log_file:
        worker = subprocess.Popen([*nhs111_command(), "worker"], env=env, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: "delivering from message store" in log_path.read_text(), "the worker's start", 30)
    finally:
        worker.send_signal(signal.SIGTERM)
        returncode = worker.wait(30)
    log = log_path.read_text()
    assert returncode == 0, log
    assert f"failover:(amqp://127.0.0.1:1,{rabbitmq.url})" in log and "Traceback" not in log
    assert "broker URL options not used" in log and "failover.maxReconnectAttempts,amqp.idleTimeout" in log
