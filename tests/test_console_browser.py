"""The console in a real browser: headless Chromium (Debian's ``chromium`` + ``chromium-driver``) driven by
selenium against a real ``nhs111 serve``, with JavaScript switched off (the console must not need it).

The acceptance flow of issue 5: sign in, find a dead letter by its trackingid, open it, replay it and see it
delivered. Issue 15's: find a referral by NHS number and by name, open it, see the patient banner, confirm a
replay and see it in the message's history, choose messages to replay, and a read-only operator who cannot.
Screenshots go to ``tests/artifacts/console/`` (git-ignored). ``UPDATE_DOCS_SCREENSHOT=1`` also rewrites the
README's pictures, ``docs/console.png`` and ``docs/console-*.png`` (synthetic sample data only).

Without the browser the tests skip on a developer machine and FAIL under CI (``CI`` set): ``.ci/run`` installs
it, so CI can never pass by skipping them.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from conftest import REPO
from server_fixture import RunningServer, start_server
from unavailable import unavailable
from werkzeug.security import generate_password_hash

from adaptor.samples import SCENARIOS, addressed_codes, build_sample
from adaptor.store import Status

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = REPO / "tests" / "artifacts" / "console"
DOCS_SCREENSHOT = REPO / "docs" / "console.png"

USER, PASSWORD = "operator", "synthetic-console-password"
#: A user of PEM111_CONSOLE_READ_ONLY_USERS: may look, may not replay.
READER = "reader"
#: The README's pictures of issue 15's pages: artefact name -> docs file.
DOCS_PAGES = {
    "7-search-by-nhs-number": "console-search.png",
    "9-message-banner": "console-message.png",
    "10-confirm-replay": "console-confirm-replay.png",
    "11-replay-in-history": "console-history.png",
    "12-confirm-selection": "console-confirm-selection.png",
    "13-read-only": "console-read-only.png",
}
WINDOW = (1400, 1000)

#: The scenario that is dead-lettered and replayed; the others are delivered at once.
DEAD_SCENARIO = "ed-referral"


def _require_browser() -> None:
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package")
    if missing:
        unavailable(f"console browser tests need {', '.join(missing)} (apt-get install chromium chromium-driver)")


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    _require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tmp_path_factory.mktemp("chromium-profile")
    for argument in (
        "--headless=new",
        "--no-sandbox",  # tests run as root
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        f"--user-data-dir={profile}",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        "--lang=en-GB",
    ):
        options.add_argument(argument)
    # No JavaScript at all: every page and form must work without it.
    options.add_experimental_option("prefs", {"profile.managed_default_content_settings.javascript": 2})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def screenshot(driver: object, name: str) -> Path:
    """A full-page PNG in the artefacts folder (the window is stretched to the page, then restored)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    metrics = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})  # type: ignore[attr-defined]
    height = int(metrics["cssContentSize"]["height"])
    driver.set_window_size(WINDOW[0], max(WINDOW[1], min(height + 150, 6000)))  # type: ignore[attr-defined]
    try:
        assert driver.save_screenshot(str(path))  # type: ignore[attr-defined]
    finally:
        driver.set_window_size(*WINDOW)  # type: ignore[attr-defined]
    return path


def wait_for(driver: object, what: str, condition: object, timeout: float = 15.0) -> None:
    """Wait until ``condition(driver)`` is true: a click that submits a form returns before the next page is
    there. On a time-out the page is saved as a screenshot for the diagnosis."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition)  # type: ignore[arg-type]
    except TimeoutException:
        screenshot(driver, "timed-out")
        raise AssertionError(f"timed out waiting for {what} (at {driver.current_url})") from None  # type: ignore[attr-defined]


def on_page(path: str, element_id: str) -> object:
    """A wait condition: the browser shows ``path`` (query string ignored) and the element is there."""
    from selenium.webdriver.common.by import By

    def arrived(driver: object) -> bool:
        url = driver.current_url.split("?", 1)[0]  # type: ignore[attr-defined]
        return url.endswith(path) and bool(driver.find_elements(By.ID, element_id))  # type: ignore[attr-defined]

    return arrived


def sign_in(driver: object, server: RunningServer, user: str = USER) -> None:
    from selenium.webdriver.common.by import By

    driver.delete_all_cookies()  # type: ignore[attr-defined]
    driver.get(f"{server.base_url}/console/")  # type: ignore[attr-defined]
    wait_for(driver, "the sign-in page", on_page("/console/login", "sign-in"))
    driver.find_element(By.ID, "username").send_keys(user)  # type: ignore[attr-defined]
    driver.find_element(By.ID, "password").send_keys(PASSWORD)  # type: ignore[attr-defined]
    driver.find_element(By.ID, "sign-in").click()  # type: ignore[attr-defined]
    wait_for(driver, "the message list", on_page("/console/messages", "messages"))


def _post(server: RunningServer, body: bytes) -> requests.Response:
    return requests.post(server.report_url, data=body, headers={"Content-Type": "text/xml"}, timeout=30)


def _identifiers(raw: bytes) -> tuple[str, str]:
    message_id = re.search(rb"<wsa:MessageID>([^<]+)<", raw)
    tracking_id = re.search(rb'trackingid="([^"]+)"', raw)
    assert message_id and tracking_id
    return message_id.group(1).decode(), tracking_id.group(1).decode()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    _require_browser()
    codes = addressed_codes()
    running = start_server(
        tmp_path_factory.mktemp("console-server"),
        PEM111_ITK_ODS_CODE_LIST=",".join(codes.ods_codes),
        PEM111_ITK_DOS_ID_LIST=",".join(codes.dos_ids),
        PEM111_CONSOLE_USERS=f"{USER}:{generate_password_hash(PASSWORD)},{READER}:{generate_password_hash(PASSWORD)}",
        PEM111_CONSOLE_READ_ONLY_USERS=READER,
        PEM111_CONSOLE_SECRET_KEY="synthetic-test-secret-key-0123456789abcdef",
        PEM111_DELIVERY_MAX_ATTEMPTS="1",
        PEM111_DELIVERY_POLL_SECONDS="0.2",
    )
    try:
        yield running
    finally:
        running.stop()


def test_find_open_and_replay_a_dead_letter(browser: object, server: RunningServer) -> None:
    from selenium.webdriver.common.by import By

    driver = browser
    find = driver.find_element  # type: ignore[attr-defined]

    # A real dead letter: the delivery folder is a regular file and one attempt is allowed.
    server.outbox.parent.mkdir(parents=True, exist_ok=True)
    server.outbox.write_text("not a folder")
    dead_raw = build_sample(next(s for s in SCENARIOS if s.name == DEAD_SCENARIO))
    dead_id, dead_tracking = _identifiers(dead_raw)
    assert _post(server, dead_raw).status_code == 200
    server.wait_for_status(dead_id, Status.DEAD_LETTER)
    server.outbox.unlink()
    # The rest of the catalogue is delivered; one refused request shows in the rejections.
    for scenario in SCENARIOS:
        if scenario.name != DEAD_SCENARIO:
            raw = build_sample(scenario)
            assert _post(server, raw).status_code == 200
            server.wait_for_status(_identifiers(raw)[0])
    # A sample with a broken manifest (rule C4): its MessageID, trackingid and sender are recorded, nothing else.
    refused = build_sample(SCENARIOS[0]).replace(b'<itk:manifest count="1">', b'<itk:manifest count="2">', 1)
    refused_id, refused_tracking = _identifiers(refused)
    assert _post(server, refused).status_code == 500

    # Signing in.
    driver.delete_all_cookies()  # type: ignore[attr-defined]
    driver.get(f"{server.base_url}/console/")  # type: ignore[attr-defined]
    wait_for(driver, "the sign-in page", on_page("/console/login", "sign-in"))
    screenshot(driver, "1-sign-in")
    find(By.ID, "username").send_keys(USER)
    find(By.ID, "password").send_keys(PASSWORD)
    find(By.ID, "sign-in").click()
    wait_for(driver, "the message list", on_page("/console/messages", "messages"))
    cookie = driver.get_cookie("nhs111_console")  # type: ignore[attr-defined]
    assert cookie and cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/console"
    assert find(By.ID, "count-dead-letter").text == "1"
    assert find(By.ID, "count-rejected").text == "1"
    assert find(By.ID, "count-delivered").text == str(len(SCENARIOS) - 1)
    list_page = screenshot(driver, "2-messages")

    # Finding the dead letter by its trackingid.
    find(By.ID, "q").send_keys(dead_tracking)
    find(By.ID, "search").click()
    wait_for(driver, "the search result", lambda d: "q=" in d.current_url and d.find_elements(By.ID, "messages"))
    rows = driver.find_elements(By.CSS_SELECTOR, "#messages tbody tr")  # type: ignore[attr-defined]
    assert len(rows) == 1 and dead_id in rows[0].text and "Dead letter" in rows[0].text
    screenshot(driver, "3-search-by-trackingid")

    # Opening it: envelope, CDA sections beside the Bundle, history and error.
    rows[0].find_element(By.LINK_TEXT, dead_id).click()
    wait_for(driver, "the message page", lambda d: d.find_elements(By.ID, "envelope"))
    assert find(By.ID, "tracking-id").text == dead_tracking
    assert find(By.ID, "state").text == "Dead letter"
    assert "File exists" in find(By.ID, "last-error").text
    assert "Patient's Reported Condition" in find(By.ID, "cda").text
    assert '"resourceType": "Bundle"' in find(By.ID, "bundle").text
    assert "failed" in find(By.ID, "history").text
    screenshot(driver, "4-dead-letter")

    # Replaying it: a page says what will happen; confirmed, it is queued, then delivered by the server's worker.
    find(By.ID, "replay").click()
    wait_for(driver, "the confirmation", lambda d: d.find_elements(By.ID, "confirm"))
    assert "will be queued for delivery again" in find(By.ID, "what-happens").text
    find(By.ID, "confirm").click()
    wait_for(driver, "the replay notice", lambda d: d.find_elements(By.CSS_SELECTOR, "[role=status]"))
    assert "Queued for delivery again (it was dead letter), with the same Bundle." in find(
        By.CSS_SELECTOR, "[role=status]"
    ).text
    deadline = time.monotonic() + 30
    while find(By.ID, "state").text != "Delivered":
        assert time.monotonic() < deadline, f"still {find(By.ID, 'state').text}"
        time.sleep(0.3)
        driver.refresh()  # type: ignore[attr-defined]
    history = find(By.ID, "history").text
    assert "failed" in history and "delivered" in history
    screenshot(driver, "5-delivered")
    [record] = server.stored(dead_id)
    assert record.status is Status.DELIVERED and record.replays == 1

    # The rejections page, then signing out.
    find(By.LINK_TEXT, "Rejections").click()
    wait_for(driver, "the rejections", lambda d: d.current_url.endswith("/console/rejections"))
    rejections = find(By.TAG_NAME, "main").text
    assert "Manifest count and payload count don't match" in rejections
    assert refused_id in rejections and refused_tracking in rejections
    screenshot(driver, "6-rejections")
    find(By.ID, "sign-out").click()
    wait_for(driver, "the sign-in page", on_page("/console/login", "sign-in"))
    assert "You are signed out." in find(By.TAG_NAME, "main").text
    driver.get(f"{server.base_url}/console/messages")  # type: ignore[attr-defined]
    wait_for(driver, "the sign-in page", on_page("/console/login", "sign-in"))

    # The server's log: the search went through a query string, which is never logged, nor any patient data.
    log = server.log_text()
    assert "GET /console/messages 200" in log and "GET /console/messages/<key> 200" in log
    assert "q=" not in log and "?" not in "".join(line for line in log.splitlines() if "console" in line)
    nhs_numbers = set(re.findall(rb'extension="(999\d{7})"', dead_raw))
    assert nhs_numbers and not [n for n in nhs_numbers if n.decode() in log]
    assert "Traceback" not in log

    if os.environ.get("UPDATE_DOCS_SCREENSHOT"):
        shutil.copyfile(list_page, DOCS_SCREENSHOT)


def test_find_a_patient_confirm_a_replay_and_see_it_in_the_history(browser: object, server: RunningServer) -> None:
    """Issue 15's acceptance in the browser: by NHS number (typed with spaces) and by name (lower case), the
    banner, a confirmed replay in the message's history, and the selection's confirmation page."""
    from selenium.webdriver.common.by import By

    driver = browser
    find = driver.find_element  # type: ignore[attr-defined]
    raw = build_sample(next(s for s in SCENARIOS if s.name == "gp-referral"))
    message_id, _ = _identifiers(raw)
    assert _post(server, raw).status_code == 200  # stored already when the first test ran: answered OK again
    server.wait_for_status(message_id)
    [record] = server.stored(message_id)
    assert record.index is not None and record.index.nhs_number and record.index.patient_name
    number, name = record.index.nhs_number, record.index.patient_name
    family = name.split()[-1]

    sign_in(driver, server)
    find(By.ID, "q").send_keys(f"{number[:3]} {number[3:6]} {number[6:]}")
    find(By.ID, "search").click()
    wait_for(driver, "the search by NHS number", lambda d: "q=" in d.current_url)
    rows = driver.find_elements(By.CSS_SELECTOR, "#messages tbody tr")  # type: ignore[attr-defined]
    assert rows and all(name in row.text for row in rows)
    assert find(By.ID, "tab-all").text == f"All {len(rows)}"
    screenshot(driver, "7-search-by-nhs-number")

    find(By.ID, "clear").click()
    wait_for(driver, "the cleared list", lambda d: "q=" not in d.current_url)
    find(By.CSS_SELECTOR, ".more-filters summary").click()
    find(By.ID, "name").send_keys(family[:4].lower())
    find(By.ID, "filter").click()
    wait_for(driver, "the search by name", lambda d: "name=" in d.current_url)
    rows = driver.find_elements(By.CSS_SELECTOR, "#messages tbody tr")  # type: ignore[attr-defined]
    assert any(record.id in row.find_element(By.TAG_NAME, "a").get_attribute("href") for row in rows)
    screenshot(driver, "8-search-by-name")

    driver.get(f"{server.base_url}/console/messages/{record.id}")  # type: ignore[attr-defined]
    wait_for(driver, "the message page", lambda d: d.find_elements(By.ID, "banner"))
    assert find(By.ID, "banner-name").text == name
    assert find(By.ID, "banner-nhs-number").text == f"{number[:3]} {number[3:6]} {number[6:]}"
    assert find(By.ID, "banner-disposition").text.startswith(record.index.disposition_code or "?")
    assert find(By.ID, "download-request").get_attribute("href").endswith("/request.xml")
    screenshot(driver, "9-message-banner")

    find(By.ID, "reconvert").click()
    wait_for(driver, "the confirmation", lambda d: d.find_elements(By.ID, "confirm"))
    assert "Bundle version 2" in find(By.ID, "what-happens").text
    assert "will receive it again" in find(By.ID, "already-delivered").text
    screenshot(driver, "10-confirm-replay")
    find(By.ID, "confirm").click()
    wait_for(driver, "the replay notice", lambda d: d.find_elements(By.CSS_SELECTOR, "[role=status]"))
    assert "Reconverted as Bundle version 2" in find(By.CSS_SELECTOR, "[role=status]").text
    actions = find(By.ID, "actions").text
    assert USER in actions and "reconvert" in actions
    screenshot(driver, "11-replay-in-history")

    driver.get(f"{server.base_url}/console/messages")  # type: ignore[attr-defined]
    wait_for(driver, "the message list", on_page("/console/messages", "messages"))
    boxes = driver.find_elements(By.CSS_SELECTOR, "#messages input[name=record]")[:2]  # type: ignore[attr-defined]
    for box in boxes:
        box.click()
    find(By.ID, "replay-selected").click()
    wait_for(driver, "the selection's confirmation", lambda d: d.find_elements(By.ID, "selected"))
    assert len(driver.find_elements(By.CSS_SELECTOR, "#selected tbody tr")) == 2  # type: ignore[attr-defined]
    screenshot(driver, "12-confirm-selection")
    find(By.ID, "cancel").click()
    wait_for(driver, "the message list", on_page("/console/messages", "messages"))

    # A read-only operator sees the same, without the replay buttons, and is refused the replay itself.
    sign_in(driver, server, READER)
    driver.get(f"{server.base_url}/console/messages/{record.id}")  # type: ignore[attr-defined]
    wait_for(driver, "the message page", lambda d: d.find_elements(By.ID, "banner"))
    assert not driver.find_elements(By.ID, "replay") and not driver.find_elements(By.ID, "reconvert")  # type: ignore[attr-defined]
    assert "(read only)" in find(By.CLASS_NAME, "header__user").text
    screenshot(driver, "13-read-only")
    driver.get(f"{server.base_url}/console/messages/{record.id}/replay?mode=redeliver")  # type: ignore[attr-defined]
    wait_for(driver, "the refusal", lambda d: "not replay them" in d.find_element(By.TAG_NAME, "main").text)
    screenshot(driver, "14-read-only-refused")
    [after] = server.stored(message_id)
    assert after.bundle_version == 2 and after.replays == 1

    if os.environ.get("UPDATE_DOCS_SCREENSHOT"):
        for artefact, docs_name in DOCS_PAGES.items():
            shutil.copyfile(ARTIFACTS / f"{artefact}.png", REPO / "docs" / docs_name)


def test_a_cross_site_form_cannot_replay(browser: object, server: RunningServer, tmp_path: Path) -> None:
    """A page elsewhere posting to the replay form: the session cookie is SameSite=Strict and the request carries
    no CSRF token, so nothing is replayed (the browser's own Origin header is refused too)."""
    from selenium.webdriver.common.by import By

    driver = browser
    sign_in(driver, server)
    records = {m.id: m.replays for m in _all_records(server)}
    attacker = tmp_path / "attacker.html"
    attacker.write_text(
        f'<form method="post" action="{server.base_url}/console/replay">'
        '<input type="hidden" name="confirmed" value="yes"><input type="hidden" name="record" value="x">'
        '<button id="go" type="submit">Win a prize</button></form>'
    )
    driver.get(attacker.as_uri())  # type: ignore[attr-defined]
    driver.find_element(By.ID, "go").click()  # type: ignore[attr-defined]
    wait_for(driver, "the refusal", lambda d: d.current_url.startswith(server.base_url))
    body = driver.find_element(By.TAG_NAME, "body").text  # type: ignore[attr-defined]
    assert "This form has expired" in body
    assert {m.id: m.replays for m in _all_records(server)} == records


def _all_records(server: RunningServer) -> list:  # type: ignore[type-arg]
    from adaptor.store import MessageStore

    store = MessageStore(server.database_url)
    try:
        return store.list_messages(limit=1000)
    finally:
        store.close()
