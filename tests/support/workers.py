"""A test module's own worker: settings with ports of its own, a worker on queues of its own,
and fixtures of such a worker and of a producer client with the module's settings."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from producers.api import SessionsClient
from schema.settings import Settings
from workers.dev.processes import WorkerProcess, free_port, run_worker
from workers.dev.scratch import scratch_queues


def own_ports(settings: Settings, **changes: Any) -> Settings:
    """``settings`` with ``changes`` and free ports of their own for the live view, metrics
    and health: a worker started with them runs beside the run's other workers."""
    return dataclasses.replace(
        settings,
        liveview_port=free_port(),
        metrics_port=free_port(),
        health_port=free_port(),
        **changes,
    )


@contextlib.contextmanager
def worker_on_own_queues(
    settings: Settings, queues: list[str], log_path: Path
) -> Iterator[WorkerProcess]:
    """A real worker on ``queues`` under ``settings.queue_prefix``; those queues are deleted
    after it stops."""
    with (
        scratch_queues(settings.amqp_url, settings.queue_prefix),
        run_worker(settings, queues, log_path) as worker,
    ):
        yield worker


def client_fixture(settings_fixture: str) -> Any:
    """A fixture of a :class:`SessionsClient` opened with the settings that the fixture named
    ``settings_fixture`` returns: ``capture_client = client_fixture("capture_settings")``."""

    @pytest.fixture
    async def client(request: pytest.FixtureRequest) -> AsyncIterator[SessionsClient]:
        async with SessionsClient.open(request.getfixturevalue(settings_fixture)) as opened:
            yield opened

    return client


def own_worker_fixtures(settings_fixture: str, queues: list[str]) -> tuple[Any, Any]:
    """A module's own worker and producer client, with the settings that the fixture named
    ``settings_fixture`` returns: a module-scoped fixture of a real worker on ``queues``
    (:func:`worker_on_own_queues`) and a :func:`client_fixture`::

        probe_worker, probe_client = own_worker_fixtures("probe_settings", ["browse"])
    """

    @pytest.fixture(scope="module")
    def worker(
        request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
    ) -> Iterator[WorkerProcess]:
        log_path = tmp_path_factory.mktemp("own-worker") / "worker.log"
        settings = request.getfixturevalue(settings_fixture)
        with worker_on_own_queues(settings, queues, log_path) as started:
            yield started

    return worker, client_fixture(settings_fixture)
