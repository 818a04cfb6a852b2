"""A small supervisor around dramatiq's main process (``browser-sessions worker``).

dramatiq's main process stops every worker process and exits when one of them dies (a
kill -9, an out-of-memory kill, a failed boot). The supervisor starts it again, with a
backoff, so one dead process never takes a worker host down for good; a crash loop (five
quick failures in a row) ends in the supervisor's own exit for the platform to see.

The dramatiq process tree runs in its own session, so a signal sent to the supervisor's
process group (systemd's ``KillMode=control-group`` aside, ``tini -g``, Ctrl-C / Ctrl-\\ at a
terminal) reaches the supervisor only; it forwards one SIGTERM to dramatiq's main process,
which drains in-flight jobs exactly as after a SIGTERM to the main pid. The Playwright driver
and Chromium live below the dramatiq worker processes, in that session, and never see the
group signal. If the supervisor itself is killed, the kernel sends dramatiq SIGTERM
(``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import FrameType

from schema.logs import get_logger

log = get_logger(__name__)

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
RET_IMPORT = 2  # dramatiq: a module failed to import or a bad argument; a restart cannot help
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)


@dataclass(frozen=True, kw_only=True)
class RestartPolicy:
    """How soon to start again, and when to give up."""

    first_backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    quick_failure_s: float = 30.0  # a run shorter than this counts towards a crash loop
    max_quick_failures: int = 5
    orphan_grace_s: float = 60.0  # drain time for processes left behind by a dead main

    def backoff(self, quick_failures: int) -> float:
        return float(
            min(self.first_backoff_s * 2 ** max(quick_failures - 1, 0), self.max_backoff_s)
        )


def _prctl(option: int, value: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)


def _child_setup() -> None:
    """In the child before exec: its own session, and SIGTERM when the supervisor dies."""
    os.setsid()
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Supervisor:
    """``Supervisor(argv, env).run()`` → the exit code to leave with."""

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        *,
        policy: RestartPolicy | None = None,
        before_start: Callable[[], None] = lambda: None,
    ) -> None:
        self._argv = list(argv)
        self._env = dict(env)
        self._policy = policy or RestartPolicy()
        self._before_start = before_start
        self._child: subprocess.Popen[bytes] | None = None
        self._stopping: signal.Signals | None = None

    def run(self) -> int:
        """Start dramatiq and keep it running until a stop signal; returns its exit code."""
        _prctl(PR_SET_CHILD_SUBREAPER, 1)  # orphans of a dead main come back to us
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._on_signal)
        quick_failures = 0
        while True:
            self._before_start()
            started = time.monotonic()
            code = self._run_once()
            if self._stopping is not None:
                log.info("worker_stopped", exit_code=code, signal=self._stopping.name)
                return code
            ran = time.monotonic() - started
            quick_failures = quick_failures + 1 if ran < self._policy.quick_failure_s else 1
            if code == RET_IMPORT or quick_failures > self._policy.max_quick_failures:
                log.critical("worker_gave_up", exit_code=code, quick_failures=quick_failures - 1)
                return code or 1
            delay = self._policy.backoff(quick_failures)
            log.error("worker_restarting", exit_code=code, ran_s=round(ran, 1), backoff_s=delay)
            if self._sleep(delay):
                return 0

    def _run_once(self) -> int:
        self._child = subprocess.Popen(self._argv, env=self._env, preexec_fn=_child_setup)
        log.info("worker_started", pid=self._child.pid)
        if self._stopping is not None:  # a signal arrived while starting
            self._forward(self._stopping)
        code = self._reap_until_exit(self._child.pid)
        self._child.returncode = code
        self._drain_orphans(self._child.pid)
        self._child = None
        return code

    def _reap_until_exit(self, pid: int) -> int:
        """Wait for ``pid``, reaping any orphan reparented to us meanwhile."""
        while True:
            try:
                done, status = os.waitpid(-1, 0)
            except ChildProcessError:  # pragma: no cover - our child is always there
                return 1
            if done == pid:
                return os.waitstatus_to_exitcode(status)

    def _drain_orphans(self, pgid: int) -> None:
        """After a dead main, stop what is left of its process group (one SIGTERM, then
        SIGKILL after the grace period) so two workers never run at once."""
        if not _group_alive(pgid):
            return
        log.warning("worker_orphans_stopping", pgid=pgid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + self._policy.orphan_grace_s
        while _group_alive(pgid) and time.monotonic() < deadline:
            _reap_any()
            time.sleep(0.1)
        if _group_alive(pgid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
        _reap_any()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        first = self._stopping is None
        self._stopping = signal.Signals(signum)
        if first or signum != signal.SIGQUIT:
            self._forward(self._stopping)

    def _forward(self, sig: signal.Signals) -> None:
        """Every stop signal becomes one SIGTERM to dramatiq's main process (a second one,
        as with dramatiq itself, stops its workers without waiting)."""
        child = self._child
        if child is not None and child.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGTERM)

    def _sleep(self, seconds: float) -> bool:
        """Sleep between restarts; True if a stop signal arrived meanwhile."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self._stopping is not None:
                return True
            time.sleep(min(0.1, max(deadline - time.monotonic(), 0)))
        return self._stopping is not None


def _group_alive(pgid: int) -> bool:
    _reap_any()
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover
        return True
    return True


def _reap_any() -> None:
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] != 0:
            pass
