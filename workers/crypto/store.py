"""Save and load the encrypted state of a ``browser_sessions`` row, audited.

``save`` encrypts under the owner's key and writes the row and its ``save`` audit row in
one transaction. ``load`` commits its ``decrypt`` audit row *before* decrypting (no audit
row, no decryption), so it must not run inside a caller's transaction. Denials (unknown
session, wrong owner, revoked, nothing saved) and failures are audited too.

The decrypted state goes to the caller only, who registers its cookie and storage values
for log redaction while it holds it (``schema.redact.secret_values``).
"""

from __future__ import annotations

from typing import Any

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

_DENIALS = (SessionNotFound, NotOwner, SessionRevoked, SessionNotActive)


class StateStore:
    """Encrypted session states in ``browser_sessions.enc_*``."""

    def __init__(
        self,
        *,
        provider: KeyProvider,
        audit: AuditLog,
        max_state_bytes: int = Settings.max_state_bytes,
        events: Events = NO_EVENTS,
    ) -> None:
        self.provider = provider
        self.audit = audit
        self.max_state_bytes = max_state_bytes
        self._events = events

    async def save(
        self,
        conn: Any,
        *,
        session_id: str,
        owner_id: str,
        actor_id: str,
        state: dict[str, Any],
        request_id: str | None = None,
        action: AuditAction = AuditAction.SAVE,
    ) -> int:
        """Encrypt ``state`` into the session row; returns the row's new ``version``.

        The row becomes ``active``. ``action`` is the audit action (``save`` or ``import``).
        ``conn`` is a connection or a pool.
        """
        async with connection(conn) as conn:
            audit: dict[str, Any] = {
                "actor_id": actor_id,
                "action": action,
                "session_id": session_id,
                "request_id": request_id,
            }
            try:
                plaintext = canonical_state(state, max_state_bytes=self.max_state_bytes)
                async with conn.transaction():
                    row = await conn.fetchrow(
                        "SELECT owner_id, status, version FROM browser_sessions WHERE id = $1 "
                        "FOR UPDATE",
                        session_id,
                    )
                    _check_access(row, owner_id, saving=True)
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
                               status = $7, saved_at = now(), updated_at = now()
                           WHERE id = $1""",
                        session_id,
                        enc.format,
                        enc.key_version,
                        enc.wrapped_key,
                        enc.nonce,
                        enc.ciphertext,
                        SessionStatus.ACTIVE.value,
                        version,
                    )
                    await self.audit.write(
                        conn, **audit, result=AuditResult.OK, detail=f"saved version {version}"
                    )
            except AuditWriteFailed:
                raise
            except BrowserSessionsError as exc:
                await self._audit_failure(conn, exc, audit)
                raise
            await self.audit.checkpoint(conn)  # the save row committed with the state
            return version

    async def load(
        self,
        conn: Any,
        *,
        session_id: str,
        owner_id: str,
        actor_id: str,
        task_id: str | None,
        request_id: str | None,
    ) -> dict[str, Any]:
        """The decrypted state, after its ``decrypt`` audit row has been committed.

        ``conn`` is a connection outside any transaction, or a pool.
        """
        async with connection(conn) as conn:
            if conn.is_in_transaction():
                raise BrowserSessionsError(
                    "StateStore.load must run outside a transaction so its audit row commits "
                    "before decryption"
                )
            audit: dict[str, Any] = {
                "actor_id": actor_id,
                "action": AuditAction.DECRYPT,
                "session_id": session_id,
                "task_id": task_id,
                "request_id": request_id,
            }
            row = await conn.fetchrow(
                """SELECT owner_id, status, version, enc_format, enc_key_version, enc_wrapped_key,
                          enc_nonce, enc_ciphertext
                   FROM browser_sessions WHERE id = $1""",
                session_id,
            )
            try:
                _check_access(row, owner_id, saving=False)
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
                    self._events.decrypt_failed()
                await self._audit_failure(conn, exc, audit)
                raise
            self._events.decrypt_succeeded()
            return state

    async def _audit_failure(
        self, conn: Any, exc: BrowserSessionsError, audit: dict[str, Any]
    ) -> None:
        result = AuditResult.DENIED if isinstance(exc, _DENIALS) else AuditResult.ERROR
        await self.audit.write(conn, **audit, result=result, detail=exc.code)


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
