"""Per-user keys in ``user_keys``: get-or-create, two-phase root rotation, crypto-shredding.

A user key is 256 random bits, stored only wrapped by a root key from the provider, with
associated data binding it to (owner id, version). Rotating the root rewraps these rows
and leaves every payload untouched; shredding NULLs a user's wrapped keys, which makes all
of that user's saved states undecryptable.

Root rotation has two phases so it works with read-only key volumes on many hosts:
:func:`prepare_root` creates a new root version (recorded ``prepared`` in ``root_keys``;
nothing uses it), the operator distributes its key material to every worker host, then
:func:`activate_root` makes it the one version new user keys are wrapped under and rewraps
the existing ones. :func:`retire_root` destroys an old version's material once no user key
needs it.

Shredding removes the live copy only: old copies of ``wrapped_key`` survive in database
backups and WAL archives until they expire. Rotating the root key after a shred and then
retiring (and destroying) the old root version makes those copies useless too.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict, Unpack

from schema.audit import AuditLog
from schema.db import connection
from schema.enums import AuditAction, AuditResult, SessionStatus
from schema.errors import BrowserSessionsError, DecryptFailed, InvalidInput, KeyError_
from schema.keywords import check_keywords
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
        root_key_id, wrapped = await provider.wrap(
            material,
            aad=user_key_aad(owner_id, version),
            key_id=await active_root_key_id(conn, provider),
        )
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


async def active_root_key_id(conn: Any, provider: KeyProvider) -> str:
    """The root version new user keys are wrapped under (``root_keys``), recorded from the
    provider's current version the first time."""
    active = await conn.fetchval("SELECT key_id FROM root_keys WHERE state = 'active'")
    if active is not None:
        return str(active)
    current = await provider.current_root_key_id()
    await conn.execute(
        """INSERT INTO root_keys (key_id, state, activated_at) VALUES ($1, 'active', now())
           ON CONFLICT DO NOTHING""",
        current,
    )
    active = await conn.fetchval("SELECT key_id FROM root_keys WHERE state = 'active'")
    if active is None:
        raise KeyError_(f"root key {current} cannot be recorded as active")
    return str(active)


def _version(key_id: str) -> int:
    number = key_id.rpartition(":")[2]
    return int(number) if number.isdigit() else 0


class Operator(TypedDict, total=False):
    """Who runs a root key operation (``actor_id``, default ``system``) and the audit log
    it writes to (``audit``, default: one signed with the provider's audit key)."""

    actor_id: str
    audit: AuditLog | None


@dataclass(frozen=True)
class _Rotation:
    """One root key operation's operator and audit log, which gets its ``rotate`` rows."""

    actor_id: str
    audit: AuditLog

    @classmethod
    def of(cls, provider: KeyProvider, operator: Operator) -> _Rotation:
        check_keywords(Operator, operator, call="a root key operation")
        audit = operator.get("audit") or AuditLog(signer=provider.audit_signer())
        return cls(operator.get("actor_id", "system"), audit)

    async def audited(self, conn: Any, detail: str, *, ok: bool = True) -> None:
        await self.audit.write(
            conn,
            actor_id=self.actor_id,
            action=AuditAction.ROTATE,
            result=AuditResult.OK if ok else AuditResult.ERROR,
            detail=detail,
        )


async def prepare_root(
    conn_or_pool: Any,
    provider: KeyProvider,
    *,
    directory: Path | None = None,
    **operator: Unpack[Operator],
) -> dict[str, Any]:
    """Phase 1: create a new root version that nothing uses yet; returns its id and where its
    material is (distribute it to every worker host, then :func:`activate_root`)."""
    rotation = _Rotation.of(provider, operator)
    async with connection(conn_or_pool) as conn:
        active = await active_root_key_id(conn, provider)  # pinned before a new file appears
        known = await conn.fetch(
            "SELECT key_id FROM root_keys UNION SELECT root_key_id FROM user_keys"
        )
        above = max((_version(r["key_id"]) for r in known), default=0)
        key_id, where = await provider.prepare_root_version(above=above, directory=directory)
        await conn.execute(
            "INSERT INTO root_keys (key_id, state) VALUES ($1, 'prepared') ON CONFLICT DO NOTHING",
            key_id,
        )
        await rotation.audited(conn, f"root key {key_id} prepared (active: {active})")
    return {"prepared": key_id, "material": where, "active": active}


async def activate_root(
    conn_or_pool: Any,
    provider: KeyProvider,
    *,
    key_id: str,
    batch: int = 500,
    **operator: Unpack[Operator],
) -> dict[str, Any]:
    """Phase 2: make ``key_id`` the active root version and rewrap every live user key under
    it (payloads are not touched). Idempotent: run it again to move stragglers.

    Refused (``KEY_ERROR``) if this host cannot use ``key_id``: it was not distributed here.
    """
    rotation = _Rotation.of(provider, operator)
    probe = b"browser-sessions/root-probe"
    _, wrapped = await provider.wrap(probe, aad=probe, key_id=key_id)
    if await provider.unwrap(key_id, wrapped, aad=probe) != probe:
        raise KeyError_(f"root key {key_id} does not round-trip on this host")
    async with connection(conn_or_pool) as conn:
        async with conn.transaction():
            await active_root_key_id(conn, provider)
            state = await conn.fetchval("SELECT state FROM root_keys WHERE key_id = $1", key_id)
            if state == "retired":
                raise InvalidInput(f"{key_id} is retired")
            await conn.execute(
                """UPDATE root_keys SET state = 'inactive'
                   WHERE state = 'active' AND key_id <> $1""",
                key_id,
            )
            await conn.execute(
                """INSERT INTO root_keys (key_id, state, activated_at)
                   VALUES ($1, 'active', now())
                   ON CONFLICT (key_id) DO UPDATE SET state = 'active',
                       activated_at = coalesce(root_keys.activated_at, now())""",
                key_id,
            )
        rewrapped, failed = await _rewrap_all(conn, provider, key_id, batch)
        retirable = await _retirable(conn)
        await rotation.audited(
            conn,
            f"root key now {key_id}: {rewrapped} user keys rewrapped, {len(failed)} failed",
            ok=not failed,
        )
    return {"root_key_id": key_id, "rewrapped": rewrapped, "failed": failed, "retirable": retirable}


async def rotate_root(
    conn_or_pool: Any,
    provider: KeyProvider,
    *,
    new_version: bool = True,
    batch: int = 500,
    **operator: Unpack[Operator],
) -> dict[str, Any]:
    """Both phases at once, for a single host whose key directory is writable: prepare a
    version there and activate it. ``new_version=False`` only resumes the active version's
    rewrap."""
    rotation = _Rotation.of(provider, operator)
    operator = {"actor_id": rotation.actor_id, "audit": rotation.audit}  # one log for both
    async with connection(conn_or_pool) as conn:
        if new_version:
            prepared = await prepare_root(conn, provider, **operator)
            target = prepared["prepared"]
        else:
            target = await active_root_key_id(conn, provider)
        return await activate_root(conn, provider, key_id=target, batch=batch, **operator)


async def _rewrap_all(
    conn: Any, provider: KeyProvider, target: str, batch: int
) -> tuple[int, list[dict[str, Any]]]:
    rewrapped = 0
    failed: list[dict[str, Any]] = []
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
            return rewrapped, failed
        after = (rows[-1]["owner_id"], rows[-1]["version"])
        updates = []
        for row in rows:
            aad = user_key_aad(row["owner_id"], row["version"])
            try:
                key_id, wrapped = await provider.rewrap(
                    row["root_key_id"], bytes(row["wrapped_key"]), aad=aad, target=target
                )
            except BrowserSessionsError as exc:
                failed.append(
                    {"owner_id": row["owner_id"], "version": row["version"], "code": exc.code}
                )
                continue
            updates.append((row["owner_id"], row["version"], row["root_key_id"], key_id, wrapped))
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


async def _retirable(conn: Any) -> list[str]:
    rows = await conn.fetch(
        """SELECT key_id FROM root_keys r
           WHERE state IN ('inactive', 'prepared')
             AND NOT EXISTS (SELECT 1 FROM user_keys u
                             WHERE u.root_key_id = r.key_id AND u.wrapped_key IS NOT NULL)
           ORDER BY key_id"""
    )
    return [r["key_id"] for r in rows]


async def retire_root(
    conn_or_pool: Any,
    provider: KeyProvider,
    *,
    key_id: str,
    **operator: Unpack[Operator],
) -> dict[str, Any]:
    """Retire a root version no live user key needs: recorded ``retired`` and its key
    material destroyed where this host holds it (overwritten, then unlinked)."""
    rotation = _Rotation.of(provider, operator)
    async with connection(conn_or_pool) as conn:
        if key_id == await active_root_key_id(conn, provider):
            raise InvalidInput(f"{key_id} is the active root key: activate another first")
        in_use = await conn.fetchval(
            "SELECT count(*) FROM user_keys WHERE root_key_id = $1 AND wrapped_key IS NOT NULL",
            key_id,
        )
        if in_use:
            raise InvalidInput(f"{key_id} still wraps {in_use} user keys: activate a newer one")
        destroyed = await provider.retire_root_version(key_id)
        await conn.execute(
            """INSERT INTO root_keys (key_id, state, retired_at) VALUES ($1, 'retired', now())
               ON CONFLICT (key_id) DO UPDATE SET state = 'retired', retired_at = now()""",
            key_id,
        )
        await rotation.audited(
            conn,
            f"root key {key_id} retired"
            + ("" if destroyed else " (its material was not on this host)"),
        )
    return {"retired": key_id, "destroyed_here": destroyed}


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
    await audit.checkpoint(conn_or_pool)
    return {
        "owner_id": owner_id,
        "key_versions_shredded": sorted(r["version"] for r in keys),
        "sessions_revoked": session_ids,
    }
