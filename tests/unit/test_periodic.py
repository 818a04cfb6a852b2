"""``every``: calls at once, keeps calling after a failure, stops with its block."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from tests.support.waiting import wait_for
from workers.runtime.periodic import every


async def test_calls_at_once_survives_a_failure_and_stops_with_the_block() -> None:
    calls: list[int] = []

    def call() -> None:
        calls.append(len(calls))
        if len(calls) == 2:
            raise RuntimeError("one bad sample")

    async with every(timedelta(milliseconds=10), call):
        await asyncio.sleep(0)
        assert calls == [0]

        async def three() -> bool:
            return len(calls) >= 3

        await wait_for(three, timeout=5, what="a call after the failing one")
    stopped = len(calls)
    await asyncio.sleep(0.05)
    assert len(calls) == stopped
