"""Helpers of the sessions-that-stay-alive tests: a store with the workers' keys, a new
task for a browse and a browse in a new task."""

from __future__ import annotations

import secrets
from datetime import timedelta

from producers.api import SessionsClient
from schema.audit import AuditLog
from schema.jobs import BrowseOptions
from schema.results import BrowseResult
from schema.settings import Settings
from workers.crypto.keys import provider_from_settings
from workers.crypto.store import StateStore


def store_for(settings: Settings) -> StateStore:
    """A store with the workers' keys (tests only: producers never hold one)."""
    provider = provider_from_settings(settings)
    return StateStore(provider=provider, audit=AuditLog(signer=provider.audit_signer()))


async def new_task(client: SessionsClient, owner: str) -> str:
    """A new task of ``owner`` (browse jobs need an existing task)."""
    return (await client.add_task(f"task-{secrets.token_hex(4)}", owner_id=owner))["task_id"]


async def browse_in_new_task(
    client: SessionsClient,
    owner: str,
    session_id: str,
    url: str,
    *,
    options: BrowseOptions | None = None,
    timeout: timedelta,
) -> BrowseResult:
    """Browse ``url`` with ``session_id`` for a new task of ``owner``; its result."""
    return await client.browse(
        task_id=await new_task(client, owner),
        owner_id=owner,
        session_id=session_id,
        url=url,
        options=options,
        timeout=timeout,
    )
