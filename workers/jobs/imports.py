"""The import job: open a sealed storageState, verify it is logged in with a real browse of
the start URL, and only then encrypt it under the owner's key.

Progress and the verdict are written to the ``captures`` row (kind ``import``) that the
producer waits on. Idempotent: a capture already in a final state is left alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import asyncpg

from schema import queries
from schema.enums import AuditAction, CaptureState
from schema.errors import BrowserSessionsError, CaptureNotLoggedIn, DecryptFailed, InvalidInput
from schema.events import NO_EVENTS, Events
from schema.jobs import BrowseOptions, CaptureJob, ImportJob
from schema.logs import get_logger
from schema.redact import secret_values, state_secret_values
from schema.sealing import open_sealed, seal_aad, sealed_key_id
from workers.browser.pool import BrowserPool
from workers.browser.restore import plan_restore
from workers.browser.verdict import Verdict
from workers.crypto.keys import KeyProvider
from workers.crypto.store import StateStore
from workers.guard.scope import scope_to_session
from workers.jobs.browse import open_and_visit

log = get_logger(__name__)


@dataclass(frozen=True, kw_only=True)
class LoginJob:
    """What a capture and an import share: the ``captures`` row their producer waits on, and
    the store a verified login is saved to (as the session's next version, by its owner)."""

    db: asyncpg.Pool
    store: StateStore
    events: Events = NO_EVENTS

    async def _set_state(
        self,
        job: CaptureJob | ImportJob,
        state: CaptureState,
        reason: str | None = None,
        error_code: str | None = None,
    ) -> None:
        await set_capture_state(
            self.db, job.capture_id, state, reason=reason, error_code=error_code, events=self.events
        )

    async def _save_login(
        self, job: CaptureJob | ImportJob, state: dict[str, Any], action: AuditAction
    ) -> None:
        """Encrypt a verified login as the session's next version, saved by its owner."""
        await self.store.save(
            self.db,
            session_id=job.session_id,
            owner_id=job.owner_id,
            actor_id=job.owner_id,
            state=state,
            request_id=job.capture_id,
            action=action,
        )


@dataclass(frozen=True, kw_only=True)
class ImportService(LoginJob):
    """Opens a sealed state, verifies it with a real visit, saves it (an ``import``)."""

    pool: BrowserPool
    provider: KeyProvider

    async def run(self, job: ImportJob) -> CaptureState:
        capture = await queries.get_capture(self.db, job.capture_id)
        if capture.state.is_final:
            return capture.state
        if not names_its_capture(capture, "import", job.session_id, job.owner_id):
            return capture.state
        await self._set_state(job, CaptureState.SAVING)
        try:
            opened = self._open(job)
            with secret_values(state_secret_values(opened)):
                session = await queries.get_session(self.db, job.session_id)
                state = scope_to_session(opened, session)
                outcome = await open_and_visit(
                    self.pool,
                    plan_restore(state),
                    url=session.start_url,
                    options=BrowseOptions(extract_text=False),
                    session=session,
                )
                if outcome.verdict is not Verdict.LOGGED_IN:
                    raise CaptureNotLoggedIn(
                        f"the imported state is not logged in: {outcome.reason}"
                    )
                await self._save_login(job, state, AuditAction.IMPORT)
        except BrowserSessionsError as err:
            await self._set_state(job, CaptureState.FAILED, err.message, err.code)
            log.info("import_refused", error_code=err.code)
            return CaptureState.FAILED
        await self._set_state(job, CaptureState.SAVED)
        return CaptureState.SAVED

    def _open(self, job: ImportJob) -> dict[str, Any]:
        try:
            private_key = self.provider.seal_private_key(sealed_key_id(job.sealed_state))
            plaintext = open_sealed(
                private_key,
                job.sealed_state,
                seal_aad(owner_id=job.owner_id, session_id=job.session_id),
            )
        except BrowserSessionsError:
            raise
        except Exception:
            raise DecryptFailed("the sealed state could not be opened") from None
        try:
            state = json.loads(plaintext)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise InvalidInput("the state file is not valid JSON") from None
        if not isinstance(state, dict):
            raise InvalidInput("the state file is not a Playwright storageState")
        return state


def names_its_capture(
    capture: queries.CaptureInfo, kind: str, session_id: str, owner_id: str
) -> bool:
    """Whether a job names the capture a producer started (its kind, session and owner). A
    forged or misrouted message does not, and must touch nothing (logged)."""
    if (capture.kind, capture.session_id, capture.owner_id) == (kind, session_id, owner_id):
        return True
    log.warning("capture_job_refused_mismatch", capture_kind=capture.kind)
    return False


async def set_capture_state(
    db: asyncpg.Pool | asyncpg.Connection,
    capture_id: str,
    state: CaptureState,
    *,
    reason: str | None = None,
    error_code: str | None = None,
    events: Events,
) -> None:
    """Move a capture to ``state`` (final states stamp ``finished_at`` and are reported)."""
    await db.execute(
        """UPDATE captures SET state = $2, reason = $3, error_code = $4, updated_at = now(),
               finished_at = CASE WHEN $5 THEN now() ELSE finished_at END
           WHERE id = $1""",
        capture_id,
        state.value,
        reason,
        error_code,
        state.is_final,
    )
    if state.is_final:
        events.capture_finished(state)
