"""What one application's console works with, and how a request reaches it.

The console blueprint is a module-level object, registered on every application that serves the console (the
tests create several in one process). So nothing that belongs to one application lives in module state: the
settings, the store, the outbox's wake-up, the credentials, the sign-in throttle and the signed-out sessions are
gathered in a :class:`ConsoleState`, kept in that application's ``extensions`` by
:func:`adaptor.console.install_console`, and read back during a request with :func:`console_state`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from flask import Flask, current_app

from adaptor.config import Settings
from adaptor.console.auth import Credentials, LoginThrottle, SignedOutSessions
from adaptor.store import MessageStore

#: The key of :class:`ConsoleState` in ``Flask.extensions``.
EXTENSION_KEY = "nhs111_console"


@dataclass(frozen=True)
class ConsoleState:
    """One application's console: what its pages read, who may sign in, the failed sign-ins counted and the
    sessions signed out."""

    settings: Settings
    store: MessageStore
    #: Wakes the outbox workers after a replay (the same as ``nhs111 replay``).
    wake: Callable[[], None]
    credentials: Credentials
    throttle: LoginThrottle
    signed_out: SignedOutSessions

    @property
    def session_seconds(self) -> float:
        """How long a sign-in lasts (``PEM111_CONSOLE_SESSION_HOURS``)."""
        return self.settings.console_session_hours * 3600

    def attach(self, app: Flask) -> None:
        """Make this the console state of ``app``."""
        app.extensions[EXTENSION_KEY] = self


def console_state() -> ConsoleState:
    """The console state of the application handling the current request."""
    state: ConsoleState = current_app.extensions[EXTENSION_KEY]
    return state
