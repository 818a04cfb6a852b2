"""The rollback job: make a kept version of a session current again, as a new version.

A saved state is bound to its row version (envelope format 2), so the kept ciphertext is
decrypted (audited) and encrypted again at the new version: never copied back. Idempotent:
a request whose new version exists is not done twice.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from schema.enums import AuditAction
from schema.jobs import RollbackJob
from schema.logs import get_logger
from schema.redact import secret_values, state_secret_values
from workers.crypto.store import Access, SaveInfo, StateStore

log = get_logger(__name__)


@dataclass(frozen=True, kw_only=True)
class RollbackService:
    db: asyncpg.Pool
    store: StateStore

    async def run(self, job: RollbackJob) -> int:
        """The new version (the one already made, on a redelivery)."""
        done = await self.db.fetchval(
            "SELECT version FROM session_versions WHERE source = 'rollback' AND source_id = $1",
            job.request_id,
        )
        if done is not None:
            return int(done)
        access = Access(
            session_id=job.session_id,
            owner_id=job.owner_id,
            actor_id=job.actor_id,
            task_id=None,
            request_id=job.request_id,
        )
        state, _ = await self.store.load_versioned(self.db, version=job.version, **access)
        with secret_values(state_secret_values(state)):
            new = await self.store.save(
                self.db,
                state=state,
                action=AuditAction.ROLLBACK,
                saved=SaveInfo(source="rollback", based_on=job.version),
                **access,
            )
        log.info("session_rolled_back", version=new, restored_from=job.version)
        return new
