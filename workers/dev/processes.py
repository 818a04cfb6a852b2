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
                # Chromium rewrites its children's command lines into one space-separated string.
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
                if b"chrom" in cmd.split(b" ", 1)[0] and b" --type=" not in cmd:
                    pids.append(pid)
        return pids


@contextlib.contextmanager
def run_worker(
    settings: Settings, queues: list[str], log_path: Path, *, ready_timeout: float = 60, **env: str
) -> Iterator[WorkerProcess]:
    """A worker on ``queues``, ready (resources open) on entry, stopped with SIGTERM on exit."""
    full_env = {
        **os.environ,
        **settings.to_env(),
        "BROWSER_SESSIONS_LOG_FORMAT": "json",
        **env,
    }
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
