"""Start a real ``browser-sessions worker`` subprocess with given settings (demo, tests,
benchmarks), and look at its process tree."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from schema.settings import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def settings_env(settings: Settings) -> dict[str, str]:
    """The BROWSER_SESSIONS_* environment that reproduces ``settings`` in a subprocess."""
    return {
        "BROWSER_SESSIONS_DATABASE_URL": settings.database_url,
        "BROWSER_SESSIONS_AMQP_URL": settings.amqp_url,
        "BROWSER_SESSIONS_QUEUE_PREFIX": settings.queue_prefix,
        "BROWSER_SESSIONS_KEY_DIR": str(settings.key_dir),
        "BROWSER_SESSIONS_CHROMIUM_PATH": settings.chromium_path,
        "BROWSER_SESSIONS_ALLOW_PRIVATE_HOSTS": ",".join(sorted(settings.allow_private_hosts)),
        "BROWSER_SESSIONS_METRICS_PORT": str(settings.metrics_port),
        "BROWSER_SESSIONS_HEALTH_PORT": str(settings.health_port),
        "BROWSER_SESSIONS_LIVEVIEW_HOST": settings.liveview_host,
        "BROWSER_SESSIONS_LIVEVIEW_PORT": str(settings.liveview_port),
        "BROWSER_SESSIONS_LIVEVIEW_PUBLIC_URL": settings.liveview_public_url,
        "BROWSER_SESSIONS_BROWSERS": str(settings.browsers),
        "BROWSER_SESSIONS_CONTEXTS_PER_BROWSER": str(settings.contexts_per_browser),
        "BROWSER_SESSIONS_BROWSER_MAX_CONTEXTS": str(settings.browser_max_contexts),
        "BROWSER_SESSIONS_CAPTURE_TIMEOUT": str(settings.capture_timeout.total_seconds()),
        "BROWSER_SESSIONS_BROWSE_RETRIES": str(settings.browse_retries),
        "BROWSER_SESSIONS_LOG_FORMAT": "json",
        "BROWSER_SESSIONS_LOG_LEVEL": settings.log_level,
    }


@dataclass
class WorkerProcess:
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def descendants(self) -> list[int]:
        """PIDs of every process below the worker (its dramatiq children and browsers)."""
        parents: dict[int, int] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError, IndexError, ValueError):
                    stat = (entry / "stat").read_text()
                    parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
        found, frontier = [], [self.process.pid]
        while frontier:
            pid = frontier.pop()
            children = [c for c, p in parents.items() if p == pid]
            found.extend(children)
            frontier.extend(children)
        return found

    def chromium_pids(self) -> list[int]:
        """The browser (main) processes the worker launched."""
        pids = []
        for pid in self.descendants():
            with contextlib.suppress(OSError):
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                if b"chrom" in cmd[0] and not any(a.startswith(b"--type=") for a in cmd):
                    pids.append(pid)
        return pids


@contextlib.contextmanager
def run_worker(
    settings: Settings, queues: list[str], log_path: Path, *, ready_timeout: float = 60, **env: str
) -> Iterator[WorkerProcess]:
    """A worker on ``queues``, ready (resources open) on entry, stopped with SIGTERM on exit."""
    full_env = {**os.environ, **settings_env(settings), **env}
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "workers.cli", "worker", "--queues", *queues],
            env=full_env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    worker = WorkerProcess(process, log_path)
    try:
        deadline = time.monotonic() + ready_timeout
        while "worker_ready" not in worker.log():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start:\n{worker.log()[-4000:]}")
            time.sleep(0.2)
        yield worker
    finally:
        # SIGTERM to dramatiq's main process only, as tini / a container runtime does: it
        # forwards one SIGTERM to each child (a second one makes a worker exit at once).
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
