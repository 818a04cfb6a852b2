"""Browse results: stored by the worker keyed by job id, announced with NOTIFY, read back by
the producer for the task's owner only."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, NotRequired, TypedDict, Unpack

import asyncpg

from schema.enums import BrowseOutcome

RESULTS_CHANNEL = "browse_results"


class _Failed(TypedDict):
    """What a failed result keeps besides its error (``BrowseResult.failure``)."""

    job_id: str
    task_id: str
    owner_id: str
    session_id: str | None
    attempts: NotRequired[int]
    duration_ms: NotRequired[int | None]


@dataclass(frozen=True, kw_only=True)
class BrowseResult:
    job_id: str
    task_id: str
    owner_id: str
    session_id: str | None
    outcome: BrowseOutcome
    error_code: str | None = None
    error_message: str | None = None
    final_url: str | None = None
    http_status: int | None = None
    title: str | None = None
    text: str | None = None
    html: str | None = None
    screenshot: bytes | None = None
    attempts: int = 1
    duration_ms: int | None = None

    @property
    def ok(self) -> bool:
        return self.outcome is BrowseOutcome.OK

    @classmethod
    def failure(cls, *, code: str, message: str, **fields: Unpack[_Failed]) -> BrowseResult:
        """A failed job's result: the error's ``code`` and ``message``."""
        return cls(outcome=BrowseOutcome.ERROR, error_code=code, error_message=message, **fields)

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape printed by the CLI (screenshot as base64)."""
        data: dict[str, Any] = {
            "job_id": self.job_id,
            "task_id": self.task_id,
            "session_id": self.session_id,
            "outcome": self.outcome.value,
        }
        if self.ok:
            data.update(
                final_url=self.final_url,
                http_status=self.http_status,
                title=self.title,
                text=self.text,
                duration_ms=self.duration_ms,
                attempts=self.attempts,
            )
            if self.html is not None:
                data["html"] = self.html
            if self.screenshot is not None:
                data["screenshot_png_base64"] = base64.b64encode(self.screenshot).decode()
        else:
            data["error"] = {"code": self.error_code, "message": self.error_message}
        return data


_COLUMNS = (
    "job_id, task_id, owner_id, session_id, outcome, error_code, error_message, final_url, "
    "http_status, title, text, html, screenshot, attempts, duration_ms"
)


async def store_result(db: asyncpg.Connection | asyncpg.Pool, result: BrowseResult) -> bool:
    """Store once (a redelivered job keeps the first result) and NOTIFY; True if stored now."""
    status = await db.execute(
        f"""WITH ins AS (
                INSERT INTO browse_results ({_COLUMNS})
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
                ON CONFLICT (job_id) DO NOTHING RETURNING job_id)
            SELECT pg_notify('{RESULTS_CHANNEL}', job_id) FROM ins""",
        result.job_id,
        result.task_id,
        result.owner_id,
        result.session_id,
        result.outcome.value,
        result.error_code,
        result.error_message,
        result.final_url,
        result.http_status,
        result.title,
        result.text,
        result.html,
        result.screenshot,
        result.attempts,
        result.duration_ms,
    )
    return bool(status == "SELECT 1")


async def fetch_result(
    db: asyncpg.Connection | asyncpg.Pool, job_id: str, *, owner_id: str
) -> BrowseResult | None:
    """The result of a job, only if it belongs to ``owner_id``'s task."""
    row = await db.fetchrow(
        f"SELECT {_COLUMNS} FROM browse_results WHERE job_id = $1 AND owner_id = $2",
        job_id,
        owner_id,
    )
    if row is None:
        return None
    data = dict(row)
    data["outcome"] = BrowseOutcome(data["outcome"])
    return BrowseResult(**data)


async def result_exists(db: asyncpg.Connection | asyncpg.Pool, job_id: str) -> bool:
    found = await db.fetchval("SELECT 1 FROM browse_results WHERE job_id = $1", job_id)
    return found is not None
