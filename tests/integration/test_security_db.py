"""The security core against real Postgres: encrypted saves and loads, binding of every
column, audit-before-decrypt, denials, database roles, shredding and a pg_dump canary."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from producers.api import SessionsClient
from schema.audit import AuditLog
from schema.enums import AuditAction, AuditResult
from schema.errors import (
    AuditWriteFailed,
    BrowserSessionsError,
    DecryptFailed,
    InvalidInput,
    KeyError_,
    NotOwner,
    SessionNotActive,
    SessionNotFound,
    SessionRevoked,
)
from schema.sealing import (
    SealKey,
    current_seal_key,
    open_sealed,
    publish_seal_key,
    seal_aad,
    seal_text,
    sealed_key_id,
)
from schema.settings import Settings
from tests.support.events import RecordingEvents
from tests.support.privileges import assert_refused
from workers.crypto.envelope import (
    FORMAT_V1,
    FORMAT_V2,
    EncryptedState,
    canonical_state,
    encrypt_bytes,
)
from workers.crypto.keys import LocalFileKeyProvider
from workers.crypto.store import StateStore
from workers.crypto.user_keys import shred_user, user_key, user_key_aad

pytestmark = pytest.mark.integration

ORCHESTRATOR = "browser_sessions_orchestrator"
WORKER = "browser_sessions_worker"
ENC_COLUMNS = ("enc_format", "enc_key_version", "enc_wrapped_key", "enc_nonce", "enc_ciphertext")


def uid(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(5)}"


def make_state(canary: str = "") -> dict[str, Any]:
    canary = canary or uid("canary")
    return {
        "cookies": [
            {
                "name": "sid",
                "value": canary,
                "domain": ".example.com",
                "path": "/",
                "expires": 1_900_000_000,
                "httpOnly": True,
                "secure": True,
                "sameSite": "Lax",
            },
        ],
        "origins": [
            {
                "origin": "https://app.example.com",
                "localStorage": [{"name": "token", "value": "ls-" + canary}],
                "sessionStorage": [{"name": "tab", "value": "ss-" + canary}],
                "indexedDB": [
                    {
                        "name": "db",
                        "version": 1,
                        "stores": [
                            {
                                "name": "auth",
                                "autoIncrement": False,
                                "keyPath": "id",
                                "indexes": [],
                                "records": [
                                    {"key": 1, "value": {"id": 1, "refresh": "idb-" + canary}}
                                ],
                            }
                        ],
                    }
                ],
            }
        ],
    }


async def new_session(conn: Any, owner_id: str, label: str = "Test") -> str:
    session_id = uid("sess")
    await conn.execute(
        """INSERT INTO browser_sessions (id, owner_id, label, start_url, site)
           VALUES ($1, $2, $3, 'https://app.example.com/', 'app.example.com')""",
        session_id,
        owner_id,
        label,
    )
    return session_id


async def saved_session(db: Any, store: StateStore, owner: str) -> str:
    """A new session of ``owner`` with one saved state."""
    session_id = await new_session(db, owner)
    await store.save(db, session_id=session_id, owner_id=owner, actor_id=owner, state=make_state())
    return session_id


async def audit_trail(conn: Any, session_id: str) -> list[tuple[str, str, str | None]]:
    rows = await conn.fetch(
        "SELECT action, result, detail FROM audit_log WHERE session_id = $1 ORDER BY id",
        session_id,
    )
    return [(r["action"], r["result"], r["detail"]) for r in rows]


async def enc_columns(conn: Any, session_id: str) -> dict[str, Any]:
    row = await conn.fetchrow(
        f"SELECT {', '.join(ENC_COLUMNS)} FROM browser_sessions WHERE id = $1", session_id
    )
    return dict(row)


class CountingProvider(LocalFileKeyProvider):
    """The real local provider, counting unwraps (to prove none happened)."""

    unwraps = 0

    async def unwrap(self, key_id: str, wrapped: bytes, *, aad: bytes) -> bytes:
        self.unwraps += 1
        return await super().unwrap(key_id, wrapped, aad=aad)


@pytest.fixture(scope="module")
def provider(key_dir: Path) -> CountingProvider:
    return CountingProvider(key_dir=key_dir)


@pytest.fixture(scope="module")
def store(provider: CountingProvider) -> StateStore:
    return StateStore(
        provider=provider, audit=AuditLog(signer=provider.audit_signer()), max_state_bytes=64 * 1024
    )


@pytest.fixture
async def as_role(database_url: str) -> AsyncIterator[Any]:
    """Open connections logged in as an application role (closed after the test)."""
    opened: list[asyncpg.Connection] = []

    async def connect(role: str) -> asyncpg.Connection:
        conn = await asyncpg.connect(database_url, user=role)
        opened.append(conn)
        return conn

    yield connect
    for conn in opened:
        await conn.close()


async def load(store: StateStore, conn: Any, session_id: str, owner_id: str) -> dict[str, Any]:
    return await store.load(
        conn,
        session_id=session_id,
        owner_id=owner_id,
        actor_id=owner_id,
        task_id="task-1",
        request_id="req-1",
    )


async def test_round_trip_and_fresh_encryption_per_save(db: Any, store: StateStore) -> None:
    owner = uid("user")
    session_id = await new_session(db, owner)
    state = make_state()
    assert (
        await store.save(db, session_id=session_id, owner_id=owner, actor_id=owner, state=state)
        == 1
    )
    first = await enc_columns(db, session_id)
    assert await load(store, db, session_id, owner) == state
    assert (
        await store.save(db, session_id=session_id, owner_id=owner, actor_id=owner, state=state)
        == 2
    )
    second = await enc_columns(db, session_id)
    for column in ("enc_wrapped_key", "enc_nonce", "enc_ciphertext"):
        assert first[column] != second[column], column
    assert first["enc_key_version"] == second["enc_key_version"] == 1
    row = await db.fetchrow(
        "SELECT status, version, saved_at FROM browser_sessions WHERE id = $1", session_id
    )
    assert (row["status"], row["version"]) == ("active", 2) and row["saved_at"] is not None
    assert await load(store, db, session_id, owner) == state
    assert await audit_trail(db, session_id) == [
        ("save", "ok", "saved version 1"),
        ("decrypt", "ok", "version 1"),
        ("save", "ok", "saved version 2"),
        ("decrypt", "ok", "version 2"),
    ]


@pytest.mark.parametrize("column", ["enc_ciphertext", "enc_nonce", "enc_wrapped_key"])
async def test_one_changed_byte_fails_and_is_audited(
    db: Any, store: StateStore, column: str
) -> None:
    owner = uid("user")
    session_id = await saved_session(db, store, owner)
    # Flip the lowest bit of one byte in the middle of the column.
    await db.execute(
        f"""UPDATE browser_sessions SET {column} = set_byte({column}, length({column}) / 2,
                get_byte({column}, length({column}) / 2) # 1) WHERE id = $1""",
        session_id,
    )
    with pytest.raises(DecryptFailed) as info:
        await load(store, db, session_id, owner)
    assert info.value.code == "DECRYPT_FAILED"
    assert (await audit_trail(db, session_id))[-2:] == [
        ("decrypt", "ok", "version 1"),
        ("decrypt", "error", "DECRYPT_FAILED"),
    ]


@pytest.mark.parametrize(
    "tamper",
    [
        "UPDATE browser_sessions SET enc_format = 3 WHERE id = $1",
        "UPDATE browser_sessions SET version = version + 1 WHERE id = $1",
        "UPDATE browser_sessions SET enc_key_version = 2 WHERE id = $1",
        "UPDATE user_keys SET wrapped_key = set_byte(wrapped_key, 20, "
        "get_byte(wrapped_key, 20) # 1) WHERE owner_id = $1",
        "UPDATE user_keys SET root_key_id = 'local:999' WHERE owner_id = $1",
    ],
    ids=["format", "row_version", "key_version", "user_key_bytes", "root_key_id"],
)
async def test_bound_fields_and_user_key_tampering_fail(
    db: Any, store: StateStore, provider: CountingProvider, tamper: str
) -> None:
    owner = uid("user")
    session_id = await saved_session(db, store, owner)
    if tamper.endswith("key_version = 2 WHERE id = $1"):
        # A valid version 2 holding the same key material: only the payload binding refuses.
        material = await user_key(db, provider, owner, 1)
        root_key_id, wrapped = await provider.wrap(material, aad=user_key_aad(owner, 2))
        await db.execute(
            "INSERT INTO user_keys (owner_id, version, root_key_id, wrapped_key) "
            "VALUES ($1, 2, $2, $3)",
            owner,
            root_key_id,
            wrapped,
        )
    await db.execute(tamper, owner if "user_keys" in tamper else session_id)
    with pytest.raises((DecryptFailed, KeyError_)) as info:
        await load(store, db, session_id, owner)
    assert info.value.code in ("DECRYPT_FAILED", "KEY_ERROR")
    assert (await audit_trail(db, session_id))[-1][:2] == ("decrypt", "error")


async def swap(conn: Any, a: str, b: str) -> None:
    cols = ", ".join(ENC_COLUMNS)
    src = ", ".join(f"s.{c}" for c in ENC_COLUMNS)
    await conn.execute(
        f"""UPDATE browser_sessions t SET ({cols}) = (SELECT {src} FROM browser_sessions s
               WHERE s.id = CASE WHEN t.id = $1 THEN $2 ELSE $1 END)
            WHERE t.id IN ($1, $2)""",
        a,
        b,
    )


@pytest.mark.parametrize("same_owner", [False, True], ids=["two_users", "one_user"])
async def test_swapped_payloads_fail_to_decrypt(
    db: Any, store: StateStore, same_owner: bool
) -> None:
    owner_a = uid("user")
    owner_b = owner_a if same_owner else uid("user")
    a = await new_session(db, owner_a)
    b = await new_session(db, owner_b)
    state_a, state_b = make_state(), make_state()
    await store.save(db, session_id=a, owner_id=owner_a, actor_id=owner_a, state=state_a)
    await store.save(db, session_id=b, owner_id=owner_b, actor_id=owner_b, state=state_b)
    await swap(db, a, b)
    for session_id, owner in ((a, owner_a), (b, owner_b)):
        with pytest.raises(DecryptFailed):
            await load(store, db, session_id, owner)
    await swap(db, a, b)  # swapped back: the binding, not damage, refused them
    assert await load(store, db, a, owner_a) == state_a
    assert await load(store, db, b, owner_b) == state_b


async def test_row_moved_to_another_owner_fails(db: Any, store: StateStore) -> None:
    owner, thief = uid("user"), uid("user")
    session_id = await saved_session(db, store, owner)
    theirs = await new_session(db, thief)
    await store.save(db, session_id=theirs, owner_id=thief, actor_id=thief, state=make_state())
    await db.execute("UPDATE browser_sessions SET owner_id = $2 WHERE id = $1", session_id, thief)
    with pytest.raises(DecryptFailed):
        await load(store, db, session_id, thief)


async def test_no_audit_row_no_decryption(
    database_url: str, db: Any, store: StateStore, provider: CountingProvider
) -> None:
    owner = uid("user")
    session_id = await saved_session(db, store, owner)
    conn = await asyncpg.connect(database_url)
    try:
        # Reads still work, but the audit insert cannot happen.
        await conn.execute("SET default_transaction_read_only = on")
        before = provider.unwraps
        with pytest.raises(AuditWriteFailed):
            await load(store, conn, session_id, owner)
        assert provider.unwraps == before
    finally:
        await conn.close()
    assert await audit_trail(db, session_id) == [("save", "ok", "saved version 1")]


async def test_load_refuses_to_run_inside_a_transaction(db: Any, store: StateStore) -> None:
    owner = uid("user")
    session_id = await saved_session(db, store, owner)
    async with db.transaction():
        with pytest.raises(BrowserSessionsError, match="outside a transaction"):
            await load(store, db, session_id, owner)


async def test_denials_are_refused_and_audited(db: Any, store: StateStore) -> None:
    owner, other = uid("user"), uid("user")
    pending = await new_session(db, owner)
    with pytest.raises(SessionNotActive):
        await load(store, db, pending, owner)
    missing = uid("sess")
    with pytest.raises(SessionNotFound):
        await load(store, db, missing, owner)
    with pytest.raises(SessionNotFound):
        await store.save(db, session_id=missing, owner_id=owner, actor_id=owner, state=make_state())
    saved = await new_session(db, owner)
    await store.save(db, session_id=saved, owner_id=owner, actor_id=owner, state=make_state())
    with pytest.raises(NotOwner):
        await load(store, db, saved, other)
    with pytest.raises(NotOwner):
        await store.save(db, session_id=saved, owner_id=other, actor_id=other, state=make_state())
    await db.execute("UPDATE browser_sessions SET status = 'revoked' WHERE id = $1", saved)
    with pytest.raises(SessionRevoked):
        await load(store, db, saved, owner)
    assert await audit_trail(db, pending) == [("decrypt", "denied", "SESSION_NOT_ACTIVE")]
    assert await audit_trail(db, missing) == [
        ("decrypt", "denied", "SESSION_NOT_FOUND"),
        ("save", "denied", "SESSION_NOT_FOUND"),
    ]
    assert await audit_trail(db, saved) == [
        ("save", "ok", "saved version 1"),
        ("decrypt", "denied", "NOT_OWNER"),
        ("save", "denied", "NOT_OWNER"),
        ("decrypt", "denied", "SESSION_REVOKED"),
    ]


async def test_oversized_state_is_refused_and_row_unchanged(db: Any, store: StateStore) -> None:
    owner = uid("user")
    session_id = await new_session(db, owner)
    big = {"cookies": [{"name": "x", "value": "v" * (store.max_state_bytes + 1)}]}
    with pytest.raises(InvalidInput, match="over the limit"):
        await store.save(db, session_id=session_id, owner_id=owner, actor_id=owner, state=big)
    row = await db.fetchrow(
        "SELECT status, version, enc_ciphertext FROM browser_sessions WHERE id = $1", session_id
    )
    assert (row["status"], row["version"], row["enc_ciphertext"]) == ("pending", 0, None)
    assert await audit_trail(db, session_id) == [("save", "error", "INVALID_INPUT")]


async def test_orchestrator_role_cannot_read_encrypted_columns_or_keys(
    db: Any, store: StateStore, as_role: Any
) -> None:
    owner = uid("user")
    session_id = await saved_session(db, store, owner)
    conn = await as_role(ORCHESTRATOR)
    await assert_refused(
        conn,
        [
            *(f"SELECT {c} FROM browser_sessions" for c in ENC_COLUMNS),
            "SELECT * FROM browser_sessions",
            "SELECT octet_length(enc_ciphertext) FROM browser_sessions",
            "SELECT * FROM user_keys",
            "SELECT owner_id FROM user_keys",
        ],
    )
    row = await conn.fetchrow(
        "SELECT id, owner_id, label, site, status, version, saved_at FROM browser_sessions "
        "WHERE id = $1",
        session_id,
    )
    assert (row["owner_id"], row["status"], row["version"]) == (owner, "active", 1)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await conn.execute(
            "UPDATE browser_sessions SET enc_ciphertext = NULL WHERE id = $1", session_id
        )
    # Its audit rows go through the same chained writer.
    row_id = await store.audit.write(
        conn,
        actor_id="admin",
        action=AuditAction.REVOKE,
        result=AuditResult.OK,
        session_id=session_id,
    )
    assert row_id > 0


@pytest.mark.parametrize("role", [ORCHESTRATOR, WORKER])
async def test_app_roles_cannot_change_the_audit_log(
    db: Any, store: StateStore, as_role: Any, role: str
) -> None:
    row_id = await store.audit.write(
        db, actor_id="x", action=AuditAction.CREATE, result=AuditResult.OK
    )
    conn = await as_role(role)
    await assert_refused(
        conn,
        ("UPDATE audit_log SET detail = 'x' WHERE id = $1", "DELETE FROM audit_log WHERE id = $1"),
        row_id,
    )
    await assert_refused(conn, ["TRUNCATE audit_log"])


async def test_worker_role_can_save_and_load(db: Any, store: StateStore, as_role: Any) -> None:
    owner = uid("user")
    session_id = await new_session(db, owner)
    conn = await as_role(WORKER)
    state = make_state()
    await store.save(conn, session_id=session_id, owner_id=owner, actor_id=owner, state=state)
    assert await load(store, conn, session_id, owner) == state


async def test_sealed_import_round_trip_through_seal_keys(
    db: Any, store: StateStore, provider: CountingProvider, as_role: Any
) -> None:
    published = await publish_seal_key(await as_role(WORKER), provider)
    assert await publish_seal_key(db, provider) == published  # idempotent
    producer = await as_role(ORCHESTRATOR)
    key = await current_seal_key(producer)
    assert key == SealKey(provider.seal_key_id(), provider.seal_public_key())
    owner = uid("user")
    session_id = await new_session(producer, owner)
    state = make_state()
    blob = seal_text(
        key.public_key,
        key.key_id,
        json.dumps(state).encode(),
        seal_aad(owner_id=owner, session_id=session_id),
    )
    # The worker side opens it and re-encrypts under the owner's key.
    opened = open_sealed(
        provider.seal_private_key(sealed_key_id(blob)),
        blob,
        seal_aad(owner_id=owner, session_id=session_id),
    )
    await store.save(
        db,
        session_id=session_id,
        owner_id=owner,
        actor_id=owner,
        state=json.loads(opened),
        action=AuditAction.IMPORT,
    )
    assert await load(store, db, session_id, owner) == state
    assert (await audit_trail(db, session_id))[0][:2] == ("import", "ok")


async def test_shred_user_makes_exactly_their_sessions_undecryptable(
    db: Any, store: StateStore, provider: CountingProvider
) -> None:
    victim, bystander = uid("user"), uid("user")
    mine = [await new_session(db, victim) for _ in range(2)]
    theirs = await new_session(db, bystander)
    for session_id in mine:
        await store.save(
            db, session_id=session_id, owner_id=victim, actor_id=victim, state=make_state()
        )
    state = make_state()
    await store.save(db, session_id=theirs, owner_id=bystander, actor_id=bystander, state=state)

    result = await shred_user(db, provider, owner_id=victim, actor_id="admin-1")
    assert result == {
        "owner_id": victim,
        "key_versions_shredded": [1],
        "sessions_revoked": sorted(mine),
    }
    rows = await db.fetch(
        "SELECT status, revoked_at FROM browser_sessions WHERE owner_id = $1", victim
    )
    assert all(r["status"] == "revoked" and r["revoked_at"] for r in rows)
    key = await db.fetchrow(
        "SELECT wrapped_key, shredded_at FROM user_keys WHERE owner_id = $1", victim
    )
    assert key["wrapped_key"] is None and key["shredded_at"] is not None
    # The revocation cannot be undone, and nothing is left to decrypt anyway.
    for session_id in mine:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="cannot be undone"):
            await db.execute(
                "UPDATE browser_sessions SET status = 'active' WHERE id = $1", session_id
            )
        assert set((await enc_columns(db, session_id)).values()) == {None}
        with pytest.raises(SessionRevoked):
            await load(store, db, session_id, victim)
        assert ("revoke", "ok", "owner key material shredded") in await audit_trail(db, session_id)
    assert await load(store, db, theirs, bystander) == state
    shred_rows = await db.fetch(
        "SELECT actor_id, result FROM audit_log WHERE action = 'shred' AND detail LIKE $1",
        f"owner {victim}:%",
    )
    assert [(r["actor_id"], r["result"]) for r in shred_rows] == [("admin-1", "ok")]
    # A new session of theirs starts a fresh key version.
    fresh = await new_session(db, victim)
    await store.save(db, session_id=fresh, owner_id=victim, actor_id=victim, state=state)
    assert await load(store, db, fresh, victim) == state
    assert (
        await db.fetchval("SELECT enc_key_version FROM browser_sessions WHERE id = $1", fresh) == 2
    )


async def test_canary_appears_nowhere_in_pg_dump(
    database_url: str, db: Any, store: StateStore
) -> None:
    owner = uid("user")
    label = uid("visible-label")
    session_id = await new_session(db, owner, label=label)
    canary = uid("canary")
    await store.save(
        db, session_id=session_id, owner_id=owner, actor_id=owner, state=make_state(canary)
    )
    assert (await load(store, db, session_id, owner))["cookies"][0]["value"] == canary
    proc = await asyncio.create_subprocess_exec(
        "pg_dump",
        "--no-owner",
        f"--dbname={database_url}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, err.decode(errors="replace")
    assert label.encode() in out  # the dump does contain this session's row
    assert canary.encode() not in out
    assert canary.encode().hex().encode() not in out  # not as bytea hex either


async def test_decryptions_are_reported_and_denials_are_not(
    db: Any, provider: CountingProvider
) -> None:
    events = RecordingEvents()
    store = StateStore(
        provider=provider, audit=AuditLog(signer=provider.audit_signer()), events=events
    )
    owner = uid("user")
    session_id = await saved_session(db, store, owner)
    await load(store, db, session_id, owner)
    with pytest.raises(NotOwner):
        await load(store, db, session_id, uid("someone"))
    await db.execute(
        "UPDATE browser_sessions SET enc_nonce = set_byte(enc_nonce, 0, get_byte(enc_nonce, 0) # 1)"
        " WHERE id = $1",
        session_id,
    )
    with pytest.raises(DecryptFailed):
        await load(store, db, session_id, owner)
    assert [name for name, _ in events.calls] == ["decrypt_succeeded", "decrypt_failed"]


ADMIN = "ops-admin"


def role_url(database_url: str, role: str) -> str:
    parts = urlsplit(database_url)
    host = parts.hostname or "127.0.0.1"
    return urlunsplit(parts._replace(netloc=f"{role}@{host}:{parts.port or 5432}"))


@pytest.fixture
async def orchestrator(base_settings: Settings) -> AsyncIterator[SessionsClient]:
    """The producers' client as the orchestrator deploys it: its own role, one admin listed."""
    settings = dataclasses.replace(
        base_settings,
        database_url=role_url(base_settings.database_url, ORCHESTRATOR),
        admins=frozenset({ADMIN}),
    )
    async with SessionsClient.open(settings) as client:
        yield client


@pytest.mark.parametrize("revoker", ["owner", "admin"])
async def test_revocation_wipes_the_ciphertext_and_cannot_be_undone(
    db: Any, store: StateStore, orchestrator: SessionsClient, as_role: Any, revoker: str
) -> None:
    owner = uid("user")
    session_id = await saved_session(db, store, owner)
    before = await enc_columns(db, session_id)
    assert None not in before.values()
    actor = owner if revoker == "owner" else ADMIN
    assert (await orchestrator.revoke(session_id, actor_id=actor))["status"] == "revoked"
    assert set((await enc_columns(db, session_id)).values()) == {None}
    # Neither application role, nor the schema owner, can bring it back.
    for conn in (await as_role(ORCHESTRATOR), await as_role(WORKER), db):
        for status in ("active", "expired", "pending"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="cannot be undone"):
                await conn.execute(
                    "UPDATE browser_sessions SET status = $2 WHERE id = $1", session_id, status
                )
    # Nor can the old ciphertext be put back under the revoked status.
    worker = await as_role(WORKER)
    await worker.execute(
        f"UPDATE browser_sessions SET ({', '.join(ENC_COLUMNS)}) = ($2, $3, $4, $5, $6) "
        "WHERE id = $1",
        session_id,
        *before.values(),
    )
    assert set((await enc_columns(db, session_id)).values()) == {None}
    with pytest.raises(SessionRevoked):
        await store.save(
            db, session_id=session_id, owner_id=owner, actor_id=owner, state=make_state()
        )
    with pytest.raises(SessionRevoked):
        await load(store, db, session_id, owner)
    assert (await audit_trail(db, session_id))[1] == ("revoke", "ok", f"by {revoker}")


async def test_admin_rights_come_only_from_the_configured_list(
    db: Any, store: StateStore, orchestrator: SessionsClient
) -> None:
    owner, mallory = uid("user"), uid("mallory")
    session_id = await saved_session(db, store, owner)
    # Claiming to be an admin grants nothing, for revoke, delete or a metadata read.
    with pytest.raises(NotOwner, match="not a configured admin"):
        await orchestrator.revoke(session_id, actor_id=mallory, admin=True)
    with pytest.raises(NotOwner, match="not a configured admin"):
        await orchestrator.delete(session_id, actor_id=mallory, admin=True)
    with pytest.raises(NotOwner):
        await orchestrator.get_session(session_id, actor_id=mallory, admin=True)
    with pytest.raises(NotOwner):
        await orchestrator.revoke(session_id, actor_id=mallory)
    with pytest.raises(NotOwner):  # the owner asking for admin rights is refused too
        await orchestrator.revoke(session_id, actor_id=owner, admin=True)
    assert (await orchestrator.get_session(session_id, actor_id=owner)).status == "active"
    assert await audit_trail(db, session_id) == [
        ("save", "ok", "saved version 1"),
        ("revoke", "denied", "admin request by a non-admin"),
        ("delete", "denied", "admin request by a non-admin"),
        ("use", "denied", "admin request by a non-admin"),
        ("revoke", "denied", "not the owner"),
        ("revoke", "denied", "admin request by a non-admin"),
    ]
    # A listed admin may revoke and delete (with or without asking), never re-login.
    assert (await orchestrator.get_session(session_id, actor_id=ADMIN)).id == session_id
    with pytest.raises(NotOwner):
        await orchestrator.relogin(session_id, actor_id=ADMIN)
    await orchestrator.revoke(session_id, actor_id=ADMIN, admin=True)
    assert await orchestrator.delete(session_id, actor_id=ADMIN) == {
        "session_id": session_id,
        "deleted": True,
    }
    assert (await audit_trail(db, session_id))[-3:] == [
        ("relogin", "denied", "not the owner"),
        ("revoke", "ok", "by admin"),
        ("delete", "ok", "by admin"),
    ]


async def test_an_older_ciphertext_put_back_over_a_newer_one_fails(
    db: Any, store: StateStore, as_role: Any
) -> None:
    owner = uid("user")
    session_id = await new_session(db, owner)
    first, second = make_state(), make_state()
    await store.save(db, session_id=session_id, owner_id=owner, actor_id=owner, state=first)
    older = await enc_columns(db, session_id)
    await store.save(db, session_id=session_id, owner_id=owner, actor_id=owner, state=second)
    worker = await as_role(WORKER)
    cols = ", ".join(ENC_COLUMNS)
    await worker.execute(
        f"UPDATE browser_sessions SET ({cols}) = ($2, $3, $4, $5, $6) WHERE id = $1",
        session_id,
        *older.values(),
    )
    with pytest.raises(DecryptFailed):
        await load(store, db, session_id, owner)
    # Winding the version back with it is refused.
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="cannot go back"):
        await worker.execute("UPDATE browser_sessions SET version = 1 WHERE id = $1", session_id)


async def write_format_1(conn: Any, session_id: str, legacy: EncryptedState) -> None:
    """Put ``legacy`` (an envelope of format 1) in the session's encrypted columns."""
    await conn.execute(
        "UPDATE browser_sessions SET enc_format = 1, enc_wrapped_key = $2, enc_nonce = $3, "
        "enc_ciphertext = $4 WHERE id = $1",
        session_id,
        legacy.wrapped_key,
        legacy.nonce,
        legacy.ciphertext,
    )


async def test_format_1_rows_still_decrypt_and_are_re_encrypted_on_save(
    db: Any, store: StateStore, provider: CountingProvider, as_role: Any
) -> None:
    owner = uid("user")
    session_id = await new_session(db, owner)
    state = make_state()
    await store.save(db, session_id=session_id, owner_id=owner, actor_id=owner, state=state)
    # A row as the previous release wrote it: envelope format 1, no row version bound.
    legacy = encrypt_bytes(
        canonical_state(state, max_state_bytes=store.max_state_bytes),
        user_key=await user_key(db, provider, owner, 1),
        owner_id=owner,
        session_id=session_id,
        key_version=1,
        row_version=0,
        format=FORMAT_V1,
    )
    await db.execute("ALTER TABLE browser_sessions DISABLE TRIGGER browser_sessions_no_rollback")
    try:
        await write_format_1(db, session_id, legacy)
    finally:
        await db.execute("ALTER TABLE browser_sessions ENABLE TRIGGER browser_sessions_no_rollback")
    assert await load(store, db, session_id, owner) == state
    await store.save(db, session_id=session_id, owner_id=owner, actor_id=owner, state=state)
    assert (
        await db.fetchval("SELECT enc_format FROM browser_sessions WHERE id = $1", session_id)
        == FORMAT_V2
    )
    assert await load(store, db, session_id, owner) == state
    # The old format-1 copy cannot be put back once the row is format 2.
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="cannot go back"):
        await write_format_1(await as_role(WORKER), session_id, legacy)
