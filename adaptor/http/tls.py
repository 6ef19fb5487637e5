"""TLS for ``nhs111 serve``: the server's :class:`ssl.SSLContext` built from the ``PEM111_TLS_*`` settings, the
allow-list of client certificate subjects, and reloading both files and context while the server runs.

What is checked where:

* **During the TLS handshake** (OpenSSL, through the context built here): with ``PEM111_TLS_CLIENT_CA`` set, a
  client must present a certificate that chains to a CA in that file and is within its validity period; with
  ``PEM111_TLS_CRL`` set, the client certificate must also not be revoked by a CRL of its issuer in that file
  (``VERIFY_CRL_CHECK_LEAF``: the client certificate itself, not its intermediate CAs). A client that fails any
  of these never gets an HTTP exchange.
* **After the handshake** (:class:`SubjectAllowList`): Python's :mod:`ssl` offers no certificate verification
  callback, so the subject allow-list ``PEM111_TLS_CLIENT_SUBJECTS`` is checked once the handshake has verified
  the certificate; :mod:`adaptor.http.server` then answers every request on that connection with HTTP 403
  ``Mutual authentication failed`` (the reference's proxy's answer) before the application sees it.

``PEM111_TLS_CLIENT_SUBJECTS`` holds entries separated by semicolons or new lines (a semicolon inside a DN is
escaped, ``\\;``, as RFC 4514 has it). An entry without ``=`` is a common name: it matches a certificate whose
subject has exactly one CN, that one (``RX701.oneoneone.nhs.uk``; a subject with several CNs matches no such entry,
as it could name a client besides the one allowed). An entry with ``=`` is a complete RFC 4514 distinguished name
(``CN=RX701.oneoneone.nhs.uk,O=Example Trust,C=GB``): it matches a certificate whose subject has exactly those
attributes, each as often, in the same RDNs, in that order (most specific first, as ``openssl x509 -noout
-subject -nameopt RFC2253`` prints it; OpenSSL's default output is in the opposite order). Attribute types and
values compare without regard to case or surrounding and repeated spaces. A refused client is logged with its
subject written that way.
"""

from __future__ import annotations

import logging
import os
import re
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adaptor.config import ConfigError, Settings

log = logging.getLogger("adaptor.tls")  # pinned: the JSON log format names it

#: The reference's answer (at its nginx) to a client that failed mutual authentication.
REFUSAL_TEXT = "Mutual authentication failed"

#: RFC 4514 short names and common aliases, mapped to Python's names for them (``getpeercert()``), lower-cased.
_ATTRIBUTE_ALIASES = {
    "cn": "commonname",
    "c": "countryname",
    "l": "localityname",
    "st": "stateorprovincename",
    "o": "organizationname",
    "ou": "organizationalunitname",
    "street": "streetaddress",
    "dc": "domaincomponent",
    "uid": "userid",
    "e": "emailaddress",
    "email": "emailaddress",
    "sn": "surname",
    "gn": "givenname",
}
#: Python's names for the attributes RFC 4514 writes with a short name.
_SHORT_NAMES = {
    "commonName": "CN",
    "countryName": "C",
    "localityName": "L",
    "stateOrProvinceName": "ST",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "streetAddress": "STREET",
    "domainComponent": "DC",
    "userId": "UID",
}
_ATTRIBUTE_TYPE = re.compile(r"[A-Za-z][A-Za-z0-9-]*|[0-9]+(?:\.[0-9]+)+")
_HEX_PAIR = re.compile(r"[0-9A-Fa-f]{2}")
_ESCAPABLE = frozenset('"+,;<>\\ #=')

#: One RDN's (attribute, value) keys, sorted: a multi-valued RDN's attributes are unordered, but each counts.
Rdn = tuple[tuple[str, str], ...]


def _attribute_key(name: str) -> str:
    lowered = name.strip().lower()
    return _ATTRIBUTE_ALIASES.get(lowered, lowered)


def _value_key(value: str) -> str:
    return " ".join(value.split()).casefold()


def _peer_rdns(peercert: Mapping[str, Any]) -> list[tuple[tuple[str, str], ...]]:
    """The subject's RDNs as ``getpeercert()`` gives them (certificate order: least specific first)."""
    return [tuple((str(name), str(value)) for name, value in rdn) for rdn in peercert.get("subject", ())]


def format_subject(peercert: Mapping[str, Any]) -> str:
    """A certificate's subject (from :meth:`ssl.SSLSocket.getpeercert`) as an RFC 4514 string."""
    rdns = []
    for rdn in reversed(_peer_rdns(peercert)):
        rdns.append("+".join(f"{_SHORT_NAMES.get(name, name)}={_escape(value)}" for name, value in rdn))
    return ",".join(rdns)


def _escape(value: str) -> str:
    escaped = "".join("\\" + char if char in '"+,;<>\\' else char for char in value)
    if escaped.startswith((" ", "#")):
        escaped = "\\" + escaped
    if escaped.endswith(" ") and not escaped.endswith("\\ "):
        escaped = escaped[:-1] + "\\ "
    return escaped.replace("\x00", "\\00")


def parse_dn(text: str) -> tuple[Rdn, ...]:
    """An RFC 4514 distinguished name as RDNs (most specific first), each its sorted (attribute, value) keys.

    Raises :class:`ValueError` saying what is wrong. Hex-encoded (``#...``) values are not supported.
    """
    rdns: list[Rdn] = []
    attributes: list[tuple[str, str]] = []
    position = 0
    while True:
        equals = text.find("=", position)
        if equals < 0:
            remainder = text[position:].strip()
            raise ValueError(f"{remainder!r} has no '='" if remainder else "nothing after the last ',' or '+'")
        name = text[position:equals].strip()
        if not _ATTRIBUTE_TYPE.fullmatch(name):
            raise ValueError(f"{name!r} is not an attribute type")
        value, position = _parse_value(text, equals + 1)
        attributes.append((_attribute_key(name), _value_key(value)))
        if position == len(text):
            rdns.append(tuple(sorted(attributes)))
            return tuple(rdns)
        if text[position] == ",":
            rdns.append(tuple(sorted(attributes)))
            attributes = []
        position += 1  # past ',' or '+'


def _parse_value(text: str, position: int) -> tuple[str, int]:
    """The value starting at ``position`` (escapes resolved), and the position of the ``,``/``+`` after it."""
    while position < len(text) and text[position] == " ":
        position += 1
    if text.startswith("#", position):
        raise ValueError("hex-encoded (#...) values are not supported: write the value as text")
    value: list[str] = []
    pending = bytearray()  # consecutive \XX escapes: the UTF-8 bytes of one or more characters
    while position < len(text) and text[position] not in ",+":
        char = text[position]
        if char == "\\":
            pair = text[position + 1 : position + 3]
            if _HEX_PAIR.fullmatch(pair):
                pending.append(int(pair, 16))
                position += 3
                continue
            if pair[:1] not in _ESCAPABLE:
                raise ValueError(f"'\\{pair[:1]}' is not an RFC 4514 escape")
            char = pair[0]
            position += 1
        elif char in '"<>;':
            raise ValueError(f"{char!r} must be escaped with a backslash")
        if pending:
            value.append(_utf8(pending))
            pending.clear()
        value.append(char)
        position += 1
    if pending:
        value.append(_utf8(pending))
    return "".join(value), position


def _utf8(data: bytearray) -> str:
    try:
        return bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("the \\XX escapes are not UTF-8") from None


@dataclass(frozen=True)
class SubjectAllowList:
    """The client certificate subjects ``PEM111_TLS_CLIENT_SUBJECTS`` admits (see the module's docstring).

    Empty: every certificate the handshake verified is admitted.
    """

    common_names: frozenset[str] = frozenset()
    names: frozenset[tuple[Rdn, ...]] = frozenset()

    @classmethod
    def parse(cls, entries: Iterable[str], variable: str = "PEM111_TLS_CLIENT_SUBJECTS") -> SubjectAllowList:
        """Raises :class:`ConfigError` naming ``variable`` and the entry at fault."""
        common_names, names = set(), set()
        for entry in entries:
            if "=" not in entry:
                common_names.add(_value_key(entry))
                continue
            try:
                names.add(parse_dn(entry))
            except ValueError as exc:
                raise ConfigError(f"{variable}: {entry!r} is not an RFC 4514 name: {exc}") from None
        return cls(frozenset(common_names), frozenset(names))

    @property
    def configured(self) -> bool:
        return bool(self.common_names or self.names)

    def __len__(self) -> int:
        return len(self.common_names) + len(self.names)

    def allows(self, peercert: Mapping[str, Any]) -> bool:
        """Whether a verified client certificate (``getpeercert()``) is admitted."""
        if not self.configured:
            return True
        rdns = _peer_rdns(peercert)
        common_names = [_value_key(value) for rdn in rdns for name, value in rdn if name == "commonName"]
        if len(common_names) == 1 and common_names[0] in self.common_names:
            return True
        subject = tuple(tuple(sorted((_attribute_key(n), _value_key(v)) for n, v in rdn)) for rdn in reversed(rdns))
        return subject in self.names


# -- the context -------------------------------------------------------------------------------------------------

_CERTIFICATE = b"-----BEGIN CERTIFICATE-----"
_CRL = b"-----BEGIN X509 CRL-----"
_PRIVATE_KEY = re.compile(rb"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----")
_ENCRYPTED_KEY = re.compile(rb"-----BEGIN ENCRYPTED PRIVATE KEY-----|Proc-Type: *4, *ENCRYPTED")


def _read(variable: str, path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{variable}: no such file: {path}") from None
    except OSError as exc:
        raise ConfigError(f"{variable}: cannot read {path}: {exc.strerror or exc}") from None


def _reason(exc: ssl.SSLError) -> str:
    return str(exc.reason or exc.strerror or exc).replace("_", " ").lower()


def check_combination(settings: Settings) -> None:
    """The TLS settings make sense together; raises :class:`ConfigError` naming the variable at fault.

    Anything but the server certificate is refused without it, so that a deployment that meant to require client
    certificates never serves plain HTTP because one variable is missing.
    """
    if settings.tls_cert:
        if settings.tls_crl and not settings.tls_client_ca:
            raise ConfigError("PEM111_TLS_CRL needs PEM111_TLS_CLIENT_CA: CRLs are checked for client certificates")
        if settings.tls_client_subjects and not settings.tls_client_ca:
            raise ConfigError("PEM111_TLS_CLIENT_SUBJECTS needs PEM111_TLS_CLIENT_CA (client certificates)")
        return
    for variable, value in (
        ("PEM111_TLS_KEY", settings.tls_key),
        ("PEM111_TLS_CLIENT_CA", settings.tls_client_ca),
        ("PEM111_TLS_CRL", settings.tls_crl),
        ("PEM111_TLS_CLIENT_SUBJECTS", settings.tls_client_subjects),
    ):
        if value:
            raise ConfigError(f"{variable} is set but PEM111_TLS_CERT is not: TLS needs the server's certificate")


def build_server_context(settings: Settings) -> ssl.SSLContext:
    """The server context for ``settings`` (``PEM111_TLS_CERT`` must be set): TLS 1.2 or later, the server's
    certificate chain and key, and, with ``PEM111_TLS_CLIENT_CA``, client certificates required and verified
    (with ``PEM111_TLS_CRL``, for revocation too).

    Raises :class:`ConfigError` naming the variable whose file is missing, unreadable or unusable.
    """
    check_combination(settings)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # Renegotiation is a way to make a server do handshake work on an established connection; never needed here.
    context.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE
    _load_server_certificate(context, settings.tls_cert, settings.tls_key)
    if settings.tls_client_ca:
        _load_pem(context, "PEM111_TLS_CLIENT_CA", settings.tls_client_ca, _CERTIFICATE, "certificate")
        context.verify_mode = ssl.CERT_REQUIRED
    if settings.tls_crl:
        _load_pem(context, "PEM111_TLS_CRL", settings.tls_crl, _CRL, "CRL (convert DER with `openssl crl`)")
        context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    return context


def _load_server_certificate(context: ssl.SSLContext, cert: str, key: str) -> None:
    cert_data = _read("PEM111_TLS_CERT", cert)
    if _CERTIFICATE not in cert_data:
        raise ConfigError(f"PEM111_TLS_CERT: no PEM certificate in {cert}")
    try:  # the certificate alone, so that a failure below can only be the key's
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_verify_locations(cafile=cert)
    except ssl.SSLError as exc:
        raise ConfigError(f"PEM111_TLS_CERT: cannot use {cert}: {_reason(exc)}") from None
    key_variable, key_path = ("PEM111_TLS_KEY", key) if key else ("PEM111_TLS_CERT", cert)
    key_data = _read(key_variable, key_path) if key else cert_data
    if not _PRIVATE_KEY.search(key_data):
        where = key_path if key else f"{cert}, and PEM111_TLS_KEY is not set"
        raise ConfigError(f"{key_variable}: no PEM private key in {where}")
    if _ENCRYPTED_KEY.search(key_data):
        raise ConfigError(f"{key_variable}: the key in {key_path} is encrypted; give the adaptor an unencrypted key")
    try:
        # A password callback, so that OpenSSL never prompts on a terminal for an encrypted key missed above.
        context.load_cert_chain(cert, key or None, password=lambda: b"")
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc.reason):
            raise ConfigError(
                f"{key_variable}: the key in {key_path} does not belong to the certificate in {cert}"
            ) from None
        raise ConfigError(f"{key_variable}: cannot use the key in {key_path}: {_reason(exc)}") from None


def _load_pem(context: ssl.SSLContext, variable: str, path: str, marker: bytes, what: str) -> None:
    data = _read(variable, path)
    if marker not in data:
        raise ConfigError(f"{variable}: no PEM {what} in {path}")
    if marker == _CRL and _CERTIFICATE in data:
        # load_verify_locations would trust them as CAs: a CRL file is no place for certificates.
        raise ConfigError(f"{variable}: {path} holds certificates as well as CRLs")
    try:
        context.load_verify_locations(cafile=path)
    except ssl.SSLError as exc:
        raise ConfigError(f"{variable}: cannot use {path}: {_reason(exc)}") from None


# -- handshakes --------------------------------------------------------------------------------------------------


def log_handshake_failure(client: str, error: BaseException | str | None) -> None:
    """Log why a TLS handshake with ``client`` (its address and port) did not complete: the error that ended it,
    or what happened instead."""
    if isinstance(error, str):
        _failed(client, error)
    elif isinstance(error, ssl.SSLCertVerificationError):
        _refused(client, f"client certificate refused: {error.verify_message}")
    elif isinstance(error, ssl.SSLError):
        reason = str(error.reason or error)
        if reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE":
            _refused(client, "no client certificate")
        elif isinstance(error, ssl.SSLEOFError | ssl.SSLZeroReturnError):
            _failed(client, "connection closed", level=logging.DEBUG)  # port probes, TCP health checks
        else:
            # E.g. "tlsv1 alert unknown ca": the client refused the server's certificate; "unsupported protocol".
            _failed(client, reason.replace("_", " ").lower())
    else:  # the client went away
        _failed(client, f"connection lost: {error}" if error else "connection closed", level=logging.DEBUG)


def _refused(client: str, reason: str) -> None:
    """The server refused the client: mutual authentication failed."""
    log.warning("TLS handshake refused", extra={"client": client, "reason": reason})


def _failed(client: str, reason: str, level: int = logging.INFO) -> None:
    """The handshake failed for another reason (the client's side, the protocol, the network)."""
    log.log(level, "TLS handshake failed", extra={"client": client, "reason": reason})


# -- the running server's TLS ------------------------------------------------------------------------------------

_FILE_SETTINGS = (
    ("PEM111_TLS_CERT", "tls_cert"),
    ("PEM111_TLS_KEY", "tls_key"),
    ("PEM111_TLS_CLIENT_CA", "tls_client_ca"),
    ("PEM111_TLS_CRL", "tls_crl"),
)

FileSignature = tuple[int, int, int] | None


class ServerTls:
    """The current server context and the subject allow-list; :meth:`reload_if_changed` swaps in a new context
    when one of the files changed (a new CRL, a renewed certificate), :meth:`reload` on request (SIGHUP).

    A context cannot forget a CRL it loaded, so a reload builds a new one; connections accepted from then on use
    it, established ones keep theirs. A reload that fails keeps the previous context and logs why.
    Raises :class:`ConfigError` when the settings are unusable at start-up.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.subjects = SubjectAllowList.parse(settings.tls_client_subjects)
        self._files = {
            variable: getattr(settings, name) for variable, name in _FILE_SETTINGS if getattr(settings, name)
        }
        self._signatures = self._current_signatures()
        self.context = build_server_context(settings)

    @property
    def client_certificates_required(self) -> bool:
        return self.context.verify_mode == ssl.CERT_REQUIRED

    def describe(self) -> str:
        """What is checked, for the start-up log line."""
        if not self.settings.tls_client_ca:
            return "server certificate only: client certificates are not requested"
        parts = [f"client certificates required from the CAs in {self.settings.tls_client_ca}"]
        parts.append(f"revocation checked against {self.settings.tls_crl}" if self.settings.tls_crl else "no CRL")
        parts.append(f"{len(self.subjects)} allowed subject(s)" if self.subjects.configured else "any subject")
        return ", ".join(parts)

    def reload_if_changed(self) -> bool:
        """Reload when a file's modification time, size or inode changed since the last (attempted) load."""
        signatures = self._current_signatures()
        if signatures == self._signatures:
            return False
        changed = sorted(v for v in signatures if signatures[v] != self._signatures.get(v))
        return self.reload(f"changed: {', '.join(changed)}", signatures)

    def reload(self, reason: str = "requested", signatures: dict[str, FileSignature] | None = None) -> bool:
        """Build a new context from the files; returns whether it replaced the current one."""
        # Remembered even when the load fails: a broken file is reported once, not at every check.
        self._signatures = signatures if signatures is not None else self._current_signatures()
        try:
            context = build_server_context(self.settings)
        except ConfigError as exc:
            log.error("TLS reload failed, keeping the previous certificates and CRL", extra={"error": str(exc)})
            return False
        self.context = context  # one attribute assignment: threads wrapping sockets see the old or the new one
        log.info("TLS certificates and CRL reloaded", extra={"reason": reason})
        return True

    def _current_signatures(self) -> dict[str, FileSignature]:
        signatures: dict[str, FileSignature] = {}
        for variable, path in self._files.items():
            try:
                stat = os.stat(path)  # follows symbolic links, as Kubernetes' secret volumes need
            except OSError:
                signatures[variable] = None
            else:
                signatures[variable] = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        return signatures
