"""Start dramatiq's worker CLI on ``workers.actors`` with this project's settings."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from schema.settings import Settings


def metrics_dir(settings: Settings) -> Path:
    """A clean multiprocess directory for this worker run's Prometheus metrics (the pid
    survives ``execv``, so two workers on one machine never share one)."""
    base = Path(os.environ.get("BROWSER_SESSIONS_METRICS_DIR", tempfile.gettempdir()))
    return base / f"browser-sessions-metrics-{settings.metrics_port}-{os.getpid()}"


def _remove_stale_metrics_dirs(settings: Settings) -> None:
    """Directories of workers that are gone."""
    for old in metrics_dir(settings).parent.glob("browser-sessions-metrics-*-*"):
        pid = old.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(old, ignore_errors=True)


def exec_worker(
    settings: Settings, *, queues: Sequence[str], processes: int, threads: int | None
) -> int:
    """Replace this process with ``dramatiq workers.actors`` (never returns on success)."""
    if threads is None:
        # One thread per pooled context for browse; captures each hold a browser.
        threads = settings.browsers * settings.contexts_per_browser if "browse" in queues else 2
    if "capture" in queues and processes != 1:
        from schema.errors import InvalidInput

        raise InvalidInput("capture workers run one process each (the live view has one port)")
    _remove_stale_metrics_dirs(settings)
    prom = metrics_dir(settings)
    shutil.rmtree(prom, ignore_errors=True)
    prom.mkdir(parents=True, exist_ok=True)
    os.environ.update(
        {
            "dramatiq_queue_prefetch": str(threads),
            "dramatiq_prom_db": str(prom),
            "PROMETHEUS_MULTIPROC_DIR": str(prom),
            "dramatiq_prom_port": str(settings.metrics_port),
        }
    )
    argv = [
        sys.executable,
        "-m",
        "dramatiq",
        "workers.actors",
        "--processes",
        str(processes),
        "--threads",
        str(threads),
        "--queues",
        *[settings.queue(q) for q in queues],
    ]
    os.execv(sys.executable, argv)
    return 0  # pragma: no cover
