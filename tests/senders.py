"""Senders that behave like real ITK senders, for tests that keep servers busy while something breaks.

    stream = Stream([server.report_url for server in replicas])
    stream.start(4)                                   # four sender threads
    wait_until(lambda: stream.ok_count() >= 20, "load")
    ...                                               # kill a server, stop the broker...
    stream.stop()
    wait_until(lambda: settled(database_url), "every stored message delivered")

Each thread posts fresh synthetic requests (:mod:`itk_factory`) as fast as the answers come; a message that got
no ``OK`` (connection refused or reset, a 2100 fault) is sent again, unchanged, until it is answered ``OK``. With
several URLs (replicas behind a load balancer) new messages go to each in turn and a resend to the next one.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import requests
from itk_factory import build_request, to_bytes
from lxml import etree

from adaptor.store import MessageStore, Status

NS = {
    "s": "http://schemas.xmlsoap.org/soap/envelope/",
    "itk": "urn:nhs-itk:ns:201005",
    "a": "http://www.w3.org/2005/08/addressing",
}


@dataclass
class Stream:
    """Sender threads posting new messages (and resending unanswered ones) to ``urls`` until stopped."""

    urls: list[str]
    answered_ok: set[str] = field(default_factory=set)
    sent: set[str] = field(default_factory=set)
    unanswered: int = 0  # sends that got no OK (connection refused/reset, 2100): each was sent again
    resent_ok: int = 0  # messages answered OK only on a resend
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopping: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self, senders: int) -> None:
        for index in range(senders):
            thread = threading.Thread(target=self._send, args=(index,), name=f"sender-{index}", daemon=True)
            self.threads.append(thread)
            thread.start()

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(60)

    def ok_count(self) -> int:
        with self.lock:
            return len(self.answered_ok)

    def _send(self, turn: int) -> None:
        session = requests.Session()
        while not self.stopping.is_set():
            raw = to_bytes(build_request())
            message_id = etree.fromstring(raw).findtext("s:Header/a:MessageID", namespaces=NS)
            with self.lock:
                self.sent.add(message_id)
            tries = 0
            # Like a real sender: the same message until it is answered OK (or the test is over).
            while not self.stopping.is_set():
                tries += 1
                turn += 1
                if answered_ok(session, self.urls[turn % len(self.urls)], raw):
                    with self.lock:
                        self.answered_ok.add(message_id)
                        self.resent_ok += tries > 1
                    break
                with self.lock:
                    self.unanswered += 1
                session.close()
                session = requests.Session()
                time.sleep(0.05)  # the server is down or restarting: a sender's retry interval, shortened



def settled(database_url: str) -> bool:
    """Every stored message delivered: nothing waiting, being delivered or given up (answered OK or not)."""
    store = MessageStore(database_url)
    try:
        counts = store.count_by_status()
    finally:
        store.close()
    return sum(counts.values()) == counts[Status.DELIVERED]


def answered_ok(session: requests.Session, url: str, raw: bytes) -> bool:
    """Post ``raw``; whether it was answered ``OK`` (``False`` for a fault or no answer)."""
    try:
        response = session.post(url, data=raw, headers={"Content-Type": "text/xml"}, timeout=20)
    except requests.RequestException:
        return False
    if response.status_code != 200:
        return False
    text = etree.fromstring(response.content).findtext("s:Body/itk:SimpleMessageResponse", namespaces=NS)
    return text == "OK"
