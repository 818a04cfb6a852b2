"""The one events hook: what the services report as it happens, one method per event.

Services take an ``events`` object and call it; :data:`NO_EVENTS` (does nothing) is the
default, so a service built in a test, the CLI or the demo needs none. The workers pass
``workers.runtime.metrics.MetricEvents``, which counts each event into its Prometheus metric.
Gauges (pool size, live-view viewers) are sampled, not reported here.

Here, not in ``workers/``, because ``schema.audit`` (shared with the producers) reports too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from schema.enums import CaptureState


class Events(Protocol):
    def guard_refused(self) -> None:
        """The URL guard refused a navigation or a browser request."""

    def decrypt_succeeded(self) -> None:
        """A saved session state was decrypted."""

    def decrypt_failed(self) -> None:
        """A saved session state could not be decrypted (bad data or a missing key)."""

    def audit_write_failed(self) -> None:
        """An audit row could not be written (the guarded action is refused)."""

    def browser_launched(self) -> None:
        """The browser pool launched a browser."""

    def browser_crashed(self) -> None:
        """A pooled browser crashed or disconnected unexpectedly."""

    def browser_retired(self) -> None:
        """A pooled browser was retired after its maximum number of contexts."""

    def session_expired(self) -> None:
        """A session was newly marked expired after a failed login check."""

    def capture_finished(self, state: CaptureState) -> None:
        """A capture (a login window or an import) reached the final ``state``."""

    def result_delivered(self, enqueued_at_ms: float) -> None:
        """A browse result was stored; ``enqueued_at_ms`` is when its job was enqueued."""

    def write_back(self, result: str) -> None:
        """A job's end state was weighed for write-back: ``saved``, ``unchanged``,
        ``refused_logged_out`` or ``conflict_merged``."""

    def lease_waited(self, seconds: float) -> None:
        """A job waited ``seconds`` for its session's lease."""

    def probe_finished(self, verdict: str) -> None:
        """A health probe ended with ``verdict``."""


_EVENT_NAMES = frozenset(name for name in vars(Events) if not name.startswith("_"))


def _report_nothing(*args: Any, **kwargs: Any) -> None:
    return None


class NoEvents:
    """Reports nothing: the default hook. Every event of :class:`Events` is a no-op here,
    found by name, so an event is declared once (in the protocol)."""

    def __getattr__(self, name: str) -> Callable[..., None]:
        if name not in _EVENT_NAMES:
            raise AttributeError(name)
        return _report_nothing


NO_EVENTS: Events = NoEvents()
