"""Helpers of the sessions-that-stay-alive tests: a store with the workers' keys and a load
through it, a new task for a browse and browses in new tasks."""

from __future__ import annotations

import dataclasses
import secrets
from datetime import timedelta
from typing import Any

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


async def load_state(
    store: StateStore, conn: Any, session_id: str, owner: str, *, actor: str = "test"
) -> dict[str, Any]:
    """The session's current state, decrypted for ``actor`` (no task, no request)."""
    return await store.load(
        conn, session_id=session_id, owner_id=owner, actor_id=actor, task_id=None, request_id=None
    )


async def new_task(client: SessionsClient, owner: str) -> str:
    """A new task of ``owner`` (browse jobs need an existing task)."""
    return (await client.add_task(f"task-{secrets.token_hex(4)}", owner_id=owner))["task_id"]


@dataclasses.dataclass(frozen=True)
class NewTaskBrowses:
    """Browses of ``owner`` with ``session_id`` through ``client``, each for a new task of
    ``owner`` (the result's ``task_id`` names it)."""

    client: SessionsClient
    owner: str
    session_id: str

    async def enqueue(self, url: str, options: BrowseOptions | None = None) -> str:
        """Enqueue a browse of ``url``; its job id."""
        return await self.client.enqueue_browse(
            task_id=await new_task(self.client, self.owner),
            owner_id=self.owner,
            session_id=self.session_id,
            url=url,
            options=options,
        )

    async def browse(
        self, url: str, *, options: BrowseOptions | None = None, timeout: timedelta
    ) -> BrowseResult:
        """Browse ``url``; its result."""
        job_id = await self.enqueue(url, options)
        return await self.client.wait_result(job_id, owner_id=self.owner, timeout=timeout)


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
    return await NewTaskBrowses(client, owner, session_id).browse(
        url, options=options, timeout=timeout
    )
