"""Helpers of the sessions-that-stay-alive tests: a store with the workers' keys and a new
task for a browse."""

from __future__ import annotations

import secrets

from producers.api import SessionsClient
from schema.audit import AuditLog
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
