"""The security core against real Postgres: encrypted saves and loads, binding of every
column, audit-before-decrypt, denials, database roles, shredding and a pg_dump canary."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

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
from schema.redact import REDACTED, scrub_text
from schema.sealing import (
    SealKey,
    current_seal_key,
    open_sealed,
    publish_seal_key,
    seal_aad,
    seal_text,
    sealed_key_id,
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
        provider=provider, audit=AuditLog(key=provider.audit_key()), max_state_bytes=64 * 1024
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
    session_id = await new_session(db, owner)
    await store.save(db, session_id=session_id, owner_id=owner, actor_id=owner, state=make_state())
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
        "UPDATE browser_sessions SET enc_format = 2 WHERE id = $1",
        "UPDATE browser_sessions SET enc_key_version = 2 WHERE id = $1",
        "UPDATE user_keys SET wrapped_key = set_byte(wrapped_key, 20, "
        "get_byte(wrapped_key, 20) # 1) WHERE owner_id = $1",
        "UPDATE user_keys SET root_key_id = 'local:999' WHERE owner_id = $1",
    ],
    ids=["format", "key_version", "user_key_bytes", "root_key_id"],
)
async def test_bound_fields_and_user_key_tampering_fail(
    db: Any, store: StateStore, provider: CountingProvider, tamper: str
) -> None:
    owner = uid("user")
    session_id = await new_session(db, owner)
    await store.save(db, session_id=session_id, owner_id=owner, actor_id=owner, state=make_state())
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
    session_id = await new_session(db, owner)
    await store.save(db, session_id=session_id, owner_id=owner, actor_id=owner, state=make_state())
    theirs = await new_session(db, thief)
    await store.save(db, session_id=theirs, owner_id=thief, actor_id=thief, state=make_state())
    await db.execute("UPDATE browser_sessions SET owner_id = $2 WHERE id = $1", session_id, thief)
    with pytest.raises(DecryptFailed):
        await load(store, db, session_id, thief)


async def test_no_audit_row_no_decryption(
    database_url: str, db: Any, store: StateStore, provider: CountingProvider
) -> None:
    owner = uid("user")
    session_id = await new_session(db, owner)
    await store.save(db, session_id=session_id, owner_id=owner, actor_id=owner, state=make_state())
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
    session_id = await new_session(db, owner)
    await store.save(db, session_id=session_id, owner_id=owner, actor_id=owner, state=make_state())
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


async def test_use_redacts_every_secret_value_while_in_use(db: Any, store: StateStore) -> None:
    owner = uid("user")
    session_id = await new_session(db, owner)
    canary = uid("canary")
    await store.save(
        db, session_id=session_id, owner_id=owner, actor_id=owner, state=make_state(canary)
    )
    async with store.use(
        db, session_id=session_id, owner_id=owner, actor_id=owner, task_id="t", request_id="r"
    ) as state:
        assert state["cookies"][0]["value"] == canary
        for value in (canary, "ls-" + canary, "ss-" + canary, "idb-" + canary):
            assert scrub_text(f"oops {value} leaked") == f"oops {REDACTED} leaked"
    assert canary in scrub_text(f"x {canary}")  # unregistered after the block


async def test_orchestrator_role_cannot_read_encrypted_columns_or_keys(
    db: Any, store: StateStore, as_role: Any
) -> None:
    owner = uid("user")
    session_id = await new_session(db, owner)
    await store.save(db, session_id=session_id, owner_id=owner, actor_id=owner, state=make_state())
    conn = await as_role(ORCHESTRATOR)
    for query in [
        *(f"SELECT {c} FROM browser_sessions" for c in ENC_COLUMNS),
        "SELECT * FROM browser_sessions",
        "SELECT octet_length(enc_ciphertext) FROM browser_sessions",
        "SELECT * FROM user_keys",
        "SELECT owner_id FROM user_keys",
    ]:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetch(query)
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
    for statement in (
        "UPDATE audit_log SET detail = 'x' WHERE id = $1",
        "DELETE FROM audit_log WHERE id = $1",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(statement, row_id)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await conn.execute("TRUNCATE audit_log")


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
    # Even with the revocation undone by hand, nothing can decrypt them any more (revoking
    # also wiped their ciphertext and kept versions).
    await db.execute("UPDATE browser_sessions SET status = 'expired' WHERE owner_id = $1", victim)
    for session_id in mine:
        with pytest.raises((DecryptFailed, SessionNotActive)):
            await load(store, db, session_id, victim)
        assert ("revoke", "ok", "owner key material shredded") in await audit_trail(db, session_id)
    assert await load(store, db, theirs, bystander) == state
    shred_rows = await db.fetch(
        "SELECT actor_id, result FROM audit_log WHERE action = 'shred' AND detail LIKE $1",
        f"owner {victim}:%",
    )
    assert [(r["actor_id"], r["result"]) for r in shred_rows] == [("admin-1", "ok")]
    # A later save starts a fresh key version; the old sessions stay unreadable.
    await store.save(db, session_id=mine[0], owner_id=victim, actor_id=victim, state=state)
    assert await load(store, db, mine[0], victim) == state
    with pytest.raises((DecryptFailed, SessionNotActive)):
        await load(store, db, mine[1], victim)


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
