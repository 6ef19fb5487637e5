"""The web console through Flask's test client: access control, CSRF, security headers, pages, replay, the
rejections table, and logs without query strings or patient data (issue 5).

The real browser flow against a running ``nhs111 serve`` is in ``test_console_browser.py``.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from itk_factory import NHS_NUMBER, NS, RECIPIENT_DOS, RECIPIENT_ODS, SENDER_ODS, build_request, find, to_bytes
from lxml import etree
from werkzeug.security import generate_password_hash
from werkzeug.test import Client

from adaptor.config import ConfigError, Settings
from adaptor.console.auth import Credentials, Identity, LoginThrottle, SignedOutSessions
from adaptor.console.cda_text import narrative_lines, readable_document
from adaptor.delivery.forwarders.folder import FolderForwarder
from adaptor.delivery.outbox import OutboxWorker
from adaptor.http.app import ReceiverApp, create_app
from adaptor.http.server import QueryStringRedactor
from adaptor.itk.allowlist import AllowList
from adaptor.samples import SCENARIOS, addressed_codes, build_sample
from adaptor.store import MessageQuery, MessageStore, Rejection, Status, StoreError

PASSWORD = "correct horse battery staple"
# pbkdf2 with few iterations: the format operators use, at a cost that keeps the tests quick.
PASSWORD_HASH = generate_password_hash(PASSWORD, method="pbkdf2:sha256:1000")
TOKEN = "t0ken-for-scripts-0123456789abcdef"
SECRET_KEY = "a-fixed-secret-key-for-the-tests-0123456789"
PATIENT_NAMES = ("Synthetic", "Testpatient")


@dataclass
class Console:
    """An adaptor with the console on, a store, and a worker that delivers only when told to (``drain``)."""

    app: ReceiverApp
    store: MessageStore
    worker: OutboxWorker
    settings: Settings
    outbox: Path

    @property
    def client(self) -> FlaskClient:
        return self.app.site.test_client()

    def close(self) -> None:
        self.app.close()
        self.store.close()

    def post_report(self, root: etree._Element) -> int:
        return self.post_raw(to_bytes(root))

    def post_raw(self, raw: bytes) -> int:
        return Client(self.app).post("/report", data=raw, content_type="text/xml").status_code

    def accept(self, **changes: object) -> tuple[str, str]:
        """Send a valid synthetic request; returns its (MessageID, trackingid)."""
        root = build_request(**changes)  # type: ignore[arg-type]
        assert self.post_report(root) == 200
        message_id = find(root, "wsa:MessageID").text or ""
        tracking_id = find(root, "itk:header").get("trackingid") or ""
        return message_id, tracking_id

    def record_id(self, message_id: str) -> str:
        [record] = self.store.find_by_message_id(message_id)
        return record.id

    def status(self, message_id: str) -> Status:
        [record] = self.store.find_by_message_id(message_id)
        return record.status

    def dead_letter(self) -> tuple[str, str]:
        """A message whose delivery failed for good: the outbox folder is a regular file, one attempt allowed."""
        self.outbox.parent.mkdir(parents=True, exist_ok=True)
        aside = self.outbox.with_name("outbox-aside")
        if self.outbox.exists():
            self.outbox.rename(aside)
        self.outbox.write_text("not a folder")
        message_id, tracking_id = self.accept()
        self.worker.drain()
        self.outbox.unlink()
        if aside.exists():
            aside.rename(self.outbox)
        assert self.status(message_id) is Status.DEAD_LETTER
        return message_id, tracking_id


def _message_id(raw: bytes) -> str:
    found = re.search(rb"<wsa:MessageID>([^<]+)<", raw)
    assert found
    return found.group(1).decode()


def console_settings(tmp_path: Path, **changes: object) -> Settings:
    codes = addressed_codes()  # the samples' recipients too
    settings = Settings(
        data_dir=str(tmp_path / "data"),
        forward_target=f"dir:{tmp_path / 'outbox'}",
        itk_ods_code_list=(RECIPIENT_ODS, *codes.ods_codes),
        itk_dos_id_list=(RECIPIENT_DOS, *codes.dos_ids),
        delivery_workers=0,
        delivery_max_attempts=1,
        console_users=(("alice", PASSWORD_HASH),),
        console_token=TOKEN,
        console_secret_key=SECRET_KEY,
    )
    return settings.replace(**changes)


def open_console(tmp_path: Path, **changes: object) -> Console:
    settings = console_settings(tmp_path, **changes)
    store = MessageStore.from_settings(settings)
    store.open()
    outbox = tmp_path / "outbox"
    forwarder = FolderForwarder(outbox)
    worker = OutboxWorker(settings, store, forwarder, threads=0)
    app = create_app(settings, store=store, forwarder=forwarder, allow_list=AllowList(settings), worker=worker)
    return Console(app, store, worker, settings, outbox)


@pytest.fixture
def console(tmp_path: Path) -> Iterator[Console]:
    running = open_console(tmp_path)
    yield running
    running.close()


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF token in the page"
    return match.group(1)


def sign_in(client: FlaskClient, user: str = "alice", password: str = PASSWORD) -> str:
    """Sign in through the form; returns the session's CSRF token."""
    token = csrf_of(client.get("/console/login").text)
    response = client.post("/console/login", data={"username": user, "password": password, "csrf_token": token})
    assert response.status_code == 303, response.text
    return csrf_of(client.get("/console/messages").text)


def confirmed(csrf: str, mode: str) -> dict[str, str]:
    """The form of the replay's confirmation page, as its button posts it."""
    return {"csrf_token": csrf, "mode": mode, "confirmed": "yes"}


def set_cookie_header(response: object) -> str:
    headers = response.headers.getlist("Set-Cookie")  # type: ignore[attr-defined]
    [cookie] = [h for h in headers if h.startswith("nhs111_console=")]
    return str(cookie)


# == on and off ==================================================================================================


def test_without_credentials_the_console_is_off(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="adaptor.console")
    running = open_console(tmp_path, console_users=(), console_token="")
    try:
        client = running.client
        for path in ("/console", "/console/", "/console/login", "/console/messages", "/console/static/console.css"):
            assert client.get(path).status_code == 404, path
        assert client.post("/console/login", data={"username": "alice"}).status_code == 404
        assert client.get("/healthz").status_code == 200
    finally:
        running.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "adaptor.console"]
    assert lines == ["web console off: set PEM111_CONSOLE_USERS or PEM111_CONSOLE_TOKEN to serve it at /console"]
    assert all(r.levelno == logging.INFO for r in caplog.records if r.name == "adaptor.console")


def test_every_page_needs_a_sign_in(console: Console) -> None:
    message_id, _ = console.accept()
    record_id = console.record_id(message_id)
    client = console.client
    for path in ("/console/", "/console/messages", f"/console/messages/{record_id}", "/console/rejections"):
        response = client.get(path)
        assert response.status_code == 303 and response.headers["Location"] == "/console/login", path
        assert message_id not in response.text
    # A POST without a session has no CSRF token: refused before anything is looked at.
    assert client.post(f"/console/messages/{record_id}/replay").status_code == 403
    # The stylesheet is not secret: the sign-in page needs it.
    css = client.get("/console/static/console.css")
    assert css.status_code == 200 and css.mimetype == "text/css"


def test_console_settings_are_checked(tmp_path: Path) -> None:
    two = f"alice:{PASSWORD_HASH}, bob:{PASSWORD_HASH}"
    settings = Settings.from_env({"PEM111_CONSOLE_USERS": two})
    assert [user for user, _ in settings.console_users] == ["alice", "bob"]
    assert settings.console_enabled and "pbkdf2" not in repr(settings)
    with pytest.raises(ConfigError, match="'alice' is not a password hash") as plain:
        Settings.from_env({"PEM111_CONSOLE_USERS": "alice:hunter2hunter2"})
    assert "hunter2" not in str(plain.value)
    with pytest.raises(ConfigError, match="listed twice"):
        Settings.from_env({"PEM111_CONSOLE_USERS": f"alice:{PASSWORD_HASH},alice:{PASSWORD_HASH}"})
    with pytest.raises(ConfigError, match="PEM111_CONSOLE_TOKEN must be at least 24"):
        Settings.from_env({"PEM111_CONSOLE_TOKEN": "short"})
    assert not Settings.from_env({}).console_enabled


# == signing in and out ==========================================================================================


def test_sign_in_sets_a_strict_http_only_cookie_scoped_to_the_console(console: Console) -> None:
    client = console.client
    token = csrf_of(client.get("/console/login").text)
    response = client.post("/console/login", data={"username": "alice", "password": PASSWORD, "csrf_token": token})
    assert response.status_code == 303 and response.headers["Location"] == "/console/messages"
    cookie = set_cookie_header(response)
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console" in cookie
    assert "Secure" not in cookie  # plain http: a Secure cookie would never come back
    assert PASSWORD not in cookie and PASSWORD_HASH not in cookie
    page = client.get("/console/messages")
    assert page.status_code == 200 and "Signed in as alice" in page.text


def test_the_cookie_is_secure_over_https(console: Console) -> None:
    client = console.client
    token = csrf_of(client.get("/console/login", base_url="https://console.test").text)
    response = client.post(
        "/console/login",
        data={"username": "alice", "password": PASSWORD, "csrf_token": token},
        base_url="https://console.test",
    )
    assert response.status_code == 303
    assert "Secure" in set_cookie_header(response)


def test_wrong_credentials_are_refused_alike(console: Console) -> None:
    client = console.client
    token = csrf_of(client.get("/console/login").text)
    for user, password in (("alice", "wrong"), ("mallory", PASSWORD), ("", "not-the-token")):
        response = client.post("/console/login", data={"username": user, "password": password, "csrf_token": token})
        assert response.status_code == 401
        assert "The user name or password is not right." in response.text
    assert client.get("/console/messages").status_code == 303


def test_the_token_signs_in_on_the_form_and_as_a_bearer_token(console: Console) -> None:
    client = console.client
    token = csrf_of(client.get("/console/login").text)
    response = client.post("/console/login", data={"username": "", "password": TOKEN, "csrf_token": token})
    assert response.status_code == 303
    assert "Signed in as token" in client.get("/console/messages").text

    scripted = console.client  # no cookie at all
    page = scripted.get("/console/messages", headers={"Authorization": f"Bearer {TOKEN}"})
    assert page.status_code == 200 and "Set-Cookie" not in page.headers
    refused = scripted.get("/console/messages", headers={"Authorization": "Bearer wrong-token"})
    assert refused.status_code == 401 and refused.headers["WWW-Authenticate"].startswith("Bearer")


def test_a_bearer_token_replays_without_csrf(console: Console) -> None:
    message_id, _ = console.dead_letter()
    record_id = console.record_id(message_id)
    response = console.client.post(
        f"/console/messages/{record_id}/replay",
        data={"confirmed": "yes"},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert response.status_code == 303
    assert console.status(message_id) is Status.PENDING


def test_sign_out_ends_the_session(console: Console) -> None:
    client = console.client
    csrf = sign_in(client)
    response = client.post("/console/logout", data={"csrf_token": csrf})
    assert response.status_code == 303 and response.headers["Location"] == "/console/login"
    assert client.get("/console/messages").status_code == 303
    assert "You are signed out." in client.get("/console/login").text


def test_a_signed_out_session_cookie_replayed_is_refused(console: Console) -> None:
    client = console.client
    csrf = sign_in(client)
    stolen = client.get_cookie("nhs111_console", path="/console")
    assert stolen is not None
    assert client.post("/console/logout", data={"csrf_token": csrf}).status_code == 303

    replaying = console.client
    replaying.set_cookie("nhs111_console", stolen.value, path="/console")
    response = replaying.get("/console/messages")
    assert response.status_code == 303 and response.headers["Location"] == "/console/login"
    # The same user's other sessions are not affected; a new sign-in works.
    other = console.client
    sign_in(other)
    assert other.get("/console/messages").status_code == 200


def test_a_session_from_before_revocation_has_no_id_and_is_refused(console: Console) -> None:
    client = console.client
    sign_in(client)
    assert client.get("/console/messages").status_code == 200
    with client.session_transaction("/console/messages") as session:
        del session["sid"]
    assert client.get("/console/messages").status_code == 303


def test_signed_out_sessions_are_forgotten_once_they_would_have_expired() -> None:
    signed_out = SignedOutSessions()
    signed_out.revoke("a", time.time() + 60)
    signed_out.revoke("gone", time.time() - 1)  # expired already: nothing to remember
    assert "a" in signed_out and "gone" not in signed_out
    signed_out.revoke("b", time.time() + 0.05)
    time.sleep(0.1)
    signed_out.revoke("c", time.time() + 60)  # each revocation drops the expired ones
    assert "b" not in signed_out._until and {"a", "c"} <= set(signed_out._until)


def test_sessions_expire(console: Console) -> None:
    client = console.client
    sign_in(client)
    with client.session_transaction() as session:
        session["at"] = time.time() - console.settings.console_session_hours * 3600 - 1
    assert client.get("/console/messages").status_code == 303


def test_a_changed_password_ends_the_sessions_made_with_the_old_one() -> None:
    settings = Settings(console_users=(("alice", PASSWORD_HASH),))
    before = Credentials(settings, SECRET_KEY)
    identity = before.check_password("alice", PASSWORD)
    assert identity == Identity("alice", "password")
    fingerprint = before.fingerprint(identity)
    assert fingerprint is not None and before.still_valid(identity, fingerprint)
    new_hash = generate_password_hash("another one", method="pbkdf2:sha256:1000")
    changed = Credentials(settings.replace(console_users=(("alice", new_hash),)), SECRET_KEY)
    removed = Credentials(settings.replace(console_users=(("bob", PASSWORD_HASH),)), SECRET_KEY)
    other_key = Credentials(settings, "another secret key")
    assert not changed.still_valid(identity, fingerprint)
    assert not removed.still_valid(identity, fingerprint)
    assert not other_key.still_valid(identity, fingerprint)


def test_repeated_failures_are_throttled(console: Console) -> None:
    client = console.client
    token = csrf_of(client.get("/console/login").text)
    for _ in range(LoginThrottle().limit):
        client.post("/console/login", data={"username": "alice", "password": "guess", "csrf_token": token})
    blocked = client.post("/console/login", data={"username": "alice", "password": PASSWORD, "csrf_token": token})
    assert blocked.status_code == 429 and int(blocked.headers["Retry-After"]) > 0
    assert client.get("/console/messages", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 429


def test_the_throttle_forgets_after_its_window() -> None:
    throttle = LoginThrottle(limit=2, window=0.2)
    throttle.failed("client")
    throttle.failed("client")
    assert throttle.retry_after("client") > 0
    time.sleep(0.25)
    assert throttle.retry_after("client") == 0


# == CSRF and headers ============================================================================================


def test_replay_without_a_valid_csrf_token_is_refused(console: Console) -> None:
    message_id, _ = console.dead_letter()
    record_id = console.record_id(message_id)
    client = console.client
    csrf = sign_in(client)
    url = f"/console/messages/{record_id}/replay"
    for data in ({}, {"csrf_token": "forged"}, {"csrf_token": ""}):
        response = client.post(url, data=data)
        assert response.status_code == 403 and "This form has expired" in response.text
    # The right token from another site: refused on the Origin (or Referer) header.
    assert client.post(url, data={"csrf_token": csrf}, headers={"Origin": "https://evil.example"}).status_code == 403
    assert client.post(url, data={"csrf_token": csrf}, headers={"Origin": "null"}).status_code == 403
    referer = {"Referer": "https://evil.example/console/messages"}
    assert client.post(url, data={"csrf_token": csrf}, headers=referer).status_code == 403
    assert console.status(message_id) is Status.DEAD_LETTER

    same_site = {"Origin": "http://localhost", "Referer": f"http://localhost/console/messages/{record_id}"}
    assert client.post(url, data={"csrf_token": csrf, "confirmed": "yes"}, headers=same_site).status_code == 303
    assert console.status(message_id) is Status.PENDING


def test_the_login_form_is_csrf_protected_too(console: Console) -> None:
    client = console.client
    client.get("/console/login")
    response = client.post("/console/login", data={"username": "alice", "password": PASSWORD})
    assert response.status_code == 403
    assert client.get("/console/messages").status_code == 303


def test_security_headers(console: Console) -> None:
    message_id, _ = console.accept()
    client = console.client
    responses = {"login": client.get("/console/login")}
    sign_in(client)
    responses["list"] = client.get("/console/messages")
    responses["message"] = client.get(f"/console/messages/{message_id}")
    responses["missing"] = client.get("/console/messages/no-such-message")
    for name, response in responses.items():
        headers = response.headers
        assert headers["Content-Security-Policy"].startswith("default-src 'self'"), name
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"], name
        assert headers["X-Frame-Options"] == "DENY", name
        assert headers["X-Content-Type-Options"] == "nosniff", name
        assert headers["Cache-Control"] == "no-store", name
    assert responses["missing"].status_code == 404


def test_pages_load_nothing_from_elsewhere(console: Console) -> None:
    message_id, _ = console.accept()
    client = console.client
    sign_in(client)
    pages = [client.get("/console/messages").text, client.get(f"/console/messages/{message_id}").text]
    pages.append(client.get("/console/static/console.css").text)
    for page in pages:
        assert "<script" not in page
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
        assert "@import" not in page and "url(" not in page


def test_forms_are_small(console: Console) -> None:
    client = console.client
    client.get("/console/login")
    response = client.post("/console/login", data={"username": "x" * 100_000, "password": "y"})
    assert response.status_code == 413


# == pages =======================================================================================================


def test_counters_filters_and_search(console: Console) -> None:
    delivered_id, delivered_tracking = console.accept()
    console.worker.drain()
    dead_id, dead_tracking = console.dead_letter()
    other_id, _ = console.accept(
        addresses=[("urn:nhs-uk:addressing:ods:XOTHER", None), (RECIPIENT_DOS, "2.16.840.1.113883.2.1.3.2.4.18.44")]
    )
    root = build_request()
    find(root, "itk:header/itk:manifest").set("count", "7")  # refused (C4): a rejection
    assert console.post_report(root) == 500
    client = console.client
    sign_in(client)

    page = client.get("/console/messages").text
    for counter, value in (("received", 4), ("accepted", 3), ("rejected", 1), ("delivered", 1), ("dead-letter", 1)):
        assert re.search(rf'id="count-{counter}">{value}<', page), counter
    assert all(i in page for i in (delivered_id, dead_id, other_id))

    dead_letters = client.get("/console/messages?status=dead_letter").text
    assert dead_id in dead_letters and delivered_id not in dead_letters and other_id not in dead_letters

    def found(query: str) -> set[str]:
        page = client.get("/console/messages", query_string={"q": query}).text
        return {i for i in (delivered_id, dead_id, other_id) if i in page}

    assert found(delivered_tracking) == {delivered_id}
    assert found(dead_tracking.lower()) == {dead_id}
    assert found(other_id.lower()) == {other_id}
    assert found("xother") == {other_id}
    assert found(RECIPIENT_ODS) == {delivered_id, dead_id}
    assert found(SENDER_ODS) == {delivered_id, dead_id, other_id}
    assert found("no-such-thing") == set()
    assert found("%") == set()  # LIKE wildcards are taken literally
    # Search and filter together.
    page = client.get("/console/messages", query_string={"q": RECIPIENT_ODS, "status": "delivered"}).text
    assert delivered_id in page and dead_id not in page


def test_the_list_is_paginated(console: Console) -> None:
    accepted = [console.accept()[0] for _ in range(27)]
    client = console.client
    sign_in(client)
    first = client.get("/console/messages").text
    second = client.get("/console/messages?page=2").text
    assert "Page 1 of 2" in first and "Page 2 of 2" in second
    on_first = {i for i in accepted if i in first}
    on_second = {i for i in accepted if i in second}
    assert len(on_first) == 25 and len(on_second) == 2 and not on_first & on_second
    assert set(accepted[-25:]) == on_first  # newest first
    assert 'href="/console/messages?page=2"' in first
    # Out-of-range and junk page numbers show a page rather than failing.
    assert "Page 2 of 2" in client.get("/console/messages?page=99").text
    assert "Page 1 of 2" in client.get("/console/messages?page=abc").text


def test_the_message_page(console: Console) -> None:
    dead_id, dead_tracking = console.dead_letter()
    client = console.client
    sign_in(client)
    page = client.get(f"/console/messages/{dead_id}").text
    for fact in (dead_id, dead_tracking, RECIPIENT_ODS, RECIPIENT_DOS, f"urn:nhs-uk:identity:ods:{SENDER_ODS}"):
        assert fact in page
    assert "Dead letter" in page and 'id="replay"' in page
    assert "Patient&#39;s Reported Condition" in page and "Synthetic test report, no real patient." in page
    # The attempt and its error, and the Bundle converted for it.
    assert page.count("<td>failed</td>") == 1 and 'id="last-error"' in page and "File exists" in page
    assert "&#34;resourceType&#34;: &#34;Bundle&#34;" in page and "Preview" not in page
    # The Bundle is stored at acceptance: shown before the first attempt too.
    pending_id, _ = console.accept()
    pending = client.get(f"/console/messages/{pending_id}").text
    assert "Preview" not in pending and "&#34;resourceType&#34;: &#34;Bundle&#34;" in pending
    assert "No delivery attempt yet." in pending and "version 1" in pending
    # A message without one (stored before schema version 2): a preview, said to be one.
    with console.store.engine.begin() as conn:
        forget = "UPDATE messages SET bundle = NULL, bundle_version = NULL WHERE message_id = ?"
        conn.exec_driver_sql(forget, (pending_id,))
    pending = client.get(f"/console/messages/{pending_id}").text
    assert "Preview: this message has no stored Bundle" in pending
    assert "&#34;resourceType&#34;: &#34;Bundle&#34;" in pending

    record_id = console.record_id(dead_id)
    assert dead_tracking in client.get(f"/console/messages/{record_id}").text  # by record id too
    assert client.get("/console/messages/unknown").status_code == 404


def test_a_reused_message_id_lists_its_messages(console: Console) -> None:
    message_id, _ = console.accept()
    console.accept(message_id=message_id)  # new content (new trackingid), same MessageID: a second message
    client = console.client
    sign_in(client)
    page = client.get(f"/console/messages/{message_id}").text
    records = console.store.find_by_message_id(message_id)
    assert len(records) == 2 and "was used by 2 different messages" in page
    assert all(f'href="/console/messages/{r.id}"' in page for r in records)


HOSTILE = '<script>alert("cda")</script><img src=x onerror=alert(1)>'


def test_hostile_cda_text_is_shown_as_text(console: Console) -> None:
    root = build_request()
    document = root.find(".//hl7:ClinicalDocument", NS)
    assert document is not None
    section = document.find(".//hl7:section", NS)
    assert section is not None
    section.find("hl7:title", NS).text = HOSTILE  # type: ignore[union-attr]
    text = section.find("hl7:text", NS)
    assert text is not None
    text.text = HOSTILE
    # Markup in the narrative that is not CDA's (a script element in the HL7 namespace, an XHTML one).
    etree.SubElement(text, "{urn:hl7-org:v3}script").text = "alert('element')"
    etree.SubElement(text, "{http://www.w3.org/1999/xhtml}iframe", src="https://evil.example/")
    assert console.post_report(root) == 200
    message_id = find(root, "wsa:MessageID").text
    client = console.client
    sign_in(client)
    page = client.get(f"/console/messages/{message_id}").text
    assert "<script" not in page and "<img" not in page and "<iframe" not in page
    assert "&lt;script&gt;alert(&#34;cda&#34;)&lt;/script&gt;" in page
    assert "alert(&#39;element&#39;)" in page  # the element's text, as text


def test_replay_one_message_after_confirming_and_a_selection(console: Console) -> None:
    first_id, _ = console.dead_letter()
    second_id, _ = console.dead_letter()
    client = console.client
    csrf = sign_in(client)
    record_id = console.record_id(first_id)

    # The message page links to a confirmation page, which says what will happen and changes nothing.
    page = client.get(f"/console/messages/{record_id}").text
    assert f'href="/console/messages/{record_id}/replay?mode=redeliver"' in page
    confirm = client.get(f"/console/messages/{record_id}/replay?mode=redeliver")
    assert confirm.status_code == 200 and "Redeliver this Bundle?" in confirm.text
    said = " ".join(re.sub(r"<[^>]+>", "", confirm.text).split())
    assert "The stored Bundle (version 1) will be queued for delivery again, byte for byte" in said
    assert "recorded in the message's history as yours (alice)" in said
    assert console.status(first_id) is Status.DEAD_LETTER
    # A post without the confirmation's field is sent back to the confirmation page.
    unconfirmed = client.post(f"/console/messages/{record_id}/replay", data={"csrf_token": csrf})
    assert unconfirmed.status_code == 303 and unconfirmed.headers["Location"].endswith("/replay?mode=redeliver")
    assert console.status(first_id) is Status.DEAD_LETTER

    response = client.post(
        f"/console/messages/{record_id}/replay", data={"csrf_token": csrf, "mode": "redeliver", "confirmed": "yes"}
    )
    assert response.status_code == 303 and response.headers["Location"] == f"/console/messages/{record_id}"
    page = client.get(response.headers["Location"]).text
    assert "Queued for delivery again (it was dead letter), with the same Bundle." in page
    # The replay is in the message's history with the operator's name.
    [action] = console.store.operator_actions(record_id)
    assert (action.operator, action.action) == ("alice", "redeliver")
    assert action.detail == "was dead_letter; Bundle version 1"
    assert re.search(r'id="actions".*<td>alice</td>\s*<td>redeliver</td>', page, re.S)
    console.worker.drain()
    assert console.status(first_id) is Status.DELIVERED
    # A delivered message can be replayed too, but the confirmation says the target gets it again.
    again = client.get(f"/console/messages/{record_id}/replay?mode=redeliver").text
    assert 'id="already-delivered"' in again

    # A selection: the dead letters, confirmed on a page that lists them.
    selection = client.get("/console/replay?dead_letters=1")
    assert selection.status_code == 200 and second_id in selection.text and first_id not in selection.text
    response = client.post(
        "/console/replay",
        data={"csrf_token": csrf, "confirmed": "yes", "mode": "reconvert", "record": [console.record_id(second_id)]},
    )
    assert response.status_code == 303
    assert "1 message(s) queued for delivery again (reconvert)." in client.get("/console/messages").text
    [action] = console.store.operator_actions(console.record_id(second_id))
    assert action.action == "reconvert" and action.detail == "was dead_letter; Bundle version 2"
    console.worker.drain()
    assert console.status(second_id) is Status.DELIVERED
    assert client.post("/console/replay", data={"csrf_token": csrf, "record": ["x"]}).status_code == 400
    nothing = client.get("/console/replay")
    assert nothing.status_code == 303
    confirm_unknown = {"csrf_token": csrf, "confirmed": "yes"}
    assert client.post("/console/messages/unknown/replay", data=confirm_unknown).status_code == 404


def test_a_read_only_operator_cannot_replay(tmp_path: Path) -> None:
    running = open_console(
        tmp_path,
        console_users=(("alice", PASSWORD_HASH), ("rita", PASSWORD_HASH)),
        console_read_only_users=("rita",),
    )
    try:
        message_id, _ = running.dead_letter()
        record_id = running.record_id(message_id)
        client = running.client
        csrf = sign_in(client, "rita")
        page = client.get(f"/console/messages/{record_id}").text
        assert 'id="banner"' in page and 'id="replay"' not in page and 'id="reconvert"' not in page
        assert 'name="record"' not in client.get("/console/messages").text  # no selection boxes
        confirmed = {"csrf_token": csrf, "confirmed": "yes"}
        for method, url, data in (
            ("get", f"/console/messages/{record_id}/replay", None),
            ("post", f"/console/messages/{record_id}/replay", confirmed),
            ("get", "/console/replay?dead_letters=1", None),
            ("post", "/console/replay", {**confirmed, "record": [record_id]}),
        ):
            response = getattr(client, method)(url, data=data)
            assert response.status_code == 403, url
            assert "may look at messages but not replay them" in response.text
        assert running.status(message_id) is Status.DEAD_LETTER
        assert running.store.operator_actions(record_id) == []
    finally:
        running.close()
    with pytest.raises(ConfigError, match="'nobody', not in PEM111_CONSOLE_USERS"):
        Settings.from_env(
            {"PEM111_CONSOLE_USERS": f"alice:{PASSWORD_HASH}", "PEM111_CONSOLE_READ_ONLY_USERS": "nobody"}
        )


def test_find_by_patient_and_the_banner(console: Console) -> None:
    """The samples' patients: found by NHS number (with spaces), name prefix in any case, date of birth; the
    state tabs count what the search finds; the banner, the downloads and the times in UK time."""
    samples = {s.name: build_sample(s) for s in SCENARIOS}
    for raw in samples.values():
        assert console.post_raw(raw) == 200
    console.worker.drain()
    client = console.client
    sign_in(client)
    gp = console.store.list_messages(where=MessageQuery(search=_message_id(samples["gp-referral"])))[0]
    assert gp.index is not None and gp.index.nhs_number and gp.index.patient_name
    number = gp.index.nhs_number

    def found(**args: str) -> list[str]:
        page = client.get("/console/messages", query_string=args)
        assert page.status_code == 200, page.text
        return re.findall(r'<td class="mono"><a href="/console/messages/([^"]+)">', page.text)

    spaced = f"{number[:3]} {number[3:6]} {number[6:]}"
    assert gp.id in found(q=spaced) and gp.id in found(nhs_number=spaced)
    by_number = found(nhs_number=number)
    family = gp.index.patient_name.split()[-1]
    assert gp.id in found(name=family[:4].lower()) and gp.id in found(name=family[:3].upper())
    assert set(by_number) <= set(found(name=family.lower()))
    assert gp.id in found(born=gp.index.birth_date or "", name=family[:2])
    assert found(name="zzzz") == []
    assert gp.id in found(disposition=gp.index.disposition_code or "")
    assert found(**{"from": "2000-01-01", "to": "2000-01-02"}) == []
    assert gp.id in found(**{"from": "2000-01-01"})
    # The tabs count the search: all of the patient's messages are delivered.
    page = client.get("/console/messages", query_string={"nhs_number": number}).text
    assert re.search(rf'id="tab-all">All <span class="filters__count">{len(by_number)}<', page)
    assert re.search(rf'id="tab-delivered">Delivered <span class="filters__count">{len(by_number)}<', page)
    assert re.search(r'id="tab-dead_letter">Dead letter <span class="filters__count">0<', page)
    bad = client.get("/console/messages", query_string={"born": "17/10/1942"})
    assert bad.status_code == 400 and "is not a date" in bad.text

    page = client.get(f"/console/messages/{gp.id}").text
    banner = page[page.index('id="banner"') : page.index("</section>")]
    assert gp.index.patient_name in banner and spaced in banner
    assert (gp.index.disposition_code or "") in banner and (gp.index.receiving_service or "") in banner
    assert re.search(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} (GMT|BST)", page)
    raw = client.get(f"/console/messages/{gp.id}/request.xml")
    assert raw.data == samples["gp-referral"] and "attachment" in raw.headers["Content-Disposition"]
    cda = client.get(f"/console/messages/{gp.id}/cda.xml")
    assert cda.status_code == 200 and b"<ClinicalDocument" in cda.data and b"Envelope" not in cda.data
    bundle = client.get(f"/console/messages/{gp.id}/bundle.json")
    assert bundle.data.decode() == console.store.get(gp.id).bundle  # type: ignore[union-attr]
    assert client.get("/console/messages/unknown/bundle.json").status_code == 404


def test_numbered_pages_keep_the_search(console: Console) -> None:
    for _ in range(51):
        console.accept()
    client = console.client
    sign_in(client)
    page = client.get("/console/messages", query_string={"name": "testp", "page": "2"}).text
    assert 'aria-current="page">2<' in page and "Page 2 of 3" in page
    assert 'href="/console/messages?page=3&amp;name=testp"' in page
    assert 'href="/console/messages?page=1&amp;name=testp"' in page


def test_conversion_warnings_are_shown_and_filterable(console: Console) -> None:
    message_id, _ = console.accept()
    record_id = console.record_id(message_id)
    with console.store.engine.begin() as conn:
        conn.exec_driver_sql(
            "UPDATE message_index SET warnings = ? WHERE record_id = ?",
            ('["Pathways attachment could not be decoded; delivered without Pathways data"]', record_id),
        )
    other_id, _ = console.accept()
    client = console.client
    sign_in(client)
    listed = client.get("/console/messages", query_string={"warnings": "1"}).text
    assert message_id in listed and other_id not in listed
    page = client.get(f"/console/messages/{record_id}").text
    assert 'id="warnings"' in page and "delivered without Pathways data" in page


# == rejections ==================================================================================================


def test_refusals_are_recorded_without_content(console: Console) -> None:
    root = build_request(tracking_id="TRACK-REFUSED-1")
    find(root, "itk:header/itk:manifest").set("count", "7")
    message_id = find(root, "wsa:MessageID").text
    assert console.post_report(root) == 500
    assert Client(console.app).post("/report", data=b"<not-soap/>", content_type="text/xml").status_code == 500
    too_big = b"x" * (console.settings.max_request_bytes + 1)
    assert Client(console.app).post("/report", data=too_big, content_type="text/xml").status_code == 500

    newest_first = console.store.list_rejections()
    assert [(r.rule, r.error_code) for r in newest_first] == [("A1", 1000), ("A4", 1000), ("C4", 1000)]
    c4 = newest_first[2]
    assert (c4.message_id, c4.tracking_id, c4.sender_ods) == (message_id, "TRACK-REFUSED-1", SENDER_ODS)
    assert c4.error_text == "Manifest count and payload count don't match" and c4.error_id
    assert newest_first[0].message_id is None and newest_first[0].tracking_id is None
    assert console.store.count_rejections() == 3

    client = console.client
    sign_in(client)
    page = client.get("/console/rejections").text
    assert "TRACK-REFUSED-1" in page and "Manifest count and payload count don&#39;t match" in page
    assert NHS_NUMBER not in page
    assert "TRACK-REFUSED-1" in client.get("/console/messages").text  # the recent rejections


class RejectionsFail(MessageStore):
    def record_rejection(self, rejection: Rejection) -> None:
        raise StoreError("message store failure: OperationalError: disk I/O error")


def test_a_store_failure_while_recording_a_rejection_changes_no_answer(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = console_settings(tmp_path)
    answers = []
    for store in (MessageStore.from_settings(settings), RejectionsFail.from_settings(settings)):
        app = create_app(settings, store=store, forwarder=FolderForwarder(tmp_path / "outbox"))
        try:
            root = build_request(message_id="SAME-ID")
            find(root, "itk:header/itk:manifest").set("count", "7")
            response = Client(app).post("/report", data=to_bytes(root), content_type="text/xml")
            body = re.sub(rb"<(\w+:)?(MessageID|ErrorID)>[^<]*<", b"<id><", response.data)
            answers.append((response.status_code, body))
        finally:
            app.close()
            store.close()
    assert answers[0] == answers[1] and answers[0][0] == 500
    assert "could not record the rejection" in caplog.text


# == logs ========================================================================================================


def test_the_access_log_has_route_templates_and_no_query_strings_or_patient_data(
    console: Console, caplog: pytest.LogCaptureFixture
) -> None:
    message_id, tracking_id = console.accept()
    client = console.client
    sign_in(client)
    caplog.clear()
    caplog.set_level(logging.DEBUG)
    client.get("/console/messages", query_string={"q": NHS_NUMBER, "status": "pending"})
    client.get("/console/messages", query_string={"q": "Testpatient"})
    client.get(f"/console/messages/{message_id}?q={NHS_NUMBER}")
    client.get("/console/messages/Testpatient-Synthetic")

    access = [r.getMessage() for r in caplog.records if r.name == "adaptor.console.access"]
    assert len(access) == 4
    assert access[0].startswith("GET /console/messages 200 ") and access[0].endswith(" user=alice")
    assert access[2].startswith("GET /console/messages/<key> 200 ")
    assert access[3].startswith("GET /console/messages/<key> 404 ")
    everything = "\n".join(r.getMessage() for r in caplog.records)
    for secret in (NHS_NUMBER, *PATIENT_NAMES, "q=", tracking_id):
        assert secret not in everything, secret


def test_http_server_log_lines_lose_their_query_strings() -> None:
    redactor = QueryStringRedactor()
    record = logging.LogRecord(
        "tornado.application",
        logging.ERROR,
        __file__,
        1,
        "Exception while serving %s",
        ("/console/messages?q=9990001235",),
        None,
    )
    assert redactor.filter(record)
    assert record.getMessage() == "Exception while serving /console/messages?<query omitted>"
    werkzeug = logging.LogRecord(
        "werkzeug", logging.INFO, __file__, 1, '"GET /console/messages?q=Smith&page=2 HTTP/1.1" 200 -', None, None
    )
    redactor.filter(werkzeug)
    assert werkzeug.getMessage() == '"GET /console/messages?<query omitted> HTTP/1.1" 200 -'
    ours = logging.LogRecord("adaptor.soap", logging.INFO, __file__, 1, "SOAPAction %r", ("urn:x?y",), None)
    redactor.filter(ours)
    assert ours.getMessage() == "SOAPAction 'urn:x?y'"


# == the CDA text ================================================================================================


def _text(markup: str) -> etree._Element:
    return etree.fromstring(f'<text xmlns="urn:hl7-org:v3">{markup}</text>')


def test_narrative_lines() -> None:
    assert narrative_lines(None) == ()
    assert narrative_lines(_text("  plain   text  ")) == ("plain text",)
    assert narrative_lines(_text("<content>one</content><br/><content>two</content> tail")) == ("one", "two tail")
    paragraphs = "<paragraph>first</paragraph><paragraph>second <content>part</content></paragraph>"
    assert narrative_lines(_text(paragraphs)) == ("first", "second part")
    assert narrative_lines(_text("<list><item>a</item><item>b <content>c</content></item></list>")) == (
        "\u2022 a",
        "\u2022 b c",
    )
    table = (
        "<table><thead><tr><th>Q</th><th>A</th></tr></thead>"
        "<tbody><tr><td>Asked</td><td>Yes</td></tr></tbody></table>"
    )
    assert narrative_lines(_text(table)) == ("Q | A", "Asked | Yes")
    assert narrative_lines(_text("<!-- note -->visible<?pi x?>")) == ("visible",)


def test_readable_document_of_a_sample_and_of_junk() -> None:
    sample = Path(__file__).resolve().parents[1] / "samples" / "gp-referral.xml"
    document = readable_document(sample.read_bytes())
    assert document.problem is None and document.title
    titles = [section.title for section in document.sections]
    assert "Patient's Reported Condition" in titles and "Permission to View" in titles
    assert all(section.title or section.lines for section in document.sections)
    junk = readable_document(b"<not-a-request/>")
    assert junk.sections == () and junk.problem and "not" in junk.problem


# == the store's search ==========================================================================================


def test_message_queries_and_rejection_listing(console: Console) -> None:

    first_id, first_tracking = console.accept()
    console.accept()
    store = console.store
    assert store.count_messages() == 2
    assert [m.message_id for m in store.list_messages(where=MessageQuery(tracking_id=first_tracking))] == [first_id]
    assert store.count_messages(MessageQuery(statuses=(Status.DELIVERED,))) == 0
    future = store.list_messages(where=MessageQuery(since=store.list_messages()[0].received_at))
    assert len(future) >= 1
    store.record_rejection(Rejection("C4", 1000, "text", "ID-1", message_id=" x " + "y" * 500))
    [rejection] = store.list_rejections()
    assert rejection.message_id is not None and len(rejection.message_id) == 200
    assert rejection.rejected_at is not None and rejection.error_code == 1000
