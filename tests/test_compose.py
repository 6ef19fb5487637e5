"""``compose.yaml`` checked as data, without Docker: it parses, the start order holds (healthy database and broker,
then ``nhs111 db upgrade`` once, then the adaptor), and the adaptor's environment is one the adaptor accepts and that
names PostgreSQL through psycopg 3 and RabbitMQ over AMQP 1.0. ``tests/test_image.py`` (``make image-test``) checks it
with ``docker compose config`` and brings it up."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml
from conftest import REPO

from adaptor.cli.commands import main
from adaptor.config import Settings
from adaptor.delivery.forwarders import forwarder_from_settings
from adaptor.store import sqlalchemy_url

_VARIABLE = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


def _with_defaults(value: str) -> str:
    """Compose's ``${NAME:-default}`` as it is when ``NAME`` is not set."""
    return _VARIABLE.sub(lambda m: m.group(2) or "", value)


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    compose = yaml.safe_load((REPO / "compose.yaml").read_text(encoding="utf-8"))
    return dict(compose["services"])


def test_the_services_start_in_order(services: dict[str, Any]) -> None:
    assert set(services) == {"postgres", "rabbitmq", "migrate", "adaptor"}
    for name, service in services.items():
        for dependency, condition in service.get("depends_on", {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            if condition["condition"] == "service_healthy":
                assert not services[dependency].get("healthcheck", {}).get("disable"), dependency
                assert services[dependency]["healthcheck"]["test"], dependency
    assert services["migrate"]["command"] == ["db", "upgrade"] and services["migrate"]["restart"] == "no"
    assert services["adaptor"]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    assert services["postgres"]["image"].startswith("postgres:15")
    assert any("rabbitmq_amqp1_0" in part for part in services["rabbitmq"]["command"])


def test_the_adaptor_and_migrate_services_share_an_image_and_environment(services: dict[str, Any]) -> None:
    adaptor, migrate = services["adaptor"], services["migrate"]
    assert adaptor["build"] == migrate["build"] == "."
    assert adaptor["image"] == migrate["image"]
    assert adaptor["environment"] == migrate["environment"]
    assert {"upgrade"} <= set(main.commands["db"].commands)  # type: ignore[attr-defined]


def test_the_environment_is_one_the_adaptor_accepts(services: dict[str, Any]) -> None:
    environment = {name: _with_defaults(str(value)) for name, value in services["adaptor"]["environment"].items()}
    for required in ("PEM111_DATABASE_URL", "PEM111_AMQP_BROKER", "PEM111_ITK_ODS_CODE_LIST"):
        assert environment.get(required), required
    settings = Settings.from_env(environment)
    url = sqlalchemy_url(settings.resolved_database_url)
    assert (url.drivername, url.host, url.database) == ("postgresql+psycopg", "postgres", "nhs111")
    postgres = services["postgres"]["environment"]
    assert url.username == postgres["POSTGRES_USER"]
    assert url.password == _with_defaults(postgres["POSTGRES_PASSWORD"])
    rabbitmq = services["rabbitmq"]["environment"]
    assert settings.amqp_username == rabbitmq["RABBITMQ_DEFAULT_USER"]
    assert settings.amqp_password == _with_defaults(rabbitmq["RABBITMQ_DEFAULT_PASS"])
    forwarder = forwarder_from_settings(settings)  # AMQP 1.0 to rabbitmq:5672; nothing is connected yet
    try:
        assert "rabbitmq" in forwarder.target
    finally:
        forwarder.close()
