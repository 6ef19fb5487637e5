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
    owner: str = ""
    held: int = 0

    @property
    def need(self) -> int:
        return max(self.claim - self.held, 0)


class BodyBudget:
    """Bytes of request bodies held at once, taken as they arrive, given back when the request is done: at most
    ``total`` in all, and at most ``per_owner`` for the requests of one owner (a client address).

    A request is granted each piece of its body only when, afterwards, every request still receiving could be
    given the rest of what it claims (its declared length, or the maximum when chunked) in some order, each one
    completing and giving back what it holds before the next one needs it, within both limits: the banker's rule.
    So requests that arrive together never each hold part of the budget and wait for the rest while none can
    finish (a deadlock that only timeouts would end); a client that trickles its body holds only what it has
    sent; and the clients of one address that send bodies and stall hold at most ``per_owner``, whatever their
    number, leaving the rest to everyone else. A piece is granted as soon as that is safe; requests refused one
    wait, and are tried again, in arrival order, whenever a request gives back what it holds.
    """

    def __init__(self, total: int, per_owner: int) -> None:
        self.total = total
        self.per_owner = min(per_owner, total)
        self.accounts: set[BodyAccount] = set()
        self._waiting: collections.deque[tuple[BodyAccount, int, asyncio.Future[None]]] = collections.deque()

    @property
    def held(self) -> int:
        return sum(account.held for account in self.accounts)

    def open(self, claim: int, owner: str) -> BodyAccount:
        """An account for a body of at most ``claim`` bytes from ``owner``."""
        account = BodyAccount(min(claim, self.per_owner), owner)
        self.accounts.add(account)
        return account

    async def take(self, account: BodyAccount, amount: int) -> None:
        """Add ``amount`` bytes to what ``account`` holds, waiting until that is safe."""
        if self._safe(account, amount):
            account.held += amount
            return
        waiter = asyncio.get_running_loop().create_future()
        entry = (account, amount, waiter)
        self._waiting.append(entry)
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
        free = self.total - amount
        owner_free: collections.Counter[str] = collections.Counter()
        pending: list[tuple[int, int, str]] = []  # (need, held, owner) after the grant
        total_need = 0
        for a in self.accounts:
            held = a.held + (amount if a is account else 0)
            need = max(a.claim - held, 0)
            free -= held
            owner_free[a.owner] -= held
            pending.append((need, held, a.owner))
            total_need += need
        if free < 0 or self.per_owner + owner_free[account.owner] < 0:
            return False
        owner_needs: collections.Counter[str] = collections.Counter()
        for need, _held, owner in pending:
            owner_needs[owner] += need
        if total_need <= free and all(self.per_owner + owner_free[o] >= n for o, n in owner_needs.items()):
            return True  # every request could complete at once
        # Otherwise look for a completion order: repeatedly complete any request whose need fits both limits.
        pending.sort()
        while pending:
            for index, (need, held, owner) in enumerate(pending):
                if need <= free and need <= self.per_owner + owner_free[owner]:
                    free += held
                    owner_free[owner] += held
                    del pending[index]
                    break
            else:
                return False
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
