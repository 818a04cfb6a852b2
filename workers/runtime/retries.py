"""Two retry budgets: outages of the infrastructure, and failures of the page.

- An **outage** (Postgres, RabbitMQ or the browser pool unavailable; see
  :func:`schema.outages.is_outage`) is retried with a jittered backoff (1 s doubling to
  10 s) for as long as ``infra_retry_budget`` from the message's first outage, without
  spending a page retry. Long enough to ride out a restart or a failover.
- Any other failure is the actor's ``retry_when`` (``BROWSE_RETRIES`` for a page), as with
  dramatiq's own Retries middleware, which :class:`JobRetries` extends.
- :class:`RequeueLater` puts a message back (after 5 to 30 s) without spending anything: a job
  whose final failure could not be recorded because the database is gone waits for it
  instead of going to the dead-letter queue without a result.

The actor and the middleware take the same decision from the message's options
(:func:`will_retry`), so a job knows whether this attempt is its last before it records a
final result.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

import dramatiq
from dramatiq.middleware import Retries

from schema.errors import ServiceUnavailable
from schema.logs import get_logger
from schema.outages import is_outage

log = get_logger(__name__)

RetryWhen = Callable[[int, BaseException], bool]

#: Message options (they travel with the message through RabbitMQ).
ATTEMPT_STARTED = "attempt_started_ms"  # set when an attempt starts
OUTAGE_SINCE = "outage_since_ms"  # the first outage this message met
OUTAGE_RETRIES = "outage_retries"
#: The actor option that opts an actor into outage retries.
RETRY_OUTAGES = "retry_outages"

OUTAGE_BACKOFF_MS = (1_000, 10_000)
REQUEUE_BACKOFF_MS = (5_000, 30_000)


class RequeueLater(ServiceUnavailable):
    """Put the message back for later without spending a retry (the final result of the job
    could not be written: the database is gone)."""


def _now_ms() -> int:
    return int(time.time() * 1000)


def outage_budget_left(options: Mapping[str, Any], budget: timedelta) -> bool:
    """Whether the message may still wait out an outage (measured at this attempt's start)."""
    since = options.get(OUTAGE_SINCE)
    if since is None:
        return True
    started = int(options.get(ATTEMPT_STARTED, _now_ms()))
    return started - int(since) < budget.total_seconds() * 1000


def will_retry(
    options: Mapping[str, Any],
    exc: BaseException,
    *,
    retry_when: RetryWhen,
    budget: timedelta,
    outages: bool = True,
) -> bool:
    """Whether this failure will be retried: the actor asks before it records a final
    result, the middleware acts on the same answer."""
    if isinstance(exc, RequeueLater):
        return True
    if outages and is_outage(exc):
        return outage_budget_left(options, budget)
    return retry_when(int(options.get("retries", 0)), exc)


def _jitter(backoff_ms: tuple[int, int], step: int) -> int:
    low, high = backoff_ms
    top = min(low * 2**step, high)
    return int(random.uniform(top / 2, top))


class JobRetries(Retries):
    """dramatiq's Retries, plus the outage budget and :class:`RequeueLater`."""

    def __init__(self, *, outage_budget: timedelta, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.outage_budget = outage_budget

    @property
    def actor_options(self) -> set[str]:
        return {*super().actor_options, RETRY_OUTAGES}

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        """Stamp the attempt's start: the budget is measured from it."""
        message.options[ATTEMPT_STARTED] = _now_ms()

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: Any,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        """Requeue, retry an outage on its own budget, or leave it to dramatiq's Retries."""
        if exception is None:
            return
        options = message.options
        if isinstance(exception, RequeueLater):
            delay = _jitter(REQUEUE_BACKOFF_MS, 2)
            log.warning("job_requeued", message_id=message.message_id, delay_ms=delay)
            broker.enqueue(message, delay=delay)
            return
        actor = broker.get_actor(message.actor_name)
        if actor.options.get(RETRY_OUTAGES) and is_outage(exception):
            if not outage_budget_left(options, self.outage_budget):
                log.error("outage_budget_spent", message_id=message.message_id)
                message.fail()
                return
            options.setdefault(OUTAGE_SINCE, options.get(ATTEMPT_STARTED, _now_ms()))
            step = int(options.get(OUTAGE_RETRIES, 0))
            options[OUTAGE_RETRIES] = step + 1
            delay = _jitter(OUTAGE_BACKOFF_MS, step)
            log.warning(
                "job_outage_retry",
                message_id=message.message_id,
                error=type(exception).__name__,
                delay_ms=delay,
                outage_retries=step + 1,
            )
            broker.enqueue(message, delay=delay)
            return
        super().after_process_message(  # type: ignore[no-untyped-call]
            broker, message, result=result, exception=exception
        )
