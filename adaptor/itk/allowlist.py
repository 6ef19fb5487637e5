"""The addressing allow-list (wire-contract.md section 7, rule C17): which recipients this receiver accepts.

Two sources, used together: static lists from the settings (``PEM111_ITK_ODS_CODE_LIST``,
``PEM111_ITK_DOS_ID_LIST``) and a JSON document ``{"odsCodes": [...], "dosIds": [...]}`` fetched from
``PEM111_ITK_EXTERNAL_CONFIGURATION_URL`` and re-polled every ``PEM111_ITK_FETCH_INTERVAL_MIN`` minutes. A
message is accepted when any of its addresses is on either list.

A successful fetch replaces the previously fetched lists; a failed one keeps them. An unreachable URL never
stops the service: until the first successful fetch only the static lists apply, and with none of those
:meth:`AllowList.check` answers 2100 (retry later, rule E1).

The list fails closed: :func:`require_allow_list` refuses to serve without one unless
``PEM111_ITK_ACCEPT_ANY_ADDRESS=true`` says that every recipient is to be accepted (development), and a message
without an ``itk:addresslist`` is refused unless ``PEM111_ITK_REQUIRE_ADDRESSLIST=false`` (the reference always
refuses it; the IUC DMS allows senders to leave the list out).
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from adaptor.config import ConfigError, Settings
from adaptor.itk.faults import ItkFault, invalid, retryable
from adaptor.itk.message import Address
from adaptor.itk.wire import DOS_ADDRESS_TYPE, ITK_ADDRESS_TYPE, ODS_ADDRESS_PREFIX

log = logging.getLogger("adaptor.allowlist")

#: The settings that configure an allow-list, in the order error messages name them.
LIST_SETTINGS = ("PEM111_ITK_ODS_CODE_LIST", "PEM111_ITK_DOS_ID_LIST", "PEM111_ITK_EXTERNAL_CONFIGURATION_URL")

#: The remote document is a few kilobytes; anything much larger is not an allow-list.
MAX_DOCUMENT_BYTES = 5 * 1024 * 1024
FETCH_TIMEOUT_SECONDS = 10.0


def ods_code(address: Address) -> str | None:
    """The ODS part of an ITK address ``urn:nhs-uk:addressing:ods:<ODS>[:<suffix>]``, as written; ``None`` for
    other addresses. ``@type`` must be absent or the ITK address type."""
    if address.type is not None and address.type.strip() != ITK_ADDRESS_TYPE:
        return None
    uri = address.uri.strip()
    if not uri.lower().startswith(ODS_ADDRESS_PREFIX):
        return None
    return uri[len(ODS_ADDRESS_PREFIX) :].strip() or None


def dos_id(address: Address) -> str | None:
    """The DoS service id of a ``...18.44`` address (trimmed ``@uri``); ``None`` for other addresses."""
    if address.type is None or address.type.strip() != DOS_ADDRESS_TYPE:
        return None
    return address.uri.strip() or None


@dataclass(frozen=True)
class _Lists:
    """One consistent snapshot: ODS codes folded to lower case, DoS ids as strings."""

    ods_codes: frozenset[str]
    dos_ids: frozenset[str]

    @classmethod
    def of(cls, ods_codes: Iterable[str], dos_ids: Iterable[str]) -> _Lists:
        return cls(
            frozenset(c.strip().lower() for c in ods_codes if c.strip()),
            frozenset(d.strip() for d in dos_ids if d.strip()),
        )

    def __or__(self, other: _Lists) -> _Lists:
        return _Lists(self.ods_codes | other.ods_codes, self.dos_ids | other.dos_ids)

    def __bool__(self) -> bool:
        return bool(self.ods_codes or self.dos_ids)

    def accepts(self, address: Address) -> bool:
        ods = ods_code(address)
        if ods is not None:
            # The whole remainder ("5L399:445510770") or its first token ("5L399") may be the listed code.
            return ods.lower() in self.ods_codes or ods.split(":", 1)[0].strip().lower() in self.ods_codes
        dos = dos_id(address)
        return dos is not None and dos in self.dos_ids


def require_allow_list(settings: Settings) -> None:
    """Refuse to serve the endpoint without an allow-list (:class:`ConfigError`, one line naming the settings),
    unless ``PEM111_ITK_ACCEPT_ANY_ADDRESS=true`` (:meth:`AllowList.start` then says so, once).

    The two together are refused too: a list that would silently not apply, or not be meant, is a mistake either
    way. Called once at start-up, before anything is opened.
    """
    configured = [
        name
        for name, value in zip(
            LIST_SETTINGS,
            (settings.itk_ods_code_list, settings.itk_dos_id_list, settings.itk_external_configuration_url.strip()),
            strict=True,
        )
        if value
    ]
    if settings.itk_accept_any_address and configured:
        raise ConfigError(
            f"PEM111_ITK_ACCEPT_ANY_ADDRESS=true and an addressing allow-list ({', '.join(configured)}) are both "
            "set: keep one of them"
        )
    if not configured and not settings.itk_accept_any_address:
        raise ConfigError(
            f"no addressing allow-list: set {', '.join(LIST_SETTINGS[:-1])} or {LIST_SETTINGS[-1]} to the recipients "
            "this receiver accepts, or PEM111_ITK_ACCEPT_ANY_ADDRESS=true to accept any (development only)"
        )


class AllowListDocumentError(ValueError):
    """The fetched document is not ``{"odsCodes": [...], "dosIds": [...]}``."""


def parse_document(data: bytes) -> tuple[list[str], list[str]]:
    """The ODS codes and DoS ids of a remote allow-list document; numbers are taken as their decimal text.

    Raises :class:`AllowListDocumentError`.
    """
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise AllowListDocumentError(f"not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise AllowListDocumentError("not a JSON object")
    return _string_list(document, "odsCodes"), _string_list(document, "dosIds")


def _string_list(document: dict[str, object], key: str) -> list[str]:
    values = document.get(key)
    if not isinstance(values, list):
        raise AllowListDocumentError(f"{key!r} is missing or not an array")
    out = []
    for value in values:
        # bool is an int subclass; true/false are not ids.
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise AllowListDocumentError(f"{key!r} holds a value that is neither a string nor a number")
        out.append(str(int(value)) if isinstance(value, float) and value.is_integer() else str(value))
    return out


def _fetch_url(url: str) -> bytes:
    """GET ``url`` (http or https only) and return at most :data:`MAX_DOCUMENT_BYTES` bytes of body."""
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"unsupported URL scheme {scheme!r}")
    # The scheme is checked above, so urllib cannot be steered to file: or a custom handler (ruff S310).
    request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310
    with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT_SECONDS) as response:  # noqa: S310
        data: bytes = response.read(MAX_DOCUMENT_BYTES + 1)
    if len(data) > MAX_DOCUMENT_BYTES:
        raise ValueError("allow-list document is too large")
    return data


class AllowList:
    """Rule C17 over every ``itk:address`` of a message.

    Call :meth:`start` once at startup to begin polling the remote document in a daemon thread and
    :meth:`stop` at shutdown; :meth:`refresh` fetches once, synchronously. ``fetch`` replaces the HTTP
    client and ``interval_seconds`` the polling interval (both for tests).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        fetch: Callable[[str], bytes] = _fetch_url,
        interval_seconds: float | None = None,
    ) -> None:
        self._static = _Lists.of(settings.itk_ods_code_list, settings.itk_dos_id_list)
        self._url = settings.itk_external_configuration_url.strip()
        self._interval_seconds = interval_seconds or max(1, settings.itk_fetch_interval_min) * 60.0
        self._require_addresslist = settings.itk_require_addresslist
        self._fetch = fetch
        self._fetched: _Lists | None = None  # None until the first successful fetch
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def configured(self) -> bool:
        """True when a static list or a URL is configured; otherwise every address is accepted (served only
        with ``PEM111_ITK_ACCEPT_ANY_ADDRESS=true``, see :func:`require_allow_list`)."""
        return bool(self._static) or bool(self._url)

    @property
    def ready(self) -> bool:
        """True when the check can run: static lists exist or the remote document has been fetched."""
        return not self.configured or bool(self._static) or self._fetched is not None

    @property
    def ods_codes(self) -> frozenset[str]:
        """The ODS codes currently accepted (lower case)."""
        return self._current().ods_codes

    @property
    def dos_ids(self) -> frozenset[str]:
        """The DoS ids currently accepted."""
        return self._current().dos_ids

    def _current(self) -> _Lists:
        with self._lock:
            fetched = self._fetched
        return self._static | fetched if fetched is not None else self._static

    def refresh(self) -> bool:
        """Fetch the remote document once. On success its lists replace the previously fetched ones; on
        failure (logged) the last good lists stay. Returns whether it succeeded (``False`` without a URL)."""
        if not self._url:
            return False
        try:
            ods_codes, dos_ids = parse_document(self._fetch(self._url))
        except Exception as exc:  # any network, HTTP or format failure: keep serving the last good lists
            state = "keeping the last good lists" if self._fetched is not None else "no remote lists yet"
            log.warning("allow-list fetch from %s failed (%s): %s", self._url, exc, state)
            return False
        lists = _Lists.of(ods_codes, dos_ids)
        with self._lock:
            self._fetched = lists
        log.info(
            "allow-list fetched from %s: %d ODS codes, %d DoS ids",
            self._url,
            len(lists.ods_codes),
            len(lists.dos_ids),
        )
        return True

    def start(self) -> None:
        """Poll the remote document now and then every ``PEM111_ITK_FETCH_INTERVAL_MIN`` minutes, in a daemon
        thread (nothing to do without a URL). Returns at once: a slow or dead URL never delays startup.

        Without any list, say once, here at start-up rather than with every message, that messages for any
        recipient are accepted."""
        if not self.configured:
            log.warning(
                "no addressing allow-list (PEM111_ITK_ACCEPT_ANY_ADDRESS=true): messages for any recipient are "
                "accepted; in production set %s",
                " or ".join(LIST_SETTINGS),
            )
        if not self._url or self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._poll, name="allow-list-poll", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = 5.0) -> None:
        """Stop polling; wait up to ``timeout`` seconds for the thread (a fetch in flight is not cut)."""
        self._stopping.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)

    def _poll(self) -> None:
        while not self._stopping.is_set():
            self.refresh()
            self._stopping.wait(self._interval_seconds)

    def check(self, addresses: Sequence[Address] | None, relates_to: str | None = None) -> None:
        """Accept the message or raise :class:`ItkFault`.

        ``addresses`` are all ``itk:address`` of the message, ``None`` when it has no ``itk:addresslist``.
        Raises C17 (1000 ``Message rejected``) when no address is on the lists, or when there is no addresslist
        and ``PEM111_ITK_REQUIRE_ADDRESSLIST`` is on (the default); E1 (2100) while the remote lists have never
        been loaded and no static list exists. With no list configured every address is accepted: whether that
        may be served is decided once, at start-up (:func:`require_allow_list`).
        """
        if addresses is None:
            if self._require_addresslist:
                raise self._rejected((), relates_to)
            return  # allowed by the setting: the endpoint was resolved through DoS already (IUC DMS)
        if not self.configured:
            return  # PEM111_ITK_ACCEPT_ANY_ADDRESS=true (require_allow_list refuses to serve otherwise)
        if not self.ready:
            raise retryable("Recipient allow-list not loaded yet", relates_to=relates_to)
        lists = self._current()
        if not any(lists.accepts(address) for address in addresses):
            raise self._rejected(addresses, relates_to)

    @staticmethod
    def _rejected(addresses: Sequence[Address], relates_to: str | None) -> ItkFault:
        ods = [code.split(":", 1)[0] for code in (ods_code(a) for a in addresses) if code]
        dos = [i for i in (dos_id(a) for a in addresses) if i]
        return invalid(
            "C17",
            "Message rejected",
            f"Both ODS code ({', '.join(ods)}) and DOS ID ({', '.join(dos)}) are invalid",
            relates_to=relates_to,
        )
