"""Root key rotation against real Postgres: user keys rewrapped, payload bytes untouched,
every session still decryptable, old versions retired only when nothing needs them.

Rotation rewraps every user key in a database, so it runs on a scratch database with its
own key directory (the shared test database's keys belong to other tests).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from schema.audit import AuditKeys, AuditLog, verify
from schema.errors import InvalidInput, KeyError_
from tests.support.services import new_database
from workers.crypto.keys import LocalFileKeyProvider
from workers.crypto.store import StateStore
from workers.crypto.user_keys import retire_root, rotate_root, shred_user

pytestmark = pytest.mark.integration

PAYLOAD = "enc_format, enc_key_version, enc_wrapped_key, enc_nonce, enc_ciphertext"


@pytest.fixture(scope="module")
async def scratch_url(database_url: str) -> AsyncIterator[str]:
    async with new_database(f"bs_rotate_{secrets.token_hex(4)}") as url:
        yield url


@pytest.fixture
async def pool(scratch_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on the scratch database, emptied of sessions and keys from earlier tests."""
    pool = await asyncpg.create_pool(scratch_url, min_size=1, max_size=3)
    await pool.execute("DELETE FROM browser_sessions")
    await pool.execute("DELETE FROM user_keys")
    yield pool
    await pool.close()


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    return tmp_path / "keys"


@pytest.fixture
def provider(keys: Path) -> LocalFileKeyProvider:
    return LocalFileKeyProvider(key_dir=keys)


@pytest.fixture
def store(provider: LocalFileKeyProvider) -> StateStore:
    return StateStore(provider=provider, audit=AuditLog(signer=provider.audit_signer()))


def state_for(owner: str, n: int) -> dict[str, Any]:
    return {
        "cookies": [{"name": "sid", "value": f"{owner}-{n}-{secrets.token_hex(8)}"}],
        "origins": [{"origin": "https://a.example", "localStorage": [{"name": "k", "value": "v"}]}],
    }


async def save_sessions(
    pool: asyncpg.Pool, store: StateStore, owners: list[str], per_owner: int = 2
) -> dict[str, tuple[str, dict[str, Any]]]:
    """session id -> (owner, state)."""
    saved = {}
    for owner in owners:
        for n in range(per_owner):
            session_id = f"sess-{secrets.token_hex(5)}"
            await pool.execute(
                """INSERT INTO browser_sessions (id, owner_id, label, start_url, site)
                   VALUES ($1, $2, 'L', 'https://a.example/', 'a.example')""",
                session_id,
                owner,
            )
            state = state_for(owner, n)
            await store.save(
                pool, session_id=session_id, owner_id=owner, actor_id=owner, state=state
            )
            saved[session_id] = (owner, state)
    return saved


async def payloads(pool: asyncpg.Pool) -> dict[str, tuple[Any, ...]]:
    rows = await pool.fetch(f"SELECT id, {PAYLOAD} FROM browser_sessions")
    return {r["id"]: tuple(r)[1:] for r in rows}


async def assert_all_load(
    pool: asyncpg.Pool, store: StateStore, saved: dict[str, tuple[str, dict[str, Any]]]
) -> None:
    async with pool.acquire() as conn:
        for session_id, (owner, state) in saved.items():
            loaded = await store.load(
                conn,
                session_id=session_id,
                owner_id=owner,
                actor_id=owner,
                task_id="t",
                request_id="r",
            )
            assert loaded == state


async def test_rotation_rewraps_keys_and_leaves_payloads_untouched(
    pool: asyncpg.Pool, store: StateStore, provider: LocalFileKeyProvider, keys: Path
) -> None:
    saved = await save_sessions(pool, store, ["alice", "bob", "carol"])
    before_payloads = await payloads(pool)
    before_keys = {
        r["owner_id"]: bytes(r["wrapped_key"])
        for r in await pool.fetch("SELECT owner_id, wrapped_key FROM user_keys")
    }
    assert set(await pool.fetchval("SELECT array_agg(DISTINCT root_key_id) FROM user_keys")) == {
        "local:1"
    }

    result = await rotate_root(pool, provider, actor_id="ops-1")

    assert result == {
        "root_key_id": "local:2",
        "rewrapped": 3,
        "failed": [],
        "retirable": ["local:1"],
    }
    assert await payloads(pool) == before_payloads  # not one payload byte changed
    rows = await pool.fetch(
        "SELECT owner_id, root_key_id, wrapped_key, rewrapped_at FROM user_keys"
    )
    for row in rows:
        assert row["root_key_id"] == "local:2" and row["rewrapped_at"] is not None
        assert bytes(row["wrapped_key"]) != before_keys[row["owner_id"]]
    await assert_all_load(pool, store, saved)

    assert await retire_root(pool, provider, key_id="local:1", actor_id="ops-1") == {
        "retired": "local:1"
    }
    assert sorted(os.listdir(keys)) == [
        "audit-workers.key",
        "audit-workers.pub",
        "root-v1.key.retired",
        "root-v2.key",
    ]
    await assert_all_load(pool, store, saved)
    restarted = LocalFileKeyProvider(key_dir=keys)  # a new worker process sees the same
    await assert_all_load(
        pool, StateStore(provider=restarted, audit=AuditLog(signer=restarted.audit_signer())), saved
    )
    audit_rows = await pool.fetch(
        "SELECT actor_id, result, detail FROM audit_log WHERE action = 'rotate' "
        "AND actor_id = 'ops-1' ORDER BY id"
    )
    assert [(r["result"], r["detail"]) for r in audit_rows] == [
        ("ok", "root key now local:2: 3 user keys rewrapped, 0 failed"),
        ("ok", "root key local:1 retired"),
    ]
    assert (await verify(pool, AuditKeys.of(provider.audit_signer()))).ok


async def test_retire_refuses_the_current_version_and_versions_in_use(
    pool: asyncpg.Pool, store: StateStore, provider: LocalFileKeyProvider
) -> None:
    saved = await save_sessions(pool, store, ["dave"], per_owner=1)
    with pytest.raises(InvalidInput, match="current root key"):
        await retire_root(pool, provider, key_id="local:1")
    await provider.new_root_version()  # rotation interrupted before any rewrap
    with pytest.raises(InvalidInput, match="still wraps 1 user keys"):
        await retire_root(pool, provider, key_id="local:1")
    result = await rotate_root(pool, provider, new_version=False)  # resume
    assert (result["root_key_id"], result["rewrapped"]) == ("local:2", 1)
    await retire_root(pool, provider, key_id="local:1")
    await assert_all_load(pool, store, saved)
    with pytest.raises(KeyError_):
        await retire_root(pool, provider, key_id="vault:1")


async def test_rotation_skips_shredded_keys_and_reports_broken_ones(
    pool: asyncpg.Pool, store: StateStore, provider: LocalFileKeyProvider
) -> None:
    saved = await save_sessions(pool, store, ["erin", "frank", "grace"], per_owner=1)
    await shred_user(pool, provider, owner_id="frank", actor_id="admin")
    await pool.execute(
        "UPDATE user_keys SET wrapped_key = set_byte(wrapped_key, 15, "
        "get_byte(wrapped_key, 15) # 1) WHERE owner_id = 'grace'"
    )
    result = await rotate_root(pool, provider)
    assert result["rewrapped"] == 1
    assert result["failed"] == [{"owner_id": "grace", "version": 1, "code": "DECRYPT_FAILED"}]
    assert result["retirable"] == []  # grace's broken key still names local:1
    rows = await pool.fetch("SELECT owner_id, root_key_id, wrapped_key FROM user_keys")
    by_owner = {r["owner_id"]: (r["root_key_id"], r["wrapped_key"]) for r in rows}
    assert by_owner["erin"][0] == "local:2"
    assert by_owner["frank"] == ("local:1", None)
    assert by_owner["grace"][0] == "local:1"
    await assert_all_load(pool, store, {k: v for k, v in saved.items() if v[0] == "erin"})
    detail = await pool.fetchval(
        "SELECT result FROM audit_log WHERE action = 'rotate' ORDER BY id DESC LIMIT 1"
    )
    assert detail == "error"
