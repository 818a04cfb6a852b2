"""Guarded write-back, the I/O part: save what a logged-in job observed as the next version.

Compare-and-set on ``version``; when another job saved first, the observed changes are
merged onto that version (rules in :mod:`workers.jobs.writeback`) and the save is tried
again. A write-back never fails the job that triggered it: its errors are logged.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import asyncpg

from schema import queries
from schema.enums import AuditAction
from schema.errors import BrowserSessionsError, VersionConflict
from schema.events import NO_EVENTS, Events
from schema.logs import get_logger
from schema.redact import secret_values, state_secret_values
from workers.crypto.store import Access, Caller, SaveInfo, StateStore
from workers.jobs.writeback import Scope, plan, rebase

log = get_logger(__name__)

MAX_CONFLICTS = 3


class WriteBackResult(StrEnum):
    SAVED = "saved"
    UNCHANGED = "unchanged"
    REFUSED_LOGGED_OUT = "refused_logged_out"
    CONFLICT_MERGED = "conflict_merged"


@dataclass(frozen=True, kw_only=True)
class WriteBack:
    db: asyncpg.Pool
    store: StateStore
    events: Events = NO_EVENTS

    async def apply(
        self,
        *,
        session: queries.SessionInfo,
        base: dict[str, Any],
        base_version: int,
        final: dict[str, Any],
        source: str,
        caller: Caller,
    ) -> WriteBackResult | None:
        """Save ``final`` (observed after a *logged-in* verdict) if it changed anything;
        returns what happened (None: not saved, e.g. the session stopped being active)."""
        decided = plan(base, final, Scope.of(session.start_url, session.extra_origins))
        if decided.state is None:
            if session.rotating is None:
                await self.db.execute(
                    "UPDATE browser_sessions SET rotating = false "
                    "WHERE id = $1 AND rotating IS NULL",
                    session.id,
                )
            self.events.write_back(WriteBackResult.UNCHANGED)
            return WriteBackResult.UNCHANGED
        rotating = True if decided.rotated else (False if session.rotating is None else None)
        attempt = _Attempt(
            session=session,
            base=base,
            base_version=base_version,
            mine=decided.state,
            info=SaveInfo(source=source, based_on=base_version, rotating=rotating),
            access=Access(session_id=session.id, owner_id=session.owner_id, **caller),
        )
        with secret_values(state_secret_values(decided.state)):
            try:
                result = await self._save(attempt)
            except BrowserSessionsError as err:
                log.warning("write_back_skipped", error_code=err.code)
                return None
        if result is None:
            log.warning("write_back_gave_up", conflicts=MAX_CONFLICTS)
            return None
        log.info(
            "write_back_saved",
            result=result.value,
            changes=decided.changes,
            **{"rotated": decided.rotated, "based_on": base_version},
        )
        self.events.write_back(result)
        return result

    async def _save(self, a: _Attempt) -> WriteBackResult | None:
        """Compare-and-set; on a conflict, merge onto the newer version and try again."""
        state, expected, merged = a.mine, a.base_version, False
        for _ in range(MAX_CONFLICTS):
            try:
                await self.store.save(
                    self.db,
                    state=state,
                    action=AuditAction.WRITE_BACK,
                    saved=dataclasses.replace(a.info, expected_version=expected),
                    **a.access,
                )
            except VersionConflict:
                theirs, expected = await self.store.load_versioned(self.db, **a.access)
                with secret_values(state_secret_values(theirs)):
                    state = rebase(a.base, a.mine, theirs)
                merged = True
                continue
            return WriteBackResult.CONFLICT_MERGED if merged else WriteBackResult.SAVED
        return None


@dataclass(frozen=True, kw_only=True)
class _Attempt:
    session: queries.SessionInfo
    base: dict[str, Any]
    base_version: int
    mine: dict[str, Any]
    info: SaveInfo
    access: Access
