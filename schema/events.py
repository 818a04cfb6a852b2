"""The one events hook: what the services report as it happens, one method per event.

Services take an ``events`` object and call it. :class:`Events` itself reports nothing: its
instance :data:`NO_EVENTS` is the default, so a service built in a test, the CLI or the demo
needs none. The workers pass ``workers.runtime.metrics.MetricEvents``, a subclass that counts
each event into its Prometheus metric.
Gauges (pool size, live-view viewers) are sampled, not reported here.

Here, not in ``workers/``, because ``schema.audit`` (shared with the producers) reports too.
"""

from __future__ import annotations

from schema.enums import CaptureState


class Events:
    """One method per event; each does nothing here (the default hook)."""

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


NO_EVENTS = Events()
