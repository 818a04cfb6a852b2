"""Start a real ``browser-sessions worker`` (or ``api``) subprocess with given settings (demo,
tests, benchmarks), and look at process trees through ``/proc``."""

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
    """The Chromium browser (main) processes below ``root`` (not their helper processes).

    Chromium's helpers rewrite their command line into one string (``chromium --type=...``),
    so it is split on spaces as well as NULs before looking for ``--type=``.
    """
    pids = []
    for pid in process_tree(root)[1:]:
        with contextlib.suppress(OSError):
            args = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").split()
            if (
                args
                and b"chrom" in args[0].rsplit(b"/", 1)[-1]  # the program, not its directory
                and not args[0].endswith(b"crashpad_handler")  # reparented to a subreaper
                and not any(a.startswith(b"--type=") for a in args)
            ):
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

    def _children(self, pid: int) -> list[int]:
        return [child for child, (parent, _) in processes().items() if parent == pid]

    def dramatiq_pid(self) -> int | None:
        """dramatiq's main process (the supervisor's child), if running."""
        for pid in self._children(self.process.pid):
            with contextlib.suppress(OSError):
                if b"dramatiq" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    return pid
        return None

    def actor_pids(self) -> list[int]:
        """dramatiq's worker processes (those that run actors: each has a Playwright
        driver below it), not its fork processes."""
        main = self.dramatiq_pid()
        if main is None:
            return []
        return [pid for pid in self._children(main) if self._children(pid)]

    def ready_count(self) -> int:
        """How many times a worker process reported its resources open (restarts count)."""
        return self.log().count('"worker_ready"')

    def wait_ready(self, count: int, *, timeout: float = 60) -> None:
        """Until ``count`` ``worker_ready`` lines are in the log (a restart adds one)."""
        deadline = time.monotonic() + timeout
        while self.ready_count() < count:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker not ready ({count}):\n{self.log()[-4000:]}")
            time.sleep(0.1)

    def stop(self, *, group: bool = False, timeout: float = 60) -> float:
        """SIGTERM to the worker's main pid (or to its whole process group, as systemd or a
        terminal does); seconds until it exited."""
        started = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(self.process.pid, signal.SIGTERM)
            else:
                self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        return time.monotonic() - started

    def kill(self) -> None:
        """SIGKILL to the worker and everything below it (dramatiq runs in its own session)."""
        for pid in [self.process.pid, *self.descendants()]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait()

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
    worker_processes: int = 1,
    ready_timeout: float = 60,
    **env: str,
) -> Iterator[WorkerProcess]:
    """A worker on ``queues`` (``threads`` per process: the CLI's default when None), ready
    (resources open) on entry, stopped with SIGTERM on exit. Its log (JSON) goes to
    ``log_path``, readable by this user only."""
    argv = ["worker", "--queues", *queues]
    if worker_processes != 1:
        argv += ["--processes", str(worker_processes)]
    if threads is not None:
        argv += ["--threads", str(threads)]
    with run_command(
        argv, settings, log_path, ready_marker="worker_ready", ready_timeout=ready_timeout, **env
    ) as worker:
        yield worker


@contextlib.contextmanager
def run_api(
    settings: Settings, log_path: Path, *, ready_timeout: float = 30, **env: str
) -> Iterator[WorkerProcess]:
    """``browser-sessions api`` on ``settings.api_host:api_port``, listening on entry."""
    with run_command(
        ["api"], settings, log_path, ready_marker="api_started", ready_timeout=ready_timeout, **env
    ) as api:
        yield api


@contextlib.contextmanager
def run_command(
    argv: list[str],
    settings: Settings,
    log_path: Path,
    *,
    ready_marker: str,
    ready_timeout: float = 60,
    **env: str,
) -> Iterator[WorkerProcess]:
    """A ``browser-sessions`` subprocess, ready once its log shows ``ready_marker``; stopped
    with SIGTERM on exit."""
    full_env = {
        **os.environ,
        **settings.to_env(),
        "BROWSER_SESSIONS_LOG_FORMAT": "json",
        **env,
    }
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "workers.cli", *argv],
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
        while ready_marker not in worker.log():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{argv[0]} did not start:\n{worker.log()[-4000:]}")
            time.sleep(0.2)
        yield worker
    finally:
        # SIGTERM to the main process only, as tini / a container runtime does: the
        # supervisor forwards one SIGTERM to dramatiq, which forwards one to each child.
        if process.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.stop(timeout=30)
