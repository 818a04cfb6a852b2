"""Start dramatiq's worker CLI on ``workers.actors`` with this project's settings, under
the supervisor (``workers.runtime.supervisor``) that restarts it if it dies."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from schema.settings import Settings
from workers.runtime.supervisor import Supervisor


def metrics_dir(settings: Settings) -> Path:
    """A clean multiprocess directory for this worker run's Prometheus metrics (named after
    the supervisor's pid, so two workers on one machine never share one)."""
    base = Path(os.environ.get("BROWSER_SESSIONS_METRICS_DIR", tempfile.gettempdir()))
    return base / f"browser-sessions-metrics-{settings.metrics_port}-{os.getpid()}"


def _remove_stale_metrics_dirs(settings: Settings) -> None:
    """Directories of workers that are gone."""
    for old in metrics_dir(settings).parent.glob("browser-sessions-metrics-*-*"):
        pid = old.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(old, ignore_errors=True)


def run_worker(
    settings: Settings, *, queues: Sequence[str], processes: int, threads: int | None
) -> int:
    """Run ``dramatiq workers.actors`` under the supervisor until a stop signal; returns the
    exit code."""
    if threads is None:
        # One thread per pooled context for browse; captures each hold a browser.
        threads = settings.browsers * settings.contexts_per_browser if "browse" in queues else 2
    if "capture" in queues and processes != 1:
        from schema.errors import InvalidInput

        raise InvalidInput("capture workers run one process each (the live view has one port)")
    _remove_stale_metrics_dirs(settings)
    prom = metrics_dir(settings)

    def clean_metrics() -> None:  # counters restart with the processes that wrote them
        shutil.rmtree(prom, ignore_errors=True)
        prom.mkdir(parents=True, exist_ok=True)

    env = {
        **os.environ,
        "dramatiq_queue_prefetch": str(threads),
        "dramatiq_prom_db": str(prom),
        "PROMETHEUS_MULTIPROC_DIR": str(prom),
        "dramatiq_prom_port": str(settings.metrics_port),
    }
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
    return Supervisor(argv, env, before_start=clean_metrics).run()
