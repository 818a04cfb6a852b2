"""The browser pool reports launches, retirements and crashes to its events hook."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

from tests.support.events import RecordingEvents
from tests.support.pools import local_pool
from tests.support.waiting import wait_for
from workers.dev.processes import chromium_pids


def _pooled_browser_pids() -> list[int]:
    """Browsers Playwright launched below this process (it drives them over a pipe)."""
    pids = []
    for pid in chromium_pids(os.getpid()):
        with contextlib.suppress(OSError):
            if b"--remote-debugging-pipe" in Path(f"/proc/{pid}/cmdline").read_bytes():
                pids.append(pid)
    return pids


async def test_pool_reports_launch_retire_and_crash(chromium_path: str) -> None:
    events = RecordingEvents()
    others = set(_pooled_browser_pids())  # another test's browser, left alone
    async with local_pool(
        chromium_path,
        size=1,
        contexts_per_browser=1,
        max_contexts_per_browser=1,
        events=events,
    ) as pool:
        assert events.seen["browser_launched"] == 1
        async with pool.context():  # its browser's last context: retired after, one launched
            pass

        async def replaced() -> bool:
            return events.seen["browser_launched"] == 2 and pool.stats()["browsers"] == 1

        await wait_for(replaced, what="a replacement browser")
        assert events.seen["browser_retired"] == 1 and events.seen["browser_crashed"] == 0

        # Kill every browser: the retired one (if still closing) is not a crash; the
        # replacement is.
        for pid in set(_pooled_browser_pids()) - others:
            os.kill(pid, signal.SIGKILL)

        async def crashed() -> bool:
            return events.seen["browser_crashed"] == 1 and events.seen["browser_launched"] == 3

        await wait_for(crashed, what="the crash to be reported and the browser replaced")
    assert events.seen["browser_retired"] == 1
