"""Delivery threads in ``nhs111 serve`` let the requests being answered go first (adaptor.delivery.activity).

A delivery waits for a moment with no request in flight, until its message has waited
``PEM111_DELIVERY_DEFER_SECONDS`` since acceptance, and then delivers anyway: a busy server still delivers, a
backlog older than that is delivered while requests go on, and a quiet server delivers at once.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from itk_factory import build_request, to_bytes
from test_outbox import Harness, fast_settings
from waiting import wait_until

from adaptor.delivery.activity import QUIET_SECONDS, RequestActivity
from adaptor.delivery.conversion import bundle_text, convert
from adaptor.http.app import create_app
from adaptor.itk import rules as itk
from adaptor.itk.message import ItkMessage
from adaptor.itk.wire import utc_now
from adaptor.store import Status


def test_quiet_is_when_no_request_is_in_flight() -> None:
    activity = RequestActivity()
    assert activity.wait_for_quiet(0) and activity.in_flight == 0

    activity.request_started()
    activity.request_started()
    activity.request_finished()
    assert not activity.wait_for_quiet(0.05) and activity.in_flight == 1

    activity.request_finished()
    assert not activity.wait_for_quiet(0)  # a request just finished: not quiet for long enough yet
    started = time.monotonic()
    assert activity.wait_for_quiet(1.0) and activity.in_flight == 0
    assert time.monotonic() - started >= QUIET_SECONDS * 0.9


def test_a_waiting_thread_goes_on_as_soon_as_the_last_request_finishes() -> None:
    activity = RequestActivity()
    activity.request_started()
    waited: list[float] = []

    def wait() -> None:
        started = time.monotonic()
        activity.wait_for_quiet(10.0)
        waited.append(time.monotonic() - started)

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.2)
    activity.request_finished()
    waiter.join(5)
    assert waited and 0.15 < waited[0] < 2.0


@pytest.fixture
def busy_harness(tmp_path: Path) -> Iterator[Harness]:
    running = Harness(fast_settings(tmp_path, delivery_defer_seconds=1.0, delivery_poll_seconds=0.05))
    yield running
    running.close()


def test_delivery_waits_while_a_request_is_in_flight(busy_harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    activity = busy_harness.worker.requests
    defer = busy_harness.settings.delivery_defer_seconds
    # Each delivery thread's wait for quiet: was it quiet, and when it ended (the store's clock, UTC).
    waits: list[tuple[bool, datetime]] = []
    wait_for_quiet = activity.wait_for_quiet

    def recorded(timeout: float) -> bool:
        quiet = wait_for_quiet(timeout)
        waits.append((quiet, utc_now()))
        return quiet

    monkeypatch.setattr(activity, "wait_for_quiet", recorded)
    activity.request_started()  # a request being answered until the first message is delivered
    busy_harness.worker.start()
    message = busy_harness.accept()
    wait_until(lambda: busy_harness.record(message).status is Status.DELIVERED, "delivery anyway", timeout=10)
    # Not delivered beside the request: only once the message had waited its whole defer since its acceptance
    # (however late a thread claimed it), never sooner. 50 ms: the clocks' and the condition's granularity.
    converted_at = busy_harness.record(message).converted_at
    assert converted_at is not None
    earliest = converted_at + timedelta(seconds=defer) - timedelta(milliseconds=50)
    assert waits and all(not quiet and ended >= earliest for quiet, ended in waits), (converted_at, waits)

    waited_in_flight = len(waits)
    activity.request_finished()
    message = busy_harness.accept()
    wait_until(lambda: busy_harness.record(message).status is Status.DELIVERED, "delivery once quiet", timeout=5)
    assert any(quiet for quiet, _ in waits[waited_in_flight:]), waits


def test_a_server_that_is_never_quiet_still_delivers(busy_harness: Harness) -> None:
    busy_harness.worker.requests.request_started()  # never finished
    busy_harness.worker.start()
    message = busy_harness.accept()
    started = time.monotonic()
    wait_until(lambda: busy_harness.record(message).status is Status.DELIVERED, "delivery anyway", timeout=10)
    assert time.monotonic() - started < 5.0  # within a few defer periods


def test_the_wait_is_what_is_left_of_the_defer_since_the_message_was_accepted(busy_harness: Harness) -> None:
    busy_harness.accept()
    claim = busy_harness.store.claim_due("test", 60)
    assert claim is not None and busy_harness.settings.delivery_defer_seconds == 1.0
    now = utc_now()

    def accepted(seconds_ago: float | None) -> float:
        converted_at = None if seconds_ago is None else now - timedelta(seconds=seconds_ago)
        return busy_harness.worker.deferral(replace(claim, converted_at=converted_at), now)

    assert accepted(0) == 1.0
    assert accepted(0.25) == pytest.approx(0.75)
    assert accepted(1.0) == accepted(3600) == 0.0  # a backlog, a retry, a redelivery: at once
    assert accepted(-30) == 1.0  # the accepting replica's clock is ahead: never more than the defer
    assert accepted(None) == 0.0  # stored by an adaptor before Bundles were made at acceptance


def _accepted_ago(harness: Harness, seconds: float) -> ItkMessage:
    """A synthetic message stored as the request path stores it, its Bundle made ``seconds`` ago."""
    raw = to_bytes(build_request())
    message = itk.validate_request(itk.parse_request(raw, harness.settings), harness.settings, harness.allow_list)
    bundle = bundle_text(convert(raw, config=harness.settings))
    harness.store.accept(message, raw, bundle, converted_at=utc_now() - timedelta(seconds=seconds))
    return message


def test_a_backlog_older_than_the_defer_is_delivered_while_requests_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    harness = Harness(fast_settings(tmp_path, delivery_defer_seconds=30.0, delivery_poll_seconds=0.05))
    activity = harness.worker.requests
    waits: list[float] = []  # the timeout of every wait for quiet
    wait_for_quiet = activity.wait_for_quiet

    def recorded(timeout: float) -> bool:
        waits.append(timeout)
        return wait_for_quiet(timeout)

    monkeypatch.setattr(activity, "wait_for_quiet", recorded)
    activity.request_started()  # a load that never pauses
    try:
        backlog = [_accepted_ago(harness, 31) for _ in range(5)]
        harness.worker.start()
        # With a 30 s defer per thread this would take minutes; these messages have had theirs.
        wait_until(
            lambda: all(harness.record(m).status is Status.DELIVERED for m in backlog), "the backlog", timeout=10
        )
        assert waits == []

        fresh = harness.accept()  # a message of the burst itself waits for a quiet moment
        wait_until(lambda: waits, "a wait for quiet")
        assert 25 < waits[0] <= 30 and harness.record(fresh).status is Status.DELIVERING
        activity.request_finished()
        wait_until(lambda: harness.record(fresh).status is Status.DELIVERED, "delivery once quiet", timeout=5)
    finally:
        activity.request_finished()
        harness.close()


def test_no_defer_delivers_beside_requests(tmp_path: Path) -> None:
    harness = Harness(fast_settings(tmp_path, delivery_defer_seconds=0.0))
    try:
        harness.worker.requests.request_started()
        harness.worker.start()
        message = harness.accept()
        wait_until(lambda: harness.record(message).status is Status.DELIVERED, "delivery at once", timeout=5)
    finally:
        harness.close()


def test_the_application_counts_its_itk_requests_for_the_delivery_threads(tmp_path: Path) -> None:
    settings = fast_settings(tmp_path, delivery_workers=0)
    app = create_app(settings)
    seen_in_flight: list[int] = []
    try:
        # Watch the count from inside the request: the store is called while the request is in flight.
        original_accept = app.soap_app

        def watching(environ: dict[str, Any], start_response: Any) -> Any:
            seen_in_flight.append(app.requests.in_flight)
            return original_accept(environ, start_response)

        app.soap_app = watching
        body = to_bytes(build_request())
        environ = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": settings.report_paths[0],
            "CONTENT_TYPE": "text/xml; charset=utf-8",
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.input": io.BytesIO(body),
            "SERVER_NAME": "localhost",
            "SERVER_PORT": "80",
            "wsgi.url_scheme": "http",
        }
        statuses: list[str] = []
        b"".join(app(environ, lambda status, headers, exc_info=None: statuses.append(status)))
    finally:
        app.close()
    assert statuses == ["200 OK"]
    assert seen_in_flight == [1]
    assert app.requests.in_flight == 0
