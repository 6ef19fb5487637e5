"""All configuration, in one place, read from ``PEM111_*`` environment variables.

The names are the reference adaptor's wherever the concept exists there, so an existing deployment can switch
without renaming anything. CLI flags override these values (see :mod:`adaptor.cli`); nothing else in the project
reads the environment.

Each setting is declared once, as a field of :class:`Settings` made by :func:`setting`: the field's default, and in
its metadata the environment variable, the parser and the parser's bounds. :meth:`Settings.from_env` reads every
field that names a variable.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

MIB = 1024 * 1024
#: The highest TCP port number (0 = any free port).
MAX_PORT = 65535

#: The profile ids accepted (``manifestitem/@profileid``): the reference's four and the nullification profile's
#: v6-0, as its published profile file names it (nullification.md §1); extend with ``PEM111_ITK_PROFILE_IDS``.
DEFAULT_PROFILE_IDS = (
    "urn:nhs-en:profile:nhs111CDADocument-v2-0",
    "urn:nhs-en:profile:IntegratedUrgentCareCDADocument-v3-1",
    "urn:nhs-en:profile:nhs111CDADocument-v3-1",
    "urn:nhs-en:profile:nullificationDocument-v5-0",
    "urn:nhs-en:profile:NullifyDocument-v6-0",
)

#: Password hash methods werkzeug.security writes (``generate_password_hash``); anything else is refused so
#: that a plain password pasted into PEM111_CONSOLE_USERS by mistake is never taken for a hash.
PASSWORD_HASH_METHODS = ("scrypt:", "pbkdf2:")

#: The shortest PEM111_CONSOLE_TOKEN accepted: a token is a password that never expires.
MIN_CONSOLE_TOKEN_LENGTH = 24


class ConfigError(ValueError):
    """A setting has a value the adaptor cannot use; the message names the variable."""


# -- parsers ------------------------------------------------------------------------------------------------------
# Each is called as ``parse(env, name, default, **bounds)``: ``name`` is the variable (every error names it) and
# ``default`` the field's default, returned when the variable is unset or blank.


def _text(env: Mapping[str, str], name: str, default: str) -> str:
    """Trimmed; blank = the default."""
    return env.get(name, "").strip() or default


def _verbatim(env: Mapping[str, str], name: str, default: str) -> str:
    """As given, not trimmed: a password may begin or end with a space."""
    return env.get(name, default)


def _split(value: str) -> tuple[str, ...]:
    """Comma-separated list: items trimmed, empty items dropped."""
    return tuple(item.strip() for item in value.split(",") if item.strip())


def _list(env: Mapping[str, str], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    """Comma-separated list (see :func:`_split`); no items = the default."""
    return _split(env.get(name, "")) or default


def _report_paths(env: Mapping[str, str], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    paths = _list(env, name, default)
    for path in paths:
        if not path.startswith("/"):
            raise ConfigError(f"{name} entries must start with '/', not {path!r}")
    return paths


def _more_profile_ids(env: Mapping[str, str], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    """The list adds to the default profile ids rather than replacing them."""
    return default + _split(env.get(name, ""))


def _semicolon_list(env: Mapping[str, str], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    """Entries separated by ``;`` or new lines (values that contain commas, such as distinguished names); a
    backslash-escaped ``\\;`` stays in its entry. Items trimmed, empty items dropped; no items = the default."""
    entries: list[str] = []
    current: list[str] = []
    escaped = False
    for char in env.get(name, ""):
        if char in ";\n" and not escaped:
            entries.append("".join(current))
            current = []
        else:
            current.append(char)
        escaped = char == "\\" and not escaped
    entries.append("".join(current))
    return tuple(entry.strip() for entry in entries if entry.strip()) or default


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, not {raw!r}")


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0, maximum: int | None = None) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, not {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, not {value}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name} must be at most {maximum}, not {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, not {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, not {value}")
    return value


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    """One of ``choices``, case-insensitively; returned lower-case."""
    value = _text(env, name, default).lower()
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
    return value


def _log_level(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    """A :func:`_choice` of level names, upper-cased as :mod:`logging` names them."""
    return _choice(env, name, default, choices).upper()


def _headers(env: Mapping[str, str], name: str, default: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """A JSON object of HTTP header names to values, e.g. ``{"X-Api-Key": "..."}``."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        parsed = json.loads(raw)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict) or not all(isinstance(v, str) for v in parsed.values()):
        raise ConfigError(f'{name} must be a JSON object of header names to strings, e.g. {{"X-Api-Key": "..."}}')
    return tuple((str(k), v) for k, v in parsed.items())


def _console_users(
    env: Mapping[str, str], name: str, default: tuple[tuple[str, str], ...]
) -> tuple[tuple[str, str], ...]:
    """``user:<hash>,user:<hash>``: werkzeug password hashes contain ``:`` and ``$`` but never ``,``.

    Errors name the user, never the value (a mistaken entry may be a real password).
    """
    users: dict[str, str] = {}
    for entry in _split(env.get(name, "")):
        user, separator, password_hash = entry.partition(":")
        user = user.strip()
        if not separator or not user:
            raise ConfigError(f"{name} entries must be user:<password hash>, separated by commas")
        if not password_hash.startswith(PASSWORD_HASH_METHODS) or "$" not in password_hash:
            raise ConfigError(
                f"{name}: the entry for {user!r} is not a password hash; make one with `nhs111 console hash-password`"
            )
        if user in users:
            raise ConfigError(f"{name}: user {user!r} is listed twice")
        users[user] = password_hash
    return tuple(users.items()) or default


def _console_token(env: Mapping[str, str], name: str, default: str) -> str:
    token = _text(env, name, default)
    if token and len(token) < MIN_CONSOLE_TOKEN_LENGTH:
        raise ConfigError(f"{name} must be at least {MIN_CONSOLE_TOKEN_LENGTH} characters long")
    return token


T = TypeVar("T")


def setting(env: str, default: T, parse: Callable[..., object] = _text, *, secret: bool = False, **bounds: Any) -> T:
    """A :class:`Settings` field read from the variable ``env`` by ``parse(environ, env, default, **bounds)``.

    ``secret`` keeps the value out of the settings' ``repr`` (and so out of logs and tracebacks).
    """
    metadata = {"env": env, "parse": parse, "bounds": bounds}
    return field(default=default, repr=not secret, metadata=metadata)


@dataclass(frozen=True)
class Settings:
    """The adaptor's settings. Build with :meth:`from_env`; derive variants with :meth:`replace`."""

    # -- HTTP server -------------------------------------------------------------------------------------------
    host: str = setting("PEM111_HOST", "127.0.0.1")
    port: int = setting("PEM111_PORT", 8080, _int, minimum=0, maximum=MAX_PORT)
    #: Paths the ITK endpoint answers on; the first one is the canonical path used in the served WSDL.
    report_paths: tuple[str, ...] = setting("PEM111_REPORT_PATH", ("/report",), _report_paths)
    server_threads: int = setting("PEM111_SERVER_THREADS", 8, _int, minimum=1)
    max_request_bytes: int = setting("PEM111_MAX_REQUEST_BYTES", 10 * MIB, _int, minimum=1024)
    #: Connections held open at once, in all and from one client address (see adaptor.http.frontdoor).
    server_max_connections: int = setting("PEM111_SERVER_MAX_CONNECTIONS", 512, _int, minimum=1)
    server_max_connections_per_client: int = setting(
        "PEM111_SERVER_MAX_CONNECTIONS_PER_CLIENT", 256, _int, minimum=1
    )
    #: For the TLS handshake, request line and headers (and a kept-alive connection's next request); the body.
    server_header_timeout_seconds: float = setting("PEM111_SERVER_HEADER_TIMEOUT_SECONDS", 15.0, _float, minimum=0.1)
    server_body_timeout_seconds: float = setting("PEM111_SERVER_BODY_TIMEOUT_SECONDS", 60.0, _float, minimum=0.1)
    #: TLS in the adaptor's own server (see :mod:`adaptor.http.tls`): PEM files; no certificate = plain HTTP.
    tls_cert: str = setting("PEM111_TLS_CERT", "")
    tls_key: str = setting("PEM111_TLS_KEY", "")  # empty = the key is in the PEM111_TLS_CERT file
    #: CAs whose client certificates are accepted; set = client certificates required (mutual TLS).
    tls_client_ca: str = setting("PEM111_TLS_CLIENT_CA", "")
    #: CRLs (PEM) of the client CAs: revoked client certificates are refused.
    tls_crl: str = setting("PEM111_TLS_CRL", "")
    #: Client certificate CNs or RFC 4514 subjects allowed (``;``-separated); empty = any the CA issued.
    tls_client_subjects: tuple[str, ...] = setting("PEM111_TLS_CLIENT_SUBJECTS", (), _semicolon_list)
    #: How often the TLS files are checked for changes and reloaded (0 = only on SIGHUP).
    tls_reload_seconds: float = setting("PEM111_TLS_RELOAD_SECONDS", 60.0, _float, minimum=0.0)

    # -- ITK / SOAP validation (wire-contract.md section 4) ----------------------------------------------------
    #: Strict profile: wsa:To, WS-Security Timestamp and Username (rules B5-B14). Reference default: off.
    soap_validation_enabled: bool = setting("PEM111_SOAP_VALIDATION_ENABLED", False, _bool)
    #: Expected wsa:To values (rule B6) and MessageHeader.source.endpoint (the first one).
    soap_send_to: tuple[str, ...] = setting("PEM111_SOAP_SEND_TO", ("http://localhost:8080/report",), _list)
    timestamp_skew_seconds: int = setting("PEM111_TIMESTAMP_SKEW_SECONDS", 300, _int, minimum=0)
    #: Usernames refused (B13) / the only usernames accepted when non-empty (B13).
    username_deny_list: tuple[str, ...] = setting("PEM111_USERNAME_DENY_LIST", (), _list)
    username_allow_list: tuple[str, ...] = setting("PEM111_USERNAME_ALLOW_LIST", (), _list)
    #: The reference's profile ids plus any listed.
    profile_ids: tuple[str, ...] = setting("PEM111_ITK_PROFILE_IDS", DEFAULT_PROFILE_IDS, _more_profile_ids)
    #: Sender ODS codes accepted from auditIdentity (rule C14); empty = any sender.
    sender_ods_list: tuple[str, ...] = setting("PEM111_ITK_SENDER_ODS_LIST", (), _list)
    itk_ods_code_list: tuple[str, ...] = setting("PEM111_ITK_ODS_CODE_LIST", (), _list)
    itk_dos_id_list: tuple[str, ...] = setting("PEM111_ITK_DOS_ID_LIST", (), _list)
    itk_external_configuration_url: str = setting("PEM111_ITK_EXTERNAL_CONFIGURATION_URL", "")
    itk_fetch_interval_min: int = setting("PEM111_ITK_FETCH_INTERVAL_MIN", 5, _int, minimum=1)
    #: Serve without any of the three allow-list settings above, accepting every recipient (development only:
    #: without it, and without a list, the endpoint refuses to start).
    itk_accept_any_address: bool = setting("PEM111_ITK_ACCEPT_ANY_ADDRESS", False, _bool)
    #: Refuse a message without an ``itk:addresslist`` (rule C17), as the reference does.
    itk_require_addresslist: bool = setting("PEM111_ITK_REQUIRE_ADDRESSLIST", True, _bool)
    #: Folder holding the published schema pack (``iuc/`` and ``pathways/``) for rules D4-D6; empty = skipped.
    schema_dir: str = setting("PEM111_SCHEMA_DIR", "")
    #: Folder holding the WSDL and the project's own XSDs; empty = ``wsdl/`` beside the package (source trees
    #: and editable installs). Installed wheels (the Docker image) point it at their copy.
    wsdl_dir: str = setting("PEM111_WSDL_DIR", "")
    #: Level-2 CDA conformance (rule D5): off, warn or reject.
    cda_level2_validation: str = setting(
        "PEM111_CDA_LEVEL2_VALIDATION", "warn", _choice, choices=("off", "warn", "reject")
    )
    #: Answer ``OK:<MessageID>`` like the reference instead of the harness-conformant ``OK``.
    ok_with_message_id: bool = setting("PEM111_OK_WITH_MESSAGE_ID", False, _bool)

    # -- store, conversion, delivery --------------------------------------------------------------------------
    data_dir: str = setting("PEM111_DATA_DIR", "./var")
    database_url: str = setting("PEM111_DATABASE_URL", "")
    forward_target: str = setting("PEM111_FORWARD_TARGET", "")
    #: Device.version in every Bundle (the reference's application version).
    version: str = setting("PEM111_VERSION", "1.0.3")
    validate_fhir: bool = setting("PEM111_VALIDATE_FHIR", False, _bool)

    # -- delivery (outbox worker and forwarders) ----------------------------------------------------------------
    #: ``async``: answer OK once stored, deliver from the outbox; ``sync``: answer OK only once delivered.
    delivery_mode: str = setting("PEM111_DELIVERY_MODE", "async", _choice, choices=("async", "sync"))
    delivery_max_attempts: int = setting("PEM111_DELIVERY_MAX_ATTEMPTS", 30, _int, minimum=1)
    delivery_workers: int = setting("PEM111_DELIVERY_WORKERS", 2, _int, minimum=0)
    delivery_backoff_initial_seconds: float = setting(
        "PEM111_DELIVERY_BACKOFF_INITIAL_SECONDS", 1.0, _float, minimum=0.01
    )
    delivery_backoff_max_seconds: float = setting("PEM111_DELIVERY_BACKOFF_MAX_SECONDS", 300.0, _float, minimum=0.01)
    #: How long a worker owns a claimed message; after a crash another worker may take it over then.
    delivery_lease_seconds: int = setting("PEM111_DELIVERY_LEASE_SECONDS", 120, _int, minimum=1)
    delivery_poll_seconds: float = setting("PEM111_DELIVERY_POLL_SECONDS", 1.0, _float, minimum=0.01)
    #: How long after its acceptance a message may be held back by a delivery thread of ``nhs111 serve`` waiting
    #: for a moment with no request in flight; then it is delivered anyway (:mod:`adaptor.delivery.activity`);
    #: 0 = never wait.
    delivery_defer_seconds: float = setting("PEM111_DELIVERY_DEFER_SECONDS", 1.0, _float, minimum=0.0)
    #: The reference's broker settings: a broker URL here (and no PEM111_FORWARD_TARGET) selects AMQP delivery;
    #: several, comma-separated or as a Qpid ``failover:(...)`` URI, are tried in turn (delivery/forwarders/brokers.py).
    amqp_broker: str = setting("PEM111_AMQP_BROKER", "")
    amqp_queue_name: str = setting("PEM111_AMQP_QUEUE_NAME", "encounter-report")
    amqp_username: str = setting("PEM111_AMQP_USERNAME", "")
    amqp_password: str = setting("PEM111_AMQP_PASSWORD", "", _verbatim, secret=True)
    amqp_protocol: str = setting("PEM111_AMQP_PROTOCOL", "1.0", _choice, choices=("1.0", "0-9-1"))
    #: 0 = the port in the broker URL, else the protocol default (a list's URLs may not name another port).
    amqp_port: int = setting("PEM111_AMQP_PORT", 0, _int, minimum=0)
    #: AMQP 0-9-1 only, as the reference: empty = ``amq.direct`` when a routing key is set, else the default
    #: exchange (the routing key is then the queue name).
    amqp_exchange: str = setting("PEM111_AMQP_EXCHANGE", "")
    amqp_routing_key: str = setting("PEM111_AMQP_ROUTING_KEY", "")  # AMQP 0-9-1 only; empty = the queue name
    amqp_ssl_enabled: bool = setting("PEM111_AMQP_SSL_ENABLED", False, _bool)
    #: FHIR over HTTP: extra headers (JSON object), bearer token, client certificate, CA bundle, timeout.
    fhir_headers: tuple[tuple[str, str], ...] = setting("PEM111_FHIR_HEADERS", (), _headers)
    fhir_bearer_token: str = setting("PEM111_FHIR_BEARER_TOKEN", "", secret=True)
    fhir_client_cert: str = setting("PEM111_FHIR_CLIENT_CERT", "")
    fhir_client_key: str = setting("PEM111_FHIR_CLIENT_KEY", "")
    fhir_ca_bundle: str = setting("PEM111_FHIR_CA_BUNDLE", "")
    fhir_timeout_seconds: float = setting("PEM111_FHIR_TIMEOUT_SECONDS", 30.0, _float, minimum=0.1)

    # -- web console (adaptor.console) ---------------------------------------------------------------------------
    #: ``(user, werkzeug password hash)`` pairs; with no users and no token the console is off (404).
    console_users: tuple[tuple[str, str], ...] = setting("PEM111_CONSOLE_USERS", (), _console_users, secret=True)
    #: A shared secret accepted as ``Authorization: Bearer <token>`` and on the sign-in form.
    console_token: str = setting("PEM111_CONSOLE_TOKEN", "", _console_token, secret=True)
    #: Signs the session cookie; empty = a random key per process (restarts sign everyone out, and replicas
    #: behind one load balancer do not accept each other's sessions).
    console_secret_key: str = setting("PEM111_CONSOLE_SECRET_KEY", "", secret=True)
    #: How long a sign-in lasts.
    console_session_hours: float = setting("PEM111_CONSOLE_SESSION_HOURS", 8.0, _float, minimum=0.05)
    #: Always mark the session cookie Secure (it is anyway when the request arrived over https).
    console_secure_cookie: bool = setting("PEM111_CONSOLE_SECURE_COOKIE", False, _bool)
    #: Users of PEM111_CONSOLE_USERS who may only read: they search and open messages but cannot replay.
    console_read_only_users: tuple[str, ...] = setting("PEM111_CONSOLE_READ_ONLY_USERS", (), _list)

    # -- retention (adaptor.store.upkeep) -------------------------------------------------------------------------
    #: Days a delivered message is kept after its delivery (0 = for ever); undelivered ones are always kept.
    retention_delivered_days: int = setting("PEM111_RETENTION_DELIVERED_DAYS", 0, _int, minimum=0)
    #: Days a rejection (a request answered with a fault) is kept (0 = for ever).
    retention_rejections_days: int = setting("PEM111_RETENTION_REJECTIONS_DAYS", 0, _int, minimum=0)
    #: Hours between the purges ``nhs111 serve`` runs on its own (0 = none: only ``nhs111 db purge``).
    retention_purge_interval_hours: float = setting("PEM111_RETENTION_PURGE_INTERVAL_HOURS", 0.0, _float, minimum=0.0)

    # -- operations ---------------------------------------------------------------------------------------------
    log_level: str = setting(
        "PEM111_LOG_LEVEL", "INFO", _log_level, choices=("debug", "info", "warning", "error", "critical")
    )
    #: ``json`` (one JSON object per line, for log collectors) or ``text`` (one readable line, for developers).
    log_format: str = setting("PEM111_LOG_FORMAT", "json", _choice, choices=("json", "text"))

    #: Every ``PEM111_*`` variable as given, known or not.
    extra: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def soap_source_endpoint(self) -> str:
        """MessageHeader.source.endpoint: the first configured endpoint URL."""
        return self.soap_send_to[0] if self.soap_send_to else "http://localhost:8080/report"

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{Path(self.data_dir).resolve() / 'messages.db'}"

    @property
    def resolved_forward_target(self) -> str:
        """``PEM111_FORWARD_TARGET``; else the reference's ``PEM111_AMQP_BROKER``; else the data folder's outbox."""
        if self.forward_target:
            return self.forward_target
        if self.amqp_broker:
            return self.amqp_broker
        return f"dir:{Path(self.data_dir) / 'outbox'}"

    @property
    def tls_enabled(self) -> bool:
        """``nhs111 serve`` speaks HTTPS (only) when a server certificate is configured."""
        return bool(self.tls_cert)

    @property
    def console_enabled(self) -> bool:
        """The web console is served only when some credential is configured."""
        return bool(self.console_users or self.console_token)

    @property
    def allow_list_configured(self) -> bool:
        return bool(self.itk_ods_code_list or self.itk_dos_id_list or self.itk_external_configuration_url)

    def replace(self, **changes: object) -> Settings:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read every setting from ``env`` (default: ``os.environ``); ``PEM111_X_FILE`` names a file holding the
        value of ``PEM111_X`` (see :func:`_read_setting_files`). Raises :class:`ConfigError`."""
        env = _read_setting_files(os.environ if env is None else env, cls)
        values = {
            each.name: each.metadata["parse"](env, each.metadata["env"], each.default, **each.metadata["bounds"])
            for each in dataclasses.fields(cls)
            if "env" in each.metadata
        }
        settings = cls(**values, extra={k: v for k, v in env.items() if k.startswith("PEM111_")})
        settings.check_together()
        return settings

    def check_together(self) -> None:
        """The checks that involve several settings. Raises :class:`ConfigError`."""
        users = {user for user, _ in self.console_users}
        unknown = [user for user in self.console_read_only_users if user not in users]
        if unknown:
            # A misspelt name would leave that operator able to replay: refused rather than ignored.
            raise ConfigError(
                f"PEM111_CONSOLE_READ_ONLY_USERS names {', '.join(map(repr, unknown))}, not in PEM111_CONSOLE_USERS"
            )


def _read_setting_files(env: Mapping[str, str], settings: type[Settings]) -> Mapping[str, str]:
    """``env`` with ``PEM111_X`` set from the file that ``PEM111_X_FILE`` names, for every setting ``PEM111_X``.

    The convention of Docker and Kubernetes secrets (and of the official postgres image): a password or a key is
    mounted as a file rather than put in the environment, where ``docker inspect`` and child processes see it.
    One trailing newline is dropped. Naming both ``PEM111_X`` and ``PEM111_X_FILE`` is refused.
    """
    names = [each.metadata["env"] for each in dataclasses.fields(settings) if "env" in each.metadata]
    named = [name for name in names if env.get(f"{name}_FILE")]
    if not named:
        return env
    resolved = dict(env)
    for name in named:
        path = env[f"{name}_FILE"]
        if env.get(name):
            raise ConfigError(f"{name} and {name}_FILE are both set: set one of them")
        try:
            value = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
            raise ConfigError(f"{name}_FILE: cannot read {path}: {reason}") from None
        resolved[name] = value[:-1] if value.endswith("\n") else value
    return resolved
