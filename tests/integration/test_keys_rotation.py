"""Root key rotation against real Postgres: two phases (prepare, distribute, activate) that
work across hosts whose key directories are read-only, user keys rewrapped, payload bytes
untouched, every session still decryptable, old versions retired (their material destroyed)
only when nothing needs them.

Rotation rewraps every user key in a database, so it runs on a scratch database with its
own key directory (the shared test database's keys belong to other tests).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from schema.audit import AuditKeys, AuditLog, verify
from schema.errors import InvalidInput, KeyError_
from workers.crypto.keys import LocalFileKeyProvider
from workers.crypto.store import StateStore
from workers.crypto.user_keys import (
    activate_root,
    prepare_root,
    retire_root,
    rotate_root,
    shred_user,
)

pytestmark = pytest.mark.integration

PAYLOAD = "enc_format, enc_key_version, enc_wrapped_key, enc_nonce, enc_ciphertext"


@pytest.fixture
async def pool(scratch_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on the scratch database, emptied of sessions and keys from earlier tests."""
    async with asyncpg.create_pool(scratch_url, min_size=1, max_size=3) as pool:
        await pool.execute("DELETE FROM browser_sessions")
        await pool.execute("DELETE FROM user_keys")
        await pool.execute("DELETE FROM root_keys")
        yield pool


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

    old_material = (keys / "root-v1.key").read_bytes()
    os.link(keys / "root-v1.key", keys.parent / "v1-inode")  # to look at the same bytes later
    assert await retire_root(pool, provider, key_id="local:1", actor_id="ops-1") == {
        "retired": "local:1",
        "destroyed_here": True,
    }
    assert sorted(os.listdir(keys)) == [
        "audit-workers.key",
        "audit-workers.pub",
        "root-v1.key.retired",
        "root-v2.key",
    ]
    assert (keys / "root-v1.key.retired").stat().st_size == 0
    assert (keys.parent / "v1-inode").read_bytes() != old_material  # overwritten, not renamed
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
        ("ok", "root key local:2 prepared (active: local:1)"),
        ("ok", "root key now local:2: 3 user keys rewrapped, 0 failed"),
        ("ok", "root key local:1 retired"),
    ]
    assert (await verify(pool, AuditKeys.of(provider.audit_signer()))).ok


async def test_retire_refuses_the_active_version_and_versions_in_use(
    pool: asyncpg.Pool, store: StateStore, provider: LocalFileKeyProvider
) -> None:
    saved = await save_sessions(pool, store, ["dave"], per_owner=1)
    with pytest.raises(InvalidInput, match="active root key"):
        await retire_root(pool, provider, key_id="local:1")
    prepared = await prepare_root(pool, provider)
    assert (prepared["prepared"], prepared["active"]) == ("local:2", "local:1")
    # A prepared version is not used: new user keys still go under the active one.
    more = await save_sessions(pool, store, ["erin"], per_owner=1)
    assert await pool.fetchval("SELECT root_key_id FROM user_keys WHERE owner_id = 'erin'") == (
        "local:1"
    )
    result = await activate_root(pool, provider, key_id="local:2")
    assert (result["rewrapped"], result["retirable"]) == (2, ["local:1"])
    again = await activate_root(pool, provider, key_id="local:2")  # idempotent
    assert again["rewrapped"] == 0
    with pytest.raises(InvalidInput, match="active root key"):
        await retire_root(pool, provider, key_id="local:2")
    await pool.execute(
        "UPDATE user_keys SET root_key_id = 'local:1' WHERE owner_id = 'dave'"
    )  # pretend one was left behind
    with pytest.raises(InvalidInput, match="still wraps 1 user keys"):
        await retire_root(pool, provider, key_id="local:1")
    await pool.execute("UPDATE user_keys SET root_key_id = 'local:2' WHERE owner_id = 'dave'")
    await retire_root(pool, provider, key_id="local:1")
    await assert_all_load(pool, store, {**saved, **more})
    with pytest.raises(KeyError_):
        await retire_root(pool, provider, key_id="vault:1")


def listing(path: Path) -> dict[str, bytes]:
    return {name: (path / name).read_bytes() for name in sorted(os.listdir(path))}


async def test_two_phase_rotation_across_hosts_that_never_write_their_key_dirs(
    pool: asyncpg.Pool, scratch_url: str, tmp_path: Path
) -> None:
    """Host A runs the commands, host B only serves jobs; neither key directory is written
    by the rotation (a read-only Secret volume): the operator copies the prepared file."""
    host_a, host_b, staging = tmp_path / "a", tmp_path / "b", tmp_path / "staging"
    provider_a = LocalFileKeyProvider(key_dir=host_a)
    store_a = StateStore(provider=provider_a, audit=AuditLog(signer=provider_a.audit_signer()))
    saved = await save_sessions(pool, store_a, ["alice", "bob"])
    host_b.mkdir(mode=0o700)
    for name in ("root-v1.key", "audit-workers.key"):  # the one Secret both hosts mount
        (host_b / name).write_bytes((host_a / name).read_bytes())
        (host_b / name).chmod(0o600)
    provider_b = LocalFileKeyProvider(key_dir=host_b)
    store_b = StateStore(provider=provider_b, audit=AuditLog(signer=provider_b.audit_signer()))
    await assert_all_load(pool, store_b, saved)
    env = {
        **os.environ,
        "BROWSER_SESSIONS_DATABASE_URL": scratch_url,
        "BROWSER_SESSIONS_KEY_DIR": str(host_a),
        "BROWSER_SESSIONS_AUDIT_CHECKPOINT_FILE": str(tmp_path / "checkpoints.jsonl"),
        "BROWSER_SESSIONS_LOG_FORMAT": "json",
    }

    def cli(*args: str) -> tuple[int, dict[str, Any]]:
        done = subprocess.run(
            [sys.executable, "-m", "workers.cli", "keys", "rotate", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return done.returncode, json.loads(done.stdout)

    before_a, before_b = listing(host_a), listing(host_b)
    code, prepared = await asyncio.to_thread(cli, "--prepare", "--out", str(staging))
    assert code == 0, prepared
    assert prepared["prepared"] == "local:2" and prepared["active"] == "local:1"
    assert Path(prepared["material"]) == staging / "root-v2.key"
    assert "--activate 2" in prepared["next"]
    # Activation is refused where the new version has not been distributed yet.
    code, refused = await asyncio.to_thread(cli, "--activate", "2")
    assert (code, refused["error"]["code"]) == (1, "KEY_ERROR"), refused
    assert "distribute" in refused["error"]["message"]
    assert (listing(host_a), listing(host_b)) == (before_a, before_b)
    # The operator puts the new version into the Secret: every host gets the file.
    for host in (host_a, host_b):
        (host / "root-v2.key").write_bytes((staging / "root-v2.key").read_bytes())
        (host / "root-v2.key").chmod(0o600)
    distributed_a, distributed_b = listing(host_a), listing(host_b)
    code, activated = await asyncio.to_thread(cli, "--activate", "2")
    assert code == 0, activated
    assert (activated["root_key_id"], activated["rewrapped"]) == ("local:2", 2)
    assert activated["retirable"] == ["local:1"]
    assert (listing(host_a), listing(host_b)) == (distributed_a, distributed_b)
    # Host B, which never ran a command, reads every rewrapped key and wraps new ones.
    await assert_all_load(pool, store_b, saved)
    await save_sessions(pool, store_b, ["carol"], per_owner=1)
    assert await pool.fetchval("SELECT root_key_id FROM user_keys WHERE owner_id = 'carol'") == (
        "local:2"
    )


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
