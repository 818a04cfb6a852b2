"""Start a real ``browser-sessions worker`` subprocess with given settings (demo, tests,
benchmarks), and look at process trees through ``/proc``."""

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


def processes() -> dict[int, tuple[int, str]]:
    """Every process on the machine: pid → (parent pid, state letter, ``Z`` for a zombie)."""
    found: dict[int, tuple[int, str]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                found[int(entry.name)] = (int(fields[1]), fields[0])
    return found


def process_tree(root: int) -> list[int]:
    """``root`` and every process below it."""
    parents = {pid: parent for pid, (parent, _) in processes().items()}
    found, frontier = [root], [root]
    while frontier:
        pid = frontier.pop()
        children = [c for c, p in parents.items() if p == pid]
        found.extend(children)
        frontier.extend(children)
    return found


def chromium_pids(root: int) -> list[int]:
    """The Chromium browser (main) processes below ``root`` (not their helper processes)."""
    pids = []
    for pid in process_tree(root)[1:]:
        with contextlib.suppress(OSError):
            # Chromium rewrites its children's command lines into one space-separated string.
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            if b"chrom" in cmd.split(b" ", 1)[0] and b" --type=" not in cmd:
                pids.append(pid)
    return pids


@dataclass
class WorkerProcess:
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def descendants(self) -> list[int]:
        """PIDs of every process below the worker (its dramatiq children and browsers)."""
        return process_tree(self.process.pid)[1:]

    def chromium_pids(self) -> list[int]:
        """The browser (main) processes the worker launched."""
        return chromium_pids(self.process.pid)


@contextlib.contextmanager
def run_worker(
    settings: Settings,
    queues: list[str],
    log_path: Path,
    *,
    threads: int | None = None,
    ready_timeout: float = 60,
    **env: str,
) -> Iterator[WorkerProcess]:
    """A worker on ``queues`` (``threads`` per process: the CLI's default when None), ready
    (resources open) on entry, stopped with SIGTERM on exit. Its log (JSON) goes to
    ``log_path``, readable by this user only."""
    full_env = {
        **os.environ,
        **settings.to_env(),
        "BROWSER_SESSIONS_LOG_FORMAT": "json",
        **env,
    }
    command = [sys.executable, "-m", "workers.cli", "worker", "--queues", *queues]
    if threads is not None:
        command += ["--threads", str(threads)]
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        process = subprocess.Popen(
            command,
            env=full_env,
            stdout=log_fd,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        os.close(log_fd)
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
