"""All configuration, in one place, read from ``PEM111_*`` environment variables.

The names are the reference adaptor's wherever the concept exists there, so an existing deployment can switch
without renaming anything. CLI flags override these values (see :mod:`adaptor.cli`); nothing else in the project
reads the environment.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

MIB = 1024 * 1024

#: The profile ids the reference accepts (``manifestitem/@profileid``); extend with ``PEM111_ITK_PROFILE_IDS``.
DEFAULT_PROFILE_IDS = (
    "urn:nhs-en:profile:nhs111CDADocument-v2-0",
    "urn:nhs-en:profile:IntegratedUrgentCareCDADocument-v3-1",
    "urn:nhs-en:profile:nhs111CDADocument-v3-1",
    "urn:nhs-en:profile:nullificationDocument-v5-0",
)


class ConfigError(ValueError):
    """A setting has a value the adaptor cannot use; the message names the variable."""


def _text(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, "").strip()
    return value or default


def _list(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """Comma-separated list: items trimmed, empty items dropped."""
    return tuple(item.strip() for item in env.get(name, "").split(",") if item.strip())


def _semicolon_list(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """Entries separated by ``;`` or new lines (values that contain commas, such as distinguished names); a
    backslash-escaped ``\\;`` stays in its entry. Items trimmed, empty items dropped."""
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
    return tuple(entry.strip() for entry in entries if entry.strip())


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, not {raw!r}")


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, not {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, not {value}")
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


def _headers(env: Mapping[str, str], name: str) -> tuple[tuple[str, str], ...]:
    """A JSON object of HTTP header names to values, e.g. ``{"X-Api-Key": "..."}``."""
    raw = env.get(name, "").strip()
    if not raw:
        return ()
    try:
        parsed = json.loads(raw)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict) or not all(isinstance(v, str) for v in parsed.values()):
        raise ConfigError(f'{name} must be a JSON object of header names to strings, e.g. {{"X-Api-Key": "..."}}')
    return tuple((str(k), v) for k, v in parsed.items())


#: Password hash methods werkzeug.security writes (``generate_password_hash``); anything else is refused so
#: that a plain password pasted into PEM111_CONSOLE_USERS by mistake is never taken for a hash.
PASSWORD_HASH_METHODS = ("scrypt:", "pbkdf2:")

#: The shortest PEM111_CONSOLE_TOKEN accepted: a token is a password that never expires.
MIN_CONSOLE_TOKEN_LENGTH = 24


def _console_users(env: Mapping[str, str], name: str) -> tuple[tuple[str, str], ...]:
    """``user:<hash>,user:<hash>``: werkzeug password hashes contain ``:`` and ``$`` but never ``,``.

    Errors name the user, never the value (a mistaken entry may be a real password).
    """
    users: dict[str, str] = {}
    for entry in _list(env, name):
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
    return tuple(users.items())


def _console_token(env: Mapping[str, str], name: str) -> str:
    token = env.get(name, "").strip()
    if token and len(token) < MIN_CONSOLE_TOKEN_LENGTH:
        raise ConfigError(f"{name} must be at least {MIN_CONSOLE_TOKEN_LENGTH} characters long")
    return token


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = _text(env, name, default).lower()
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
    return value


@dataclass(frozen=True)
class Settings:
    """The adaptor's settings. Build with :meth:`from_env`; derive variants with :meth:`replace`."""

    # -- HTTP server -------------------------------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = 8080
    #: Paths the ITK endpoint answers on; the first one is the canonical path used in the served WSDL.
    report_paths: tuple[str, ...] = ("/report",)
    server_threads: int = 8
    max_request_bytes: int = 10 * MIB
    #: TLS in the adaptor's own server (see :mod:`adaptor.tls`): PEM files; no certificate = plain HTTP.
    tls_cert: str = ""
    tls_key: str = ""  # empty = the key is in the PEM111_TLS_CERT file
    #: CAs whose client certificates are accepted; set = client certificates required (mutual TLS).
    tls_client_ca: str = ""
    #: CRLs (PEM) of the client CAs: revoked client certificates are refused.
    tls_crl: str = ""
    #: Client certificate CNs or RFC 4514 subjects allowed (``;``-separated); empty = any the CA issued.
    tls_client_subjects: tuple[str, ...] = ()
    #: How often the TLS files are checked for changes and reloaded (0 = only on SIGHUP).
    tls_reload_seconds: float = 60.0

    # -- ITK / SOAP validation (wire-contract.md section 4) ----------------------------------------------------
    #: Strict profile: wsa:To, WS-Security Timestamp and Username (rules B5-B14). Reference default: off.
    soap_validation_enabled: bool = False
    #: Expected wsa:To values (rule B6) and MessageHeader.source.endpoint (the first one).
    soap_send_to: tuple[str, ...] = ("http://localhost:8080/report",)
    timestamp_skew_seconds: int = 300
    #: Usernames refused (B13) / the only usernames accepted when non-empty (B13).
    username_deny_list: tuple[str, ...] = ()
    username_allow_list: tuple[str, ...] = ()
    profile_ids: tuple[str, ...] = DEFAULT_PROFILE_IDS
    #: Sender ODS codes accepted from auditIdentity (rule C14); empty = any sender.
    sender_ods_list: tuple[str, ...] = ()
    itk_ods_code_list: tuple[str, ...] = ()
    itk_dos_id_list: tuple[str, ...] = ()
    itk_external_configuration_url: str = ""
    itk_fetch_interval_min: int = 5
    itk_require_addresslist: bool = False
    #: Folder holding the published schema pack (``iuc/`` and ``pathways/``) for rules D4-D6; empty = skipped.
    schema_dir: str = ""
    #: Folder holding the WSDL and the project's own XSDs; empty = ``wsdl/`` beside the package (source trees
    #: and editable installs). Installed wheels (the Docker image) point it at their copy.
    wsdl_dir: str = ""
    #: Level-2 CDA conformance (rule D5): off, warn or reject.
    cda_level2_validation: str = "warn"
    #: Answer ``OK:<MessageID>`` like the reference instead of the harness-conformant ``OK``.
    ok_with_message_id: bool = False

    # -- store, conversion, delivery --------------------------------------------------------------------------
    data_dir: str = "./var"
    database_url: str = ""
    forward_target: str = ""
    #: Device.version in every Bundle (the reference's application version).
    version: str = "1.0.3"
    validate_fhir: bool = False

    # -- delivery (outbox worker and forwarders) ----------------------------------------------------------------
    #: ``async``: answer OK once stored, deliver from the outbox; ``sync``: answer OK only once delivered.
    delivery_mode: str = "async"
    delivery_max_attempts: int = 30
    delivery_workers: int = 2
    delivery_backoff_initial_seconds: float = 1.0
    delivery_backoff_max_seconds: float = 300.0
    #: How long a worker owns a claimed message; after a crash another worker may take it over then.
    delivery_lease_seconds: int = 120
    delivery_poll_seconds: float = 1.0
    #: How long a delivery thread of ``nhs111 serve`` waits for a moment with no request in flight before it
    #: delivers the next message anyway (:mod:`adaptor.activity`); 0 = never wait.
    delivery_defer_seconds: float = 1.0
    #: The reference's broker settings: a broker URL here (and no PEM111_FORWARD_TARGET) selects AMQP delivery.
    amqp_broker: str = ""
    amqp_queue_name: str = "encounter-report"
    amqp_username: str = ""
    amqp_password: str = field(default="", repr=False)
    amqp_protocol: str = "1.0"
    amqp_port: int = 0  # 0 = the port in the broker URL, else the protocol default
    amqp_exchange: str = ""
    amqp_routing_key: str = ""  # empty = the queue name
    amqp_ssl_enabled: bool = False
    #: FHIR over HTTP: extra headers (JSON object), bearer token, client certificate, CA bundle, timeout.
    fhir_headers: tuple[tuple[str, str], ...] = ()
    fhir_bearer_token: str = field(default="", repr=False)
    fhir_client_cert: str = ""
    fhir_client_key: str = ""
    fhir_ca_bundle: str = ""
    fhir_timeout_seconds: float = 30.0

    # -- web console (adaptor.console) ---------------------------------------------------------------------------
    #: ``(user, werkzeug password hash)`` pairs; with no users and no token the console is off (404).
    console_users: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    #: A shared secret accepted as ``Authorization: Bearer <token>`` and on the sign-in form.
    console_token: str = field(default="", repr=False)
    #: Signs the session cookie; empty = a random key per process (restarts sign everyone out, and replicas
    #: behind one load balancer do not accept each other's sessions).
    console_secret_key: str = field(default="", repr=False)
    #: How long a sign-in lasts.
    console_session_hours: float = 8.0
    #: Always mark the session cookie Secure (it is anyway when the request arrived over https).
    console_secure_cookie: bool = False

    # -- operations ---------------------------------------------------------------------------------------------
    log_level: str = "INFO"
    #: ``json`` (one JSON object per line, for log collectors) or ``text`` (one readable line, for developers).
    log_format: str = "json"

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
        """Read every setting from ``env`` (default: ``os.environ``). Raises :class:`ConfigError`."""
        env = os.environ if env is None else env
        paths = _list(env, "PEM111_REPORT_PATH") or cls.report_paths
        for path in paths:
            if not path.startswith("/"):
                raise ConfigError(f"PEM111_REPORT_PATH entries must start with '/', not {path!r}")
        return cls(
            host=_text(env, "PEM111_HOST", cls.host),
            port=_int(env, "PEM111_PORT", cls.port, minimum=0),
            report_paths=paths,
            server_threads=_int(env, "PEM111_SERVER_THREADS", cls.server_threads, minimum=1),
            max_request_bytes=_int(env, "PEM111_MAX_REQUEST_BYTES", cls.max_request_bytes, minimum=1024),
            tls_cert=_text(env, "PEM111_TLS_CERT", ""),
            tls_key=_text(env, "PEM111_TLS_KEY", ""),
            tls_client_ca=_text(env, "PEM111_TLS_CLIENT_CA", ""),
            tls_crl=_text(env, "PEM111_TLS_CRL", ""),
            tls_client_subjects=_semicolon_list(env, "PEM111_TLS_CLIENT_SUBJECTS"),
            tls_reload_seconds=_float(env, "PEM111_TLS_RELOAD_SECONDS", cls.tls_reload_seconds),
            soap_validation_enabled=_bool(env, "PEM111_SOAP_VALIDATION_ENABLED", False),
            soap_send_to=_list(env, "PEM111_SOAP_SEND_TO") or cls.soap_send_to,
            timestamp_skew_seconds=_int(env, "PEM111_TIMESTAMP_SKEW_SECONDS", cls.timestamp_skew_seconds),
            username_deny_list=_list(env, "PEM111_USERNAME_DENY_LIST"),
            username_allow_list=_list(env, "PEM111_USERNAME_ALLOW_LIST"),
            profile_ids=DEFAULT_PROFILE_IDS + _list(env, "PEM111_ITK_PROFILE_IDS"),
            sender_ods_list=_list(env, "PEM111_ITK_SENDER_ODS_LIST"),
            itk_ods_code_list=_list(env, "PEM111_ITK_ODS_CODE_LIST"),
            itk_dos_id_list=_list(env, "PEM111_ITK_DOS_ID_LIST"),
            itk_external_configuration_url=_text(env, "PEM111_ITK_EXTERNAL_CONFIGURATION_URL", ""),
            itk_fetch_interval_min=_int(env, "PEM111_ITK_FETCH_INTERVAL_MIN", cls.itk_fetch_interval_min, 1),
            itk_require_addresslist=_bool(env, "PEM111_ITK_REQUIRE_ADDRESSLIST", False),
            schema_dir=_text(env, "PEM111_SCHEMA_DIR", ""),
            wsdl_dir=_text(env, "PEM111_WSDL_DIR", ""),
            cda_level2_validation=_choice(
                env, "PEM111_CDA_LEVEL2_VALIDATION", cls.cda_level2_validation, ("off", "warn", "reject")
            ),
            ok_with_message_id=_bool(env, "PEM111_OK_WITH_MESSAGE_ID", False),
            data_dir=_text(env, "PEM111_DATA_DIR", cls.data_dir),
            database_url=_text(env, "PEM111_DATABASE_URL", ""),
            forward_target=_text(env, "PEM111_FORWARD_TARGET", ""),
            version=_text(env, "PEM111_VERSION", cls.version),
            validate_fhir=_bool(env, "PEM111_VALIDATE_FHIR", False),
            delivery_mode=_choice(env, "PEM111_DELIVERY_MODE", cls.delivery_mode, ("async", "sync")),
            delivery_max_attempts=_int(env, "PEM111_DELIVERY_MAX_ATTEMPTS", cls.delivery_max_attempts, 1),
            delivery_workers=_int(env, "PEM111_DELIVERY_WORKERS", cls.delivery_workers, 0),
            delivery_backoff_initial_seconds=_float(
                env, "PEM111_DELIVERY_BACKOFF_INITIAL_SECONDS", cls.delivery_backoff_initial_seconds, 0.01
            ),
            delivery_backoff_max_seconds=_float(
                env, "PEM111_DELIVERY_BACKOFF_MAX_SECONDS", cls.delivery_backoff_max_seconds, 0.01
            ),
            delivery_lease_seconds=_int(env, "PEM111_DELIVERY_LEASE_SECONDS", cls.delivery_lease_seconds, 1),
            delivery_poll_seconds=_float(env, "PEM111_DELIVERY_POLL_SECONDS", cls.delivery_poll_seconds, 0.01),
            delivery_defer_seconds=_float(env, "PEM111_DELIVERY_DEFER_SECONDS", cls.delivery_defer_seconds, 0.0),
            amqp_broker=_text(env, "PEM111_AMQP_BROKER", ""),
            amqp_queue_name=_text(env, "PEM111_AMQP_QUEUE_NAME", cls.amqp_queue_name),
            amqp_username=_text(env, "PEM111_AMQP_USERNAME", ""),
            amqp_password=env.get("PEM111_AMQP_PASSWORD", ""),
            amqp_protocol=_choice(env, "PEM111_AMQP_PROTOCOL", cls.amqp_protocol, ("1.0", "0-9-1")),
            amqp_port=_int(env, "PEM111_AMQP_PORT", 0, 0),
            amqp_exchange=_text(env, "PEM111_AMQP_EXCHANGE", ""),
            amqp_routing_key=_text(env, "PEM111_AMQP_ROUTING_KEY", ""),
            amqp_ssl_enabled=_bool(env, "PEM111_AMQP_SSL_ENABLED", False),
            fhir_headers=_headers(env, "PEM111_FHIR_HEADERS"),
            fhir_bearer_token=env.get("PEM111_FHIR_BEARER_TOKEN", "").strip(),
            fhir_client_cert=_text(env, "PEM111_FHIR_CLIENT_CERT", ""),
            fhir_client_key=_text(env, "PEM111_FHIR_CLIENT_KEY", ""),
            fhir_ca_bundle=_text(env, "PEM111_FHIR_CA_BUNDLE", ""),
            fhir_timeout_seconds=_float(env, "PEM111_FHIR_TIMEOUT_SECONDS", cls.fhir_timeout_seconds, 0.1),
            console_users=_console_users(env, "PEM111_CONSOLE_USERS"),
            console_token=_console_token(env, "PEM111_CONSOLE_TOKEN"),
            console_secret_key=env.get("PEM111_CONSOLE_SECRET_KEY", "").strip(),
            console_session_hours=_float(env, "PEM111_CONSOLE_SESSION_HOURS", cls.console_session_hours, 0.05),
            console_secure_cookie=_bool(env, "PEM111_CONSOLE_SECURE_COOKIE", False),
            log_level=_choice(
                env, "PEM111_LOG_LEVEL", "info", ("debug", "info", "warning", "error", "critical")
            ).upper(),
            log_format=_choice(env, "PEM111_LOG_FORMAT", cls.log_format, ("json", "text")),
            extra={k: v for k, v in env.items() if k.startswith("PEM111_")},
        )
