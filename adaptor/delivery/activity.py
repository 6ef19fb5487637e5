"""Which ITK requests are being answered right now, so that delivery threads in the same process let them go first.

``nhs111 serve`` answers requests and (by default) delivers from the outbox in one Python process, where every
thread takes turns on one interpreter lock. A delivery holds that lock for a while (reading the stored Bundle,
the target's client library sending it; before Bundles were made at acceptance, converting them took several
milliseconds), and a request that waits for it waits for the sender's OK: under a burst, deliveries running
beside the requests were most of the requests' latency. The outbox is durable, so a delivery can wait a little
for a quiet moment and the sender cannot.

The wait is bounded per message, not per thread: a delivery thread claims the message due longest, then waits
until no request has been in flight for :data:`QUIET_SECONDS`, but only until that message has waited
``PEM111_DELIVERY_DEFER_SECONDS`` since it was accepted (:meth:`~adaptor.delivery.outbox.OutboxWorker.deferral`).
The requests of a burst shorter than that are answered without deliveries beside them (unless older messages
were waiting already), and its backlog drains in the quiet that follows. Under a load that never pauses, each
message is delivered about that long after its acceptance, as fast as messages come in: the backlog stays at
about a defer period's worth of messages instead of growing (a bound per thread, one message per defer period,
would deliver only a few per second while the requests kept coming). A message that has already waited longer
(a backlog, a retry, a redelivery) is delivered at once.
"""

from __future__ import annotations

import threading
import time

#: How long no request must have been in flight for a moment to count as quiet. Closed-loop senders leave gaps of
#: a millisecond or two between an answer and their next request; a delivery started in such a gap would hold the
#: interpreter lock when the next request arrives.
QUIET_SECONDS = 0.02


class RequestActivity:
    """A count of requests in flight, and a wait for none. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._in_flight = 0
        self._idle = threading.Event()  # set while no request is in flight
        self._idle.set()
        self._idle_since = float("-inf")  # quiet from the start

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def request_started(self) -> None:
        with self._lock:
            self._in_flight += 1
            self._idle.clear()

    def request_finished(self) -> None:
        with self._lock:
            self._in_flight = max(0, self._in_flight - 1)
            if self._in_flight == 0:
                self._idle_since = time.monotonic()
                self._idle.set()

    def wait_for_quiet(self, timeout: float) -> bool:
        """Wait until no request has been in flight for :data:`QUIET_SECONDS`, at most ``timeout`` seconds;
        whether it is quiet now."""
        deadline = time.monotonic() + timeout
        while True:
            now = time.monotonic()
            if self._idle.is_set():
                quiet_for = now - self._idle_since
                if quiet_for >= QUIET_SECONDS:
                    return True
                wait = QUIET_SECONDS - quiet_for
                if now + wait > deadline:
                    return False
                time.sleep(wait)  # then look again: a request may have come and gone meanwhile
            elif now >= deadline or not self._idle.wait(deadline - now):
                return False
