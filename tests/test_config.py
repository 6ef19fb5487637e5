"""Settings: each field names its ``PEM111_*`` variable once, and :meth:`Settings.from_env` reads it with the
field's default, parser and bounds, naming the variable in every error."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from conftest import REPO

from adaptor.config import DEFAULT_PROFILE_IDS, MIB, ConfigError, Settings

FIELDS = [each for each in dataclasses.fields(Settings) if each.name != "extra"]
VARIABLES = {each.name: each.metadata.get("env") for each in FIELDS}


def test_every_setting_names_its_variable_once() -> None:
    missing = sorted(name for name, variable in VARIABLES.items() if not variable)
    assert not missing, f"settings without an environment variable: {missing}"
    assert all(re.fullmatch(r"PEM111_[A-Z0-9_]+", variable) for variable in VARIABLES.values())
    names = list(VARIABLES.values())
    assert len(names) == len(set(names)), sorted(name for name in names if names.count(name) > 1)
    assert "env" not in dataclasses.fields(Settings)[-1].metadata  # extra: every PEM111_ variable, not one


def test_an_empty_environment_gives_the_defaults() -> None:
    assert Settings.from_env({}) == Settings()
    assert Settings.from_env({name: "  " for name in VARIABLES.values() if name != "PEM111_AMQP_PASSWORD"}) == (
        Settings()
    )
    assert (Settings.port, Settings.max_request_bytes, Settings.log_level) == (8080, 10 * MIB, "INFO")
    # The allow-list fails closed: no recipient accepted by default, and a message must say whom it is for.
    assert (Settings.itk_accept_any_address, Settings.itk_require_addresslist) == (False, True)


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("PEM111_HOST", " 0.0.0.0 ", "0.0.0.0"),
        ("PEM111_PORT", "0", 0),
        ("PEM111_REPORT_PATH", "/report, /itk ,", ("/report", "/itk")),
        ("PEM111_MAX_REQUEST_BYTES", "1024", 1024),
        ("PEM111_TLS_CLIENT_SUBJECTS", "CN=a,O=b;CN=c\\;d\n", ("CN=a,O=b", "CN=c\\;d")),
        ("PEM111_TLS_RELOAD_SECONDS", "0", 0.0),
        ("PEM111_SOAP_VALIDATION_ENABLED", "Yes", True),
        ("PEM111_SOAP_SEND_TO", " , ", ("http://localhost:8080/report",)),  # empty: the default
        ("PEM111_SOAP_SEND_TO", "https://a/r,https://b/r", ("https://a/r", "https://b/r")),
        ("PEM111_ITK_PROFILE_IDS", "urn:x", (*DEFAULT_PROFILE_IDS, "urn:x")),  # adds to the reference's
        ("PEM111_ITK_ODS_CODE_LIST", "A1, B2", ("A1", "B2")),
        ("PEM111_ITK_ACCEPT_ANY_ADDRESS", "true", True),
        ("PEM111_ITK_REQUIRE_ADDRESSLIST", "false", False),
        ("PEM111_CDA_LEVEL2_VALIDATION", " Reject ", "reject"),
        ("PEM111_DELIVERY_BACKOFF_INITIAL_SECONDS", "0.01", 0.01),
        ("PEM111_AMQP_PASSWORD", " spaced ", " spaced "),  # a password is taken as given
        ("PEM111_AMQP_PROTOCOL", "0-9-1", "0-9-1"),
        ("PEM111_FHIR_HEADERS", '{"X-Api-Key": "k"}', (("X-Api-Key", "k"),)),
        ("PEM111_FHIR_BEARER_TOKEN", " token ", "token"),
        ("PEM111_CONSOLE_USERS", "alice:scrypt:1$salt$hash", (("alice", "scrypt:1$salt$hash"),)),
        ("PEM111_CONSOLE_TOKEN", "t" * 24, "t" * 24),
        ("PEM111_LOG_LEVEL", "debug", "DEBUG"),
        ("PEM111_LOG_FORMAT", "TEXT", "text"),
    ],
)
def test_a_variable_sets_its_field(variable: str, value: str, expected: object) -> None:
    (name,) = [name for name, declared in VARIABLES.items() if declared == variable]
    settings = Settings.from_env({variable: value, "PEM111_NOT_A_SETTING": "kept"})
    assert getattr(settings, name) == expected
    assert settings.replace(**{name: getattr(Settings(), name)}) == Settings()  # nothing else changed
    assert settings.extra == {variable: value, "PEM111_NOT_A_SETTING": "kept"}


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("PEM111_PORT", "http", "PEM111_PORT must be a whole number, not 'http'"),
        ("PEM111_PORT", "-1", "PEM111_PORT must be at least 0, not -1"),
        ("PEM111_PORT", "99999", "PEM111_PORT must be at most 65535, not 99999"),
        ("PEM111_MAX_REQUEST_BYTES", "1023", "PEM111_MAX_REQUEST_BYTES must be at least 1024, not 1023"),
        ("PEM111_ITK_FETCH_INTERVAL_MIN", "0", "PEM111_ITK_FETCH_INTERVAL_MIN must be at least 1, not 0"),
        ("PEM111_TLS_RELOAD_SECONDS", "-1", "PEM111_TLS_RELOAD_SECONDS must be at least 0.0, not -1.0"),
        ("PEM111_DELIVERY_POLL_SECONDS", "soon", "PEM111_DELIVERY_POLL_SECONDS must be a number, not 'soon'"),
        ("PEM111_FHIR_TIMEOUT_SECONDS", "0.05", "PEM111_FHIR_TIMEOUT_SECONDS must be at least 0.1, not 0.05"),
        ("PEM111_VALIDATE_FHIR", "Maybe", "PEM111_VALIDATE_FHIR must be true or false, not 'maybe'"),
        ("PEM111_REPORT_PATH", "/report,itk", "PEM111_REPORT_PATH entries must start with '/', not 'itk'"),
        ("PEM111_DELIVERY_MODE", "Later", "PEM111_DELIVERY_MODE must be one of async, sync, not 'later'"),
        (
            "PEM111_LOG_LEVEL",
            "trace",
            "PEM111_LOG_LEVEL must be one of debug, info, warning, error, critical, not 'trace'",
        ),
        (
            "PEM111_FHIR_HEADERS",
            "[]",
            'PEM111_FHIR_HEADERS must be a JSON object of header names to strings, e.g. {"X-Api-Key": "..."}',
        ),
        (
            "PEM111_CONSOLE_USERS",
            "alice",
            "PEM111_CONSOLE_USERS entries must be user:<password hash>, separated by commas",
        ),
        ("PEM111_CONSOLE_TOKEN", "short", "PEM111_CONSOLE_TOKEN must be at least 24 characters long"),
    ],
)
def test_an_unusable_value_is_refused_naming_the_variable(variable: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({variable: value})
    assert str(refused.value) == message


def test_secrets_stay_out_of_the_repr() -> None:
    secrets = {
        "PEM111_AMQP_PASSWORD": "amqp-secret",
        "PEM111_FHIR_BEARER_TOKEN": "bearer-secret",
        "PEM111_CONSOLE_USERS": "alice:scrypt:1$salt$hash-secret",
        "PEM111_CONSOLE_TOKEN": "console-token-secret-0123456789",
        "PEM111_CONSOLE_SECRET_KEY": "cookie-secret",
    }
    shown = repr(Settings.from_env(secrets))
    assert "secret" not in shown and "PEM111_" not in shown
    assert "port=8080" in shown


def test_a_setting_can_be_read_from_the_file_its_file_variable_names(tmp_path: Path) -> None:
    """``PEM111_X_FILE``: Docker and Kubernetes secrets, mounted as files (one trailing newline dropped)."""
    password = tmp_path / "amqp-password"
    password.write_text("s3cret pass\n", encoding="utf-8")
    key = tmp_path / "key"
    key.write_text("line one\nline two", encoding="utf-8")
    settings = Settings.from_env(
        {"PEM111_AMQP_PASSWORD_FILE": str(password), "PEM111_CONSOLE_SECRET_KEY_FILE": str(key), "PEM111_PORT": "81"}
    )
    assert (settings.amqp_password, settings.console_secret_key, settings.port) == ("s3cret pass", key.read_text(), 81)
    with pytest.raises(ConfigError, match=r"^PEM111_AMQP_PASSWORD and PEM111_AMQP_PASSWORD_FILE are both set"):
        Settings.from_env({"PEM111_AMQP_PASSWORD": "x", "PEM111_AMQP_PASSWORD_FILE": str(password)})
    with pytest.raises(ConfigError, match=r"^PEM111_PORT_FILE: cannot read .*missing: No such file or directory$"):
        Settings.from_env({"PEM111_PORT_FILE": str(tmp_path / "missing")})
    with pytest.raises(ConfigError, match="PEM111_PORT"):  # the value read is checked as any other
        Settings.from_env({"PEM111_PORT_FILE": str(password)})


def test_the_documented_variables_are_the_declared_ones() -> None:
    """The README's settings and the compose file name only variables the adaptor reads (``PEM111_AMQP_*`` style
    wildcards aside; ``PEM111_X_FILE`` for a declared ``PEM111_X``), and the README documents every one."""
    declared = set(VARIABLES.values())
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for text in (readme, (REPO / "compose.yaml").read_text(encoding="utf-8")):
        named = {name for name in re.findall(r"PEM111_[A-Z0-9_]+", text) if not name.endswith("_")}
        named = {name.removesuffix("_FILE") if name.removesuffix("_FILE") in declared else name for name in named}
        assert named <= declared, sorted(named - declared)
    assert not sorted(name for name in declared if name not in readme)
