"""A real dramatiq worker (stub broker) opens the worker resources on dramatiq's event loop
and closes them at shutdown while that loop still runs: the browser pool and the database
pool end closed, in the middleware order the worker uses."""

from __future__ import annotations

import dataclasses

import dramatiq
from dramatiq.brokers.stub import StubBroker

from schema.jobs import BROWSE_QUEUE
from schema.settings import Settings
from workers.dev.processes import free_port
from workers.runtime.broker import standard_middleware
from workers.runtime.middleware import install_worker_middleware
from workers.runtime.resources import WorkerResources


def test_shutdown_closes_the_browser_pool_and_the_database_pool(
    base_settings: Settings, chromium_path: str
) -> None:
    settings = dataclasses.replace(
        base_settings,
        chromium_path=chromium_path,
        browsers=1,
        health_port=free_port(),
        liveview_port=free_port(),
    )
    broker = StubBroker(middleware=standard_middleware())
    middleware = WorkerResources(settings)
    install_worker_middleware(broker, resources=middleware)
    broker.emit_after("process_boot")
    worker = dramatiq.Worker(
        broker, queues={settings.queue(BROWSE_QUEUE)}, worker_threads=1, worker_timeout=50
    )
    worker.start()  # opens the resources (after_worker_boot)
    try:
        resources = middleware.get()
        assert resources.pool is not None and resources.pool.stats()["browsers"] == 1
        assert not resources.db.is_closing()
    finally:
        worker.stop()
        broker.close()

    assert resources.db.is_closing(), "the database pool was left open at shutdown"
    assert resources.pool.stats()["browsers"] == 0, "the browser pool was left open"
    assert not resources.pool.healthy
