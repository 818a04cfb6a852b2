"""Save and load the encrypted state of a ``browser_sessions`` row, audited.

``save`` encrypts under the owner's key and writes the row, a copy in ``session_versions``
(the newest ``keep_versions`` are kept) and its audit row in one transaction; with
``SaveInfo.expected_version`` it is a compare-and-set (``VersionConflict`` when another save
came first). ``load`` commits its ``decrypt`` audit row *before* decrypting (no audit
row, no decryption), so it must not run inside a caller's transaction. Denials (unknown
session, wrong owner, revoked, nothing saved) and failures are audited too.

The decrypted state goes to the caller only, who registers its cookie and storage values
for log redaction while it holds it (``schema.redact.secret_values``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Self, TypedDict, Unpack

from schema.audit import AuditLog
from schema.db import connection
from schema.enums import AuditAction, AuditResult, SessionStatus
from schema.errors import (
    AuditWriteFailed,
    BrowserSessionsError,
    DecryptFailed,
    KeyError_,
    NotOwner,
    SessionNotActive,
    SessionNotFound,
    SessionRevoked,
    VersionConflict,
    VersionNotFound,
)
from schema.events import NO_EVENTS, Events
from schema.settings import Settings
from workers.crypto.envelope import (
    EncryptedState,
    canonical_state,
    decrypt_state,
    encrypt_bytes,
)
from workers.crypto.keys import KeyProvider
from workers.crypto.user_keys import current_user_key, user_key
from workers.jobs.writeback import Scope, auth_expiry

_DENIALS = (SessionNotFound, NotOwner, SessionRevoked, SessionNotActive, VersionNotFound)
_SOURCES = {AuditAction.SAVE: "capture", AuditAction.IMPORT: "import"}


@dataclass(frozen=True, kw_only=True)
class SaveInfo:
    """Where a saved version comes from, and what a write-back also records.

    ``expected_version`` makes the save a compare-and-set (write-backs); ``rotating`` marks
    the session's site as one that rotates its tokens (``None`` leaves it as it is). Every
    save also sets ``expires_at`` (from the auth cookies) and the next probe time.
    """

    source: str = "capture"
    verdict: str = "logged_in"
    expected_version: int | None = None
    based_on: int | None = None
    rotating: bool | None = None

    def detail(self, version: int) -> str:
        if self.based_on is None:
            return f"saved version {version}"
        return f"saved version {version} from version {self.based_on}"


class Caller(TypedDict):
    """Whom a job's audit rows name: the actor it acts for, its task (if any) and its
    request (the job)."""

    actor_id: str
    task_id: str | None
    request_id: str | None


class Access(Caller):
    """Who asks :class:`StateStore` for a session's state, and for what (task, request)."""

    session_id: str
    owner_id: str


@dataclass(kw_only=True, eq=False)
class StateStore:
    """Encrypted session states in ``browser_sessions.enc_*``."""

    provider: KeyProvider
    audit: AuditLog
    max_state_bytes: int = Settings.max_state_bytes
    events: Events = NO_EVENTS
    keep_versions: int = Settings.keep_versions
    probe_interval: timedelta = Settings.probe_interval

    @classmethod
    def from_settings(
        cls, settings: Settings, *, provider: KeyProvider, audit: AuditLog, events: Events
    ) -> Self:
        """The store with the limits ``settings`` set (state size, kept versions, probes)."""
        return cls(
            provider=provider,
            audit=audit,
            events=events,
            max_state_bytes=settings.max_state_bytes,
            keep_versions=settings.keep_versions,
            probe_interval=settings.probe_interval,
        )

    async def save(
        self,
        conn: Any,
        *,
        session_id: str,
        owner_id: str,
        actor_id: str,
        state: dict[str, Any],
        request_id: str | None = None,
        task_id: str | None = None,
        action: AuditAction = AuditAction.SAVE,
        saved: SaveInfo | None = None,
    ) -> int:
        """Encrypt ``state`` into the session row; returns the row's new ``version``.

        The row becomes ``active``. ``action`` is the audit action (``save``, ``import``,
        ``write_back`` or ``rollback``); ``saved`` says where the version came from and, for
        a write-back, the version it must replace. ``conn`` is a connection or a pool.
        """
        info = saved or SaveInfo(source=_SOURCES.get(action, "capture"))
        async with connection(conn) as conn:
            audit: dict[str, Any] = {
                "actor_id": actor_id,
                "action": action,
                "session_id": session_id,
                "task_id": task_id,
                "request_id": request_id,
            }
            try:
                plaintext = canonical_state(state, max_state_bytes=self.max_state_bytes)
                async with conn.transaction():
                    row = await conn.fetchrow(
                        "SELECT owner_id, status, version, start_url, extra_origins "
                        "FROM browser_sessions WHERE id = $1 FOR UPDATE",
                        session_id,
                    )
                    _check_access(row, owner_id, saving=True)
                    _check_expected(row, info.expected_version)
                    key = await current_user_key(conn, self.provider, owner_id)
                    version: int = row["version"] + 1  # bound into the ciphertext
                    enc = encrypt_bytes(
                        plaintext,
                        user_key=key.key,
                        owner_id=owner_id,
                        session_id=session_id,
                        key_version=key.version,
                        row_version=version,
                    )
                    await conn.execute(
                        """UPDATE browser_sessions
                           SET enc_format = $2, enc_key_version = $3, enc_wrapped_key = $4,
                               enc_nonce = $5, enc_ciphertext = $6, version = $8,
                               status = $7, saved_at = now(), updated_at = now(),
                               expires_at = $9, rotating = coalesce($10, rotating),
                               next_probe_at = $11, probe_failures = 0
                           WHERE id = $1""",
                        session_id,
                        enc.format,
                        enc.key_version,
                        enc.wrapped_key,
                        enc.nonce,
                        enc.ciphertext,
                        SessionStatus.ACTIVE.value,
                        version,
                        _expires_at(state, row["start_url"], row["extra_origins"]),
                        info.rotating,
                        next_probe_at(self.probe_interval),
                    )
                    await self._keep_version(conn, session_id, version, enc, info, request_id)
                    await self.audit.write(
                        conn, **audit, result=AuditResult.OK, detail=info.detail(version)
                    )
            except (AuditWriteFailed, VersionConflict):
                raise
            except BrowserSessionsError as exc:
                await self._audit_failure(conn, exc, audit)
                raise
            await self.audit.checkpoint(conn)  # the save row committed with the state
            return version

    async def _keep_version(
        self,
        conn: Any,
        session_id: str,
        version: int,
        enc: EncryptedState,
        info: SaveInfo,
        request_id: str | None,
    ) -> None:
        """A copy in ``session_versions``; only the newest ``keep_versions`` stay."""
        await conn.execute(
            """INSERT INTO session_versions (session_id, version, source, source_id, verdict,
                   enc_format, enc_key_version, enc_wrapped_key, enc_nonce, enc_ciphertext)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)""",
            session_id,
            version,
            info.source,
            request_id,
            info.verdict,
            enc.format,
            enc.key_version,
            enc.wrapped_key,
            enc.nonce,
            enc.ciphertext,
        )
        await conn.execute(
            "DELETE FROM session_versions WHERE session_id = $1 AND version <= $2",
            session_id,
            version - self.keep_versions,
        )

    async def load(self, conn: Any, **access: Unpack[Access]) -> dict[str, Any]:
        """The decrypted state, after its ``decrypt`` audit row has been committed.

        ``conn`` is a connection outside any transaction, or a pool.
        """
        state, _version = await self.load_versioned(conn, **access)
        return state

    async def load_versioned(
        self, conn: Any, *, version: int | None = None, **access: Unpack[Access]
    ) -> tuple[dict[str, Any], int]:
        """:meth:`load` with the version the state is (for a compare-and-set write-back);
        with ``version``, that kept version instead of the current one (for a rollback)."""
        session_id, owner_id = access["session_id"], access["owner_id"]
        async with connection(conn) as conn:
            if conn.is_in_transaction():
                raise BrowserSessionsError(
                    "StateStore.load must run outside a transaction so its audit row commits "
                    "before decryption"
                )
            audit: dict[str, Any] = {"action": AuditAction.DECRYPT, **access}
            del audit["owner_id"]  # the session row names its owner; audit rows do not
            row = await conn.fetchrow(
                """SELECT owner_id, status, version, enc_format, enc_key_version, enc_wrapped_key,
                          enc_nonce, enc_ciphertext
                   FROM browser_sessions WHERE id = $1""",
                session_id,
            )
            try:
                _check_access(row, owner_id, saving=False)
                if version is not None:
                    row = await _kept_version(conn, row, session_id, version)
            except _DENIALS as exc:
                await self._audit_failure(conn, exc, audit)
                raise
            await self.audit.write(
                conn, **audit, result=AuditResult.OK, detail=f"version {row['version']}"
            )
            try:
                enc = EncryptedState(
                    format=row["enc_format"],
                    key_version=row["enc_key_version"],
                    wrapped_key=bytes(row["enc_wrapped_key"] or b""),
                    nonce=bytes(row["enc_nonce"]),
                    ciphertext=bytes(row["enc_ciphertext"]),
                )
                key = await user_key(conn, self.provider, owner_id, enc.key_version)
                state = decrypt_state(
                    enc,
                    user_key=key,
                    owner_id=owner_id,
                    session_id=session_id,
                    row_version=row["version"],
                )
            except BrowserSessionsError as exc:
                if isinstance(exc, DecryptFailed | KeyError_):
                    self.events.decrypt_failed()
                await self._audit_failure(conn, exc, audit)
                raise
            self.events.decrypt_succeeded()
            return state, int(row["version"])

    async def _audit_failure(
        self, conn: Any, exc: BrowserSessionsError, audit: dict[str, Any]
    ) -> None:
        result = AuditResult.DENIED if isinstance(exc, _DENIALS) else AuditResult.ERROR
        await self.audit.write(conn, **audit, result=result, detail=exc.code)


async def _kept_version(conn: Any, row: Any, session_id: str, version: int) -> Any:
    """The row's access fields with the ciphertext of kept ``version``."""
    kept = await conn.fetchrow(
        """SELECT version, enc_format, enc_key_version, enc_wrapped_key, enc_nonce,
                  enc_ciphertext FROM session_versions WHERE session_id = $1 AND version = $2""",
        session_id,
        version,
    )
    if kept is None:
        raise VersionNotFound(f"version {version} of this session is not kept")
    return {**dict(row), **dict(kept)}


def _check_expected(row: Any, expected: int | None) -> None:
    """A compare-and-set save: the session must still be active at the expected version."""
    if expected is None:
        return
    if row["status"] != SessionStatus.ACTIVE:
        raise SessionNotActive("the session is no longer active")
    if row["version"] != expected:
        raise VersionConflict(
            f"version {row['version']} was saved after {expected}", current=row["version"]
        )


def next_probe_at(interval: timedelta, *, now: datetime | None = None) -> datetime:
    """When to probe next: ``interval`` from now, jittered by ±10% so probes spread out."""
    return (now or datetime.now(UTC)) + interval * random.uniform(0.9, 1.1)


def _expires_at(state: dict[str, Any], start_url: str, extra_origins: Any) -> datetime | None:
    expiry = auth_expiry(state, Scope.of(start_url, list(extra_origins or [])))
    return datetime.fromtimestamp(expiry, UTC) if expiry is not None else None


def _check_access(row: Any, owner_id: str, *, saving: bool) -> None:
    """Raise the denial for a missing, foreign, revoked or (when loading) unsaved session."""
    if row is None:
        raise SessionNotFound("no such session")
    if row["owner_id"] != owner_id:
        raise NotOwner("the session belongs to another user")
    if row["status"] == SessionStatus.REVOKED:
        raise SessionRevoked("the session was revoked")
    if not saving and row["enc_ciphertext"] is None:
        raise SessionNotActive("the session has no saved state yet")
