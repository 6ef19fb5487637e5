"""The front door's memory budgets: request bodies held while they arrive (:class:`BodyBudget`) and requests being
worked on (:class:`WorkBudget`). Both live on the event loop's thread and are never touched from another.

Together they bound what requests can make the server hold, whatever mix arrives at once: at most
``BodyBudget.total`` bytes of bodies, and work whose estimated cost is at most ``WorkBudget.total`` bytes; the
README gives the arithmetic.
"""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass


@dataclass(eq=False)
class BodyAccount:
    """One request's share of a :class:`BodyBudget`: what it may come to (``claim``) and what it holds."""

    claim: int
    held: int = 0

    @property
    def need(self) -> int:
        return max(self.claim - self.held, 0)


class BodyBudget:
    """Bytes of request bodies held at once, taken as they arrive, given back when the request is done.

    A request is granted each piece of its body only when, afterwards, every request still receiving could be
    given the rest of what it claims (its declared length, or the maximum when chunked) in some order, each one
    completing and giving back what it holds before the next one needs it: the banker's rule. So requests that
    arrive together never each hold part of the budget and wait for the rest while none can finish (a deadlock
    that only timeouts would end), and a client that trickles its body holds only what it has sent. Requests
    refused a piece wait, and are tried again, in arrival order, whenever bytes are given back or another request
    asks: one that is refused does not hold up those behind it.
    """

    def __init__(self, total: int) -> None:
        self.total = total
        self.accounts: set[BodyAccount] = set()
        self._waiting: collections.deque[tuple[BodyAccount, int, asyncio.Future[None]]] = collections.deque()

    @property
    def held(self) -> int:
        return sum(account.held for account in self.accounts)

    def open(self, claim: int) -> BodyAccount:
        account = BodyAccount(min(claim, self.total))
        self.accounts.add(account)
        return account

    async def take(self, account: BodyAccount, amount: int) -> None:
        """Add ``amount`` bytes to what ``account`` holds, waiting until that is safe."""
        if not self._waiting and self._safe(account, amount):
            account.held += amount
            return
        waiter = asyncio.get_running_loop().create_future()
        entry = (account, amount, waiter)
        self._waiting.append(entry)
        self._grant()  # those waiting before it may still be unsafe while this one is not
        try:
            await waiter
        finally:
            if entry in self._waiting:
                self._waiting.remove(entry)

    def close(self, account: BodyAccount) -> None:
        """Give back everything ``account`` holds; it takes no more."""
        self.accounts.discard(account)
        account.held = 0
        account.claim = 0
        self._grant()

    def _grant(self) -> None:
        for entry in list(self._waiting):
            account, amount, waiter = entry
            if waiter.done():
                self._waiting.remove(entry)
            elif account not in self.accounts:  # closed while it waited
                self._waiting.remove(entry)
                waiter.set_result(None)
            elif self._safe(account, amount):
                self._waiting.remove(entry)
                account.held += amount
                waiter.set_result(None)

    def _safe(self, account: BodyAccount, amount: int) -> bool:
        """Whether granting ``amount`` to ``account`` leaves an order in which every request can complete."""
        free = self.total - self.held - amount
        if free < 0:
            return False
        needs = sorted(
            (max(a.claim - a.held - amount, 0), a.held + amount) if a is account else (a.need, a.held)
            for a in self.accounts
        )
        for need, held in needs:
            if need > free:
                return False
            free += held
        return True


class WorkBudget:
    """The estimated memory cost of the requests being worked on, at most :attr:`total`: a request waits, in
    arrival order, until its cost fits (a request costing more than the total waits until it is alone)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.free = total
        self._waiting: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()

    async def take(self, cost: int) -> int:
        """Take ``cost`` (capped at the total); returns what was taken, to give back."""
        cost = min(cost, self.total)
        if not self._waiting and cost <= self.free:
            self.free -= cost
            return cost
        waiter = asyncio.get_running_loop().create_future()
        entry = (cost, waiter)
        self._waiting.append(entry)
        try:
            await waiter
        except asyncio.CancelledError:
            if entry in self._waiting:
                self._waiting.remove(entry)
            else:
                self.give(cost)  # granted as it was cancelled
            raise
        return cost

    def give(self, cost: int) -> None:
        self.free += cost
        while self._waiting and self._waiting[0][0] <= self.free:
            cost, waiter = self._waiting.popleft()
            self.free -= cost
            waiter.set_result(None)
