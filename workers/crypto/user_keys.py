"""Per-user keys in ``user_keys``: get-or-create, root rotation, crypto-shredding.

A user key is 256 random bits, stored only wrapped by a root key from the provider, with
associated data binding it to (owner id, version). Rotating the root rewraps these rows
and leaves every payload untouched; shredding NULLs a user's wrapped keys, which makes all
of that user's saved states undecryptable.

Shredding removes the live copy only: old copies of ``wrapped_key`` survive in database
backups and WAL archives until they expire. Rotating the root key after a shred and then
retiring (and destroying) the old root version makes those copies useless too.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import Any

from schema.audit import AuditLog
from schema.db import connection
from schema.enums import AuditAction, AuditResult, SessionStatus
from schema.errors import BrowserSessionsError, DecryptFailed, InvalidInput, KeyError_
from workers.crypto.envelope import KEY_BYTES
from workers.crypto.keys import KeyProvider

_CREATE_ATTEMPTS = 3


@dataclass(frozen=True)
class UserKey:
    owner_id: str
    version: int
    key: bytes = field(repr=False)


def user_key_aad(owner_id: str, version: int) -> bytes:
    """Associated data binding a wrapped user key to its owner and version."""
    return json.dumps(
        ["browser-sessions/user-key", owner_id, version], separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")


async def current_user_key(conn: Any, provider: KeyProvider, owner_id: str) -> UserKey:
    """The owner's newest live key, created (as the next version) when there is none."""
    for _ in range(_CREATE_ATTEMPTS):
        row = await conn.fetchrow(
            """SELECT version, root_key_id, wrapped_key FROM user_keys
               WHERE owner_id = $1 ORDER BY version DESC LIMIT 1""",
            owner_id,
        )
        if row is not None and row["wrapped_key"] is not None:
            key = await provider.unwrap(
                row["root_key_id"],
                bytes(row["wrapped_key"]),
                aad=user_key_aad(owner_id, row["version"]),
            )
            return UserKey(owner_id, row["version"], key)
        version = 1 if row is None else row["version"] + 1
        material = secrets.token_bytes(KEY_BYTES)
        root_key_id, wrapped = await provider.wrap(material, aad=user_key_aad(owner_id, version))
        created = await conn.fetchval(
            """INSERT INTO user_keys (owner_id, version, root_key_id, wrapped_key)
               VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING version""",
            owner_id,
            version,
            root_key_id,
            wrapped,
        )
        if created is not None:
            return UserKey(owner_id, version, material)
    raise KeyError_("could not create a user key: concurrent creators kept winning")


async def user_key(conn: Any, provider: KeyProvider, owner_id: str, version: int) -> bytes:
    """One version of the owner's key; ``DecryptFailed`` if it is missing or shredded."""
    row = await conn.fetchrow(
        "SELECT root_key_id, wrapped_key FROM user_keys WHERE owner_id = $1 AND version = $2",
        owner_id,
        version,
    )
    if row is None or row["wrapped_key"] is None:
        raise DecryptFailed("the owner's key for this state is missing or was shredded")
    key: bytes = await provider.unwrap(
        row["root_key_id"], bytes(row["wrapped_key"]), aad=user_key_aad(owner_id, version)
    )
    if len(key) != KEY_BYTES:
        raise DecryptFailed("the owner's key has the wrong length")
    return key


async def rotate_root(
    conn_or_pool: Any,
    provider: KeyProvider,
    *,
    new_version: bool = True,
    actor_id: str = "system",
    audit: AuditLog | None = None,
    batch: int = 500,
) -> dict[str, Any]:
    """Rewrap every live user key under a new root version (payloads are not touched).

    With ``new_version=False`` it only moves stragglers to the current version (resume
    after an interruption). Returns counts and the root ids that can now be retired.
    """
    audit = audit or AuditLog(signer=provider.audit_signer())
    target = await (provider.new_root_version() if new_version else provider.current_root_key_id())
    rewrapped = 0
    failed: list[dict[str, Any]] = []
    async with connection(conn_or_pool) as conn:
        after: tuple[str, int] = ("", 0)
        while True:
            rows = await conn.fetch(
                """SELECT owner_id, version, root_key_id, wrapped_key FROM user_keys
                   WHERE wrapped_key IS NOT NULL AND root_key_id <> $1
                     AND (owner_id, version) > ($2, $3)
                   ORDER BY owner_id, version LIMIT $4""",
                target,
                *after,
                batch,
            )
            if not rows:
                break
            after = (rows[-1]["owner_id"], rows[-1]["version"])
            updates = []
            for row in rows:
                aad = user_key_aad(row["owner_id"], row["version"])
                try:
                    key_id, wrapped = await provider.rewrap(
                        row["root_key_id"], bytes(row["wrapped_key"]), aad=aad
                    )
                except BrowserSessionsError as exc:
                    failed.append(
                        {"owner_id": row["owner_id"], "version": row["version"], "code": exc.code}
                    )
                    continue
                if key_id != target:
                    raise KeyError_(f"the current root key changed to {key_id} during rotation")
                updates.append(
                    (row["owner_id"], row["version"], row["root_key_id"], key_id, wrapped)
                )
            # Only rows still wrapped under the old root: a concurrent shred wins.
            async with conn.transaction():
                for owner_id, version, old_id, key_id, wrapped in updates:
                    status = await conn.execute(
                        """UPDATE user_keys SET root_key_id = $4, wrapped_key = $5,
                               rewrapped_at = now()
                           WHERE owner_id = $1 AND version = $2 AND root_key_id = $3
                             AND wrapped_key IS NOT NULL""",
                        owner_id,
                        version,
                        old_id,
                        key_id,
                        wrapped,
                    )
                    rewrapped += status == "UPDATE 1"
        retirable = await _retirable(conn, provider)
        await audit.write(
            conn,
            actor_id=actor_id,
            action=AuditAction.ROTATE,
            result=AuditResult.ERROR if failed else AuditResult.OK,
            detail=f"root key now {target}: {rewrapped} user keys rewrapped, {len(failed)} failed",
        )
    return {
        "root_key_id": target,
        "rewrapped": rewrapped,
        "failed": failed,
        "retirable": retirable,
    }


async def _retirable(conn: Any, provider: KeyProvider) -> list[str]:
    in_use = {
        r["root_key_id"]
        for r in await conn.fetch(
            "SELECT DISTINCT root_key_id FROM user_keys WHERE wrapped_key IS NOT NULL"
        )
    }
    return [
        k.key_id
        for k in await provider.list_root_keys()
        if not k.retired and not k.current and k.key_id not in in_use
    ]


async def retire_root(
    conn_or_pool: Any,
    provider: KeyProvider,
    *,
    key_id: str,
    actor_id: str = "system",
    audit: AuditLog | None = None,
) -> dict[str, Any]:
    """Retire a root key version that no live user key needs any more."""
    audit = audit or AuditLog(signer=provider.audit_signer())
    async with connection(conn_or_pool) as conn:
        if key_id == await provider.current_root_key_id():
            raise InvalidInput(f"{key_id} is the current root key: rotate first")
        in_use = await conn.fetchval(
            "SELECT count(*) FROM user_keys WHERE root_key_id = $1 AND wrapped_key IS NOT NULL",
            key_id,
        )
        if in_use:
            raise InvalidInput(f"{key_id} still wraps {in_use} user keys: run rotate first")
        await provider.retire_root_version(key_id)
        await audit.write(
            conn,
            actor_id=actor_id,
            action=AuditAction.ROTATE,
            result=AuditResult.OK,
            detail=f"root key {key_id} retired",
        )
    return {"retired": key_id}


async def shred_user(
    conn_or_pool: Any,
    provider: KeyProvider,
    *,
    owner_id: str,
    actor_id: str,
    audit: AuditLog | None = None,
) -> dict[str, Any]:
    """Destroy the owner's key material and revoke their sessions, atomically and audited."""
    if not owner_id:
        raise InvalidInput("owner_id is required")
    audit = audit or AuditLog(signer=provider.audit_signer())
    async with connection(conn_or_pool) as conn, conn.transaction():
        keys = await conn.fetch(
            """UPDATE user_keys SET wrapped_key = NULL, shredded_at = now()
               WHERE owner_id = $1 AND wrapped_key IS NOT NULL RETURNING version""",
            owner_id,
        )
        sessions = await conn.fetch(
            """UPDATE browser_sessions
               SET status = $2, revoked_at = coalesce(revoked_at, now()), updated_at = now()
               WHERE owner_id = $1 AND status <> $2 RETURNING id""",
            owner_id,
            SessionStatus.REVOKED.value,
        )
        session_ids = sorted(r["id"] for r in sessions)
        await audit.write(
            conn,
            actor_id=actor_id,
            action=AuditAction.SHRED,
            result=AuditResult.OK,
            detail=f"owner {owner_id}: {len(keys)} key versions destroyed, "
            f"{len(session_ids)} sessions revoked",
        )
        for session_id in session_ids:
            await audit.write(
                conn,
                actor_id=actor_id,
                action=AuditAction.REVOKE,
                result=AuditResult.OK,
                session_id=session_id,
                detail="owner key material shredded",
            )
    return {
        "owner_id": owner_id,
        "key_versions_shredded": sorted(r["version"] for r in keys),
        "sessions_revoked": session_ids,
    }
