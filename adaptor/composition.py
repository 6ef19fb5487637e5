"""The composition root: every long-lived component of a process, built from :class:`~adaptor.config.Settings`
in one place, and closed in one place.

``nhs111 serve`` (:func:`adaptor.http.server.serve`) and the WSGI application factory
(:func:`adaptor.http.app.create_app`) run :class:`Components`; ``nhs111 worker``
(:func:`adaptor.http.server.run_worker`) runs :class:`DeliveryComponents`, the part of them that delivers.
The HTTP layer builds its request handlers on top of them and owns nothing itself.

Built in this order: the allow-list's settings checked (no allow-list, and no
``PEM111_ITK_ACCEPT_ANY_ADDRESS=true``, is a :class:`~adaptor.config.ConfigError`), the forwarder (a
:class:`~adaptor.config.ConfigError` here stops start-up before the database is touched), the message store
(opened if the database is reachable), the allow-list (its refresh started), the retention schedule (when
``PEM111_RETENTION_PURGE_INTERVAL_HOURS`` is set), the metrics, the outbox worker,
the receiver service and the readiness checks. :meth:`close` stops and closes in the reverse order, so that
deliveries in flight finish before anything closes and the store closes last. Components that are given (tests
hand in their own store or worker) are used, never closed.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field

from adaptor.accept import ReceiverService
from adaptor.config import Settings
from adaptor.delivery.activity import RequestActivity
from adaptor.delivery.forwarders import Forwarder, forwarder_from_settings
from adaptor.delivery.outbox import OutboxWorker
from adaptor.itk.allowlist import AllowList, require_allow_list
from adaptor.itk.schemas import schema_rules
from adaptor.ops.metrics import Metrics
from adaptor.ops.readiness import Readiness
from adaptor.store import MessageStore, RetentionSchedule


@dataclass(kw_only=True, eq=False)
class DeliveryComponents:
    """The message store, the forwarder and the outbox worker: what ``nhs111 worker`` runs.

    Build with :func:`build_delivery`. :meth:`start_delivery` starts the outbox threads; :meth:`close` stops
    them, then closes the forwarder and the store.
    """

    settings: Settings
    store: MessageStore
    forwarder: Forwarder
    worker: OutboxWorker
    #: Closes what was built here, in the reverse order of building.
    closing: ExitStack = field(repr=False)
    #: False when the worker was given: its owner starts and stops it.
    owns_worker: bool = True

    def start_delivery(self) -> None:
        """Start the outbox threads (``PEM111_DELIVERY_WORKERS`` of them); a worker that was given is started
        by its owner, so this leaves it alone."""
        if self.owns_worker:
            self.worker.start()

    def close(self) -> None:
        """Stop and close what was built here, in the reverse order of building; again, nothing happens."""
        self.closing.close()


@dataclass(kw_only=True, eq=False)
class Components(DeliveryComponents):
    """Everything ``nhs111 serve`` and the WSGI application run: the delivery components, and the allow-list,
    the metrics, the receiver service (:mod:`adaptor.accept`) and the readiness checks.

    Build with :func:`build`.
    """

    allow_list: AllowList
    metrics: Metrics
    receiver: ReceiverService
    readiness: Readiness

    @property
    def requests(self) -> RequestActivity:
        """The ITK requests being answered, which the delivery threads let go first."""
        return self.worker.requests


def build_delivery(settings: Settings) -> DeliveryComponents:
    """The components of ``nhs111 worker``: ``PEM111_DELIVERY_WORKERS`` delivery threads, at least one.

    Raises :class:`~adaptor.config.ConfigError` when the forward target is unusable.
    """
    closing = ExitStack()
    try:
        store, forwarder = _store_and_forwarder(settings, closing, None, None)
        worker = OutboxWorker(settings, store, forwarder, threads=max(1, settings.delivery_workers))
        closing.callback(worker.stop)
    except BaseException:
        closing.close()
        raise
    return DeliveryComponents(settings=settings, store=store, forwarder=forwarder, worker=worker, closing=closing)


def build(
    settings: Settings,
    *,
    store: MessageStore | None = None,
    forwarder: Forwarder | None = None,
    allow_list: AllowList | None = None,
    worker: OutboxWorker | None = None,
) -> Components:
    """The components of ``nhs111 serve`` and of the WSGI application, the allow-list's refresh started.

    Components not given are built from ``settings`` and closed by :meth:`Components.close`; given ones are
    only used. The outbox worker's threads start with :meth:`Components.start_delivery`; a ``worker`` that is
    given is only woken when a message is stored, and counts its deliveries in these metrics from now on
    (:meth:`~adaptor.delivery.outbox.OutboxWorker.report_to`).

    Raises :class:`~adaptor.config.ConfigError` when no allow-list is configured (and any recipient is not
    explicitly accepted) or the forward target is unusable; what was built by then is closed.
    """
    if allow_list is None:
        require_allow_list(settings)  # before anything is opened
    closing = ExitStack()
    try:
        store, forwarder = _store_and_forwarder(settings, closing, store, forwarder)
        if allow_list is None:
            allow_list = AllowList(settings)
            allow_list.start()
            closing.callback(allow_list.stop)
        retention = RetentionSchedule(store, settings)  # PEM111_RETENTION_PURGE_INTERVAL_HOURS; 0: not started
        retention.start()
        closing.callback(retention.stop)
        metrics = Metrics(forwarder.target)
        metrics.watch_store(store)
        owns_worker = worker is None
        if worker is None:
            worker = OutboxWorker(settings, store, forwarder, metrics=metrics)
            closing.callback(worker.stop)  # first on close: deliveries in flight finish before anything closes
        else:
            worker.report_to(metrics)
        return Components(
            settings=settings,
            store=store,
            forwarder=forwarder,
            worker=worker,
            allow_list=allow_list,
            metrics=metrics,
            receiver=ReceiverService(
                settings,
                store,
                forwarder,
                wake=worker.wake,
                metrics=metrics,
                # The worker built here delivers with this store and forwarder: its threads then also record what
                # a synchronous delivery could not.
                deliverer=worker.deliverer if owns_worker else None,
            ),
            readiness=Readiness(store, forwarder, allow_list, lambda: schema_rules(settings)),
            closing=closing,
            owns_worker=owns_worker,
        )
    except BaseException:
        closing.close()
        raise


def _store_and_forwarder(
    settings: Settings, closing: ExitStack, store: MessageStore | None, forwarder: Forwarder | None
) -> tuple[MessageStore, Forwarder]:
    """The store and the forwarder, those built here registered on ``closing`` so that the store closes last.

    The forwarder is built first: an unusable forward target is a configuration error, reported before the
    database URL is even read.
    """
    forwarder_built_here = forwarder is None
    if forwarder is None:
        forwarder = forwarder_from_settings(settings)
    opened_here = store is None
    try:
        if store is None:
            store = MessageStore.from_settings(settings)  # connects to nothing yet
            closing.callback(store.close)  # registered first, so closed last
    except BaseException:
        if forwarder_built_here:
            forwarder.close()
        raise
    if forwarder_built_here:
        closing.callback(forwarder.close)
    if opened_here:
        store.open_if_available()
    return store, forwarder
