"""The one events hook: its no-op default and the metrics implementation cover every event,
and the URL guard reports each refusal once."""

from __future__ import annotations

import time
from collections.abc import Iterable

import pytest

from schema.enums import CaptureState
from schema.errors import NavigationFailed, UrlNotAllowed
from schema.events import NO_EVENTS, Events
from tests.support.events import EVENT_NAMES, RecordingEvents
from workers.guard.policy import UrlGuard
from workers.runtime import metrics

ARGS: dict[str, tuple[object, ...]] = {
    "capture_finished": (CaptureState.SAVED,),
    "result_delivered": (time.time() * 1000 - 1500,),
    "write_back": ("saved",),
    "lease_waited": (0.25,),
    "probe_finished": ("logged_in",),
}


def _samples() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in metrics.REGISTRY.collect()
        for s in family.samples
    }


def test_the_hook_has_the_events_the_services_report() -> None:
    assert set(EVENT_NAMES) >= {
        "guard_refused",
        "decrypt_succeeded",
        "decrypt_failed",
        "audit_write_failed",
        "browser_launched",
        "browser_crashed",
        "browser_retired",
        "session_expired",
        "capture_finished",
        "result_delivered",
        "write_back",
        "lease_waited",
        "probe_finished",
    }
    for name in EVENT_NAMES:
        getattr(NO_EVENTS, name)(*ARGS.get(name, ()))


@pytest.mark.parametrize("name", EVENT_NAMES)
def test_every_event_moves_exactly_one_metric(name: str) -> None:
    events: Events = metrics.MetricEvents()
    before = _samples()
    getattr(events, name)(*ARGS.get(name, ()))
    moved = {key for key, value in _samples().items() if value != before.get(key, 0.0)}
    families = {
        sample.removesuffix("_total").removesuffix("_count").removesuffix("_sum")
        for sample, _ in moved
    }
    families = {f for f in families if not f.endswith("_bucket")}
    assert len(families) == 1, moved


def _guard(events: Events, addresses: Iterable[str] = ("93.184.216.34",)) -> UrlGuard:
    async def resolver(host: str, port: int) -> list[str]:
        return list(addresses)

    return UrlGuard(resolver=resolver, events=events)


async def test_the_guard_reports_each_refusal_once() -> None:
    events = RecordingEvents()
    guard = _guard(events)
    await guard.check_url("https://example.com/")
    guard.check_site("https://www.example.com/a", start_url="https://example.com/")
    assert events.seen["guard_refused"] == 0

    with pytest.raises(UrlNotAllowed):
        await guard.check_url("http://10.0.0.1/")  # check_url goes through the host check
    with pytest.raises(UrlNotAllowed):
        await guard.check_host("localhost", 80)
    with pytest.raises(UrlNotAllowed):
        guard.check_site("https://evil.test/", start_url="https://example.com/")
    with pytest.raises(UrlNotAllowed):
        await guard.check_url("file:///etc/passwd")
    assert events.seen["guard_refused"] == 4


async def test_an_unresolvable_host_is_not_a_refusal() -> None:
    events = RecordingEvents()
    with pytest.raises(NavigationFailed):
        await _guard(events, addresses=()).check_url("https://nowhere.example/")
    assert events.seen["guard_refused"] == 0
