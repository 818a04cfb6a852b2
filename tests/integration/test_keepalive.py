"""Sessions that stay alive, end to end through real workers, RabbitMQ, Postgres, Chromium:
write-back on sites that rotate cookies or localStorage tokens (with refresh-token reuse
detection on), leases, versions and rollback, revoke and shred, and what never writes back."""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

from producers.api import SessionsClient
from schema.errors import NotOwner, VersionNotFound
from schema.results import BrowseResult
from schema.settings import Settings
from tests.support.keepalive import browse_in_new_task, load_state, store_for
from tests.support.logins import PASSWORD, LoginState
from tests.support.sessions import import_on_site, wait_for_status
from workers.crypto.admin import shred_user
from workers.dev.fixture_site import FixtureSite
from workers.dev.processes import WorkerProcess

pytestmark = pytest.mark.integration

RESULT = timedelta(seconds=60)


@pytest.fixture(autouse=True)
def reset_site(site: FixtureSite) -> Iterator[None]:
    yield
    site.set_switches(
        rotate_cookie=False,
        rotate_local_storage=False,
        reuse_detection=False,
        idle_timeout_s=0.0,
        forget_on_login_page=False,
    )


@dataclasses.dataclass(frozen=True)
class Alive:
    """A user's session on the fixture site, with the browse worker running."""

    client: SessionsClient
    site: FixtureSite
    db: asyncpg.Connection
    user: str
    session_id: str

    async def browse(self, path: str) -> BrowseResult:
        return await browse_in_new_task(
            self.client, self.user, self.session_id, self.site.url(path), timeout=RESULT
        )

    async def browse_ok(self) -> None:
        result = await self.browse("/app")
        assert result.ok, f"{result.error_code}: {result.error_message}"
        assert f"logged in as {self.user}" in (result.text or "")

    async def concurrent_browses(self, n: int = 4) -> None:
        await asyncio.gather(*(self.browse_ok() for _ in range(n)))

    async def row(self) -> asyncpg.Record:
        return await self.db.fetchrow(
            "SELECT status, version, rotating FROM browser_sessions WHERE id = $1",
            self.session_id,
        )

    async def kept_versions(self) -> list[tuple[int, str]]:
        rows = await self.db.fetch(
            "SELECT version, source FROM session_versions WHERE session_id = $1 ORDER BY version",
            self.session_id,
        )
        return [(r["version"], r["source"]) for r in rows]


NewAlive = Callable[[], Awaitable[Alive]]


@pytest.fixture
def new_alive(
    browse_worker: WorkerProcess,
    client: SessionsClient,
    site: FixtureSite,
    login_state: LoginState,
    db: asyncpg.Connection,
) -> NewAlive:
    """``await new_alive()``: a new user's session, imported (and verified) while the site
    rotates nothing."""

    async def new() -> Alive:
        user = f"alive-{secrets.token_hex(3)}"
        site.add_user(user, PASSWORD)
        created = await import_on_site(client, site, user, await login_state(user))
        return Alive(client, site, db, user, str(created["session_id"]))

    return new


@pytest.fixture
async def alive(new_alive: NewAlive) -> Alive:
    return await new_alive()


# -- rotation: consecutive and concurrent browses ----------------------------------------


async def test_twenty_browses_on_a_rotating_cookie_stay_logged_in(alive: Alive) -> None:
    alive.site.set_switches(rotate_cookie=True, reuse_detection=True)
    for _ in range(20):
        await alive.browse_ok()
    row = await alive.row()
    assert (row["status"], row["rotating"]) == ("active", True)
    assert row["version"] == 21  # the import, then one write-back per browse
    assert alive.site.reuse_detected == 0
    kept = await alive.kept_versions()
    assert [v for v, _ in kept] == [17, 18, 19, 20, 21]  # the last five
    assert {s for _, s in kept} == {"write_back"}
    audit = await alive.db.fetch(
        "SELECT detail FROM audit_log WHERE session_id = $1 AND action = 'write_back' ORDER BY id",
        alive.session_id,
    )
    assert audit[0]["detail"] == "saved version 2 from version 1"
    assert len(audit) == 20


async def test_four_concurrent_browses_on_one_rotating_session_all_succeed(alive: Alive) -> None:
    alive.site.set_switches(rotate_cookie=True, reuse_detection=True)
    await alive.concurrent_browses()
    await alive.browse_ok()  # still logged in afterwards
    row = await alive.row()
    assert (row["status"], row["version"]) == ("active", 6)
    assert alive.site.reuse_detected == 0


async def test_local_storage_rotation_consecutive_and_concurrent(alive: Alive) -> None:
    alive.site.set_switches(rotate_local_storage=True, reuse_detection=True)
    for _ in range(5):
        await alive.browse_ok()
    await alive.concurrent_browses()
    await alive.browse_ok()
    row = await alive.row()
    assert (row["status"], row["version"], row["rotating"]) == ("active", 11, True)
    assert alive.site.reuse_detected == 0


async def test_a_site_that_changes_nothing_is_not_written_and_runs_in_parallel(
    alive: Alive,
) -> None:
    await alive.browse_ok()
    row = await alive.row()
    assert (row["version"], row["rotating"]) == (1, False)  # learned: no lease from now on
    await alive.concurrent_browses()
    assert (await alive.row())["version"] == 1


# -- what never writes back --------------------------------------------------------------


async def test_a_5xx_page_never_expires_nor_writes_back(alive: Alive) -> None:
    alive.site.set_switches(rotate_cookie=True)
    result = await alive.browse("/status/503")
    assert result.error_code == "NAVIGATION_FAILED"
    row = await alive.row()
    assert (row["status"], row["version"]) == ("active", 1)
    await alive.browse_ok()


async def test_a_logged_out_verdict_never_overwrites_the_good_version(
    alive: Alive, base_settings: Settings
) -> None:
    store = store_for(base_settings)
    good = await load_state(store, alive.db, alive.session_id, alive.user)
    alive.site.set_switches(forget_on_login_page=True)  # a write-back now would see a change
    alive.site.revoke(alive.user)
    result = await alive.browse("/app")
    assert result.error_code == "AUTH_SESSION_EXPIRED"
    await wait_for_status(alive.db, alive.session_id, "expired")
    assert (await alive.row())["version"] == 1
    assert await alive.kept_versions() == [(1, "import")]
    await alive.db.execute(
        "UPDATE browser_sessions SET status = 'active' WHERE id = $1", alive.session_id
    )
    assert await load_state(store, alive.db, alive.session_id, alive.user) == good


# -- versions, rollback, revoke, shred ---------------------------------------------------


async def test_rollback_restores_a_working_older_version(
    alive: Alive, worker_settings: Settings
) -> None:
    client, db, user, session_id = alive.client, alive.db, alive.user, alive.session_id
    # A newer version that does not work (say a capture saved on the wrong page).
    store = store_for(worker_settings)
    await store.save(
        db,
        session_id=session_id,
        owner_id=user,
        actor_id=user,
        state={"cookies": [], "origins": []},
    )
    result = await alive.browse("/app")
    assert result.error_code == "AUTH_SESSION_EXPIRED"
    await wait_for_status(db, session_id, "expired")

    listed = await client.versions(session_id, actor_id=user)
    assert listed["current_version"] == 2
    assert [(v["version"], v["source"], v["current"]) for v in listed["versions"]] == [
        (2, "capture", True),
        (1, "import", False),
    ]
    assert all(
        set(v) == {"version", "source", "source_id", "verdict", "created_at", "current"}
        for v in listed["versions"]
    )
    with pytest.raises(NotOwner):
        await client.rollback(session_id, to=1, actor_id="someone-else")
    with pytest.raises(VersionNotFound):
        await client.rollback(session_id, to=7, actor_id=user)
    admin_settings = dataclasses.replace(worker_settings, admins=frozenset({"ops"}))
    async with SessionsClient.open(admin_settings) as admin:
        assert (await admin.versions(session_id, actor_id="ops"))["current_version"] == 2
        rolled = await admin.rollback(session_id, to=1, actor_id="ops")
    assert rolled == {"session_id": session_id, "version": 3, "restored_from": 1}
    assert (await alive.row())["status"] == "active"
    await alive.browse_ok()
    audit = await db.fetch(
        "SELECT actor_id, detail FROM audit_log WHERE session_id = $1 AND action = 'rollback' "
        "AND result = 'ok' ORDER BY id",
        session_id,
    )
    assert [r["actor_id"] for r in audit] == ["ops", "ops"]
    assert audit[0]["detail"].startswith("version 1 requested by admin")
    assert audit[1]["detail"] == "saved version 3 from version 1"  # re-encrypted by a worker


async def test_revoke_and_shred_leave_no_decryptable_version(
    new_alive: NewAlive,
    client: SessionsClient,
    site: FixtureSite,
    db: asyncpg.Connection,
    worker_settings: Settings,
) -> None:
    alives = [await new_alive() for _ in range(3)]
    site.set_switches(rotate_cookie=True)
    for each in alives:
        await each.browse_ok()
        assert len(await each.kept_versions()) == 2

    users = [each.user for each in alives]
    sessions = [each.session_id for each in alives]
    revoked, shredded, deleted = sessions
    await client.revoke(revoked, actor_id=users[0])
    await shred_user(worker_settings, owner_id=users[1], actor_id="admin")
    await client.delete(deleted, actor_id=users[2])
    for each in alives:
        assert await each.kept_versions() == []
    for session_id in (revoked, shredded):
        row = await db.fetchrow(
            "SELECT status, enc_ciphertext, enc_wrapped_key FROM browser_sessions WHERE id = $1",
            session_id,
        )
        assert (row["status"], row["enc_ciphertext"], row["enc_wrapped_key"]) == (
            "revoked",
            None,
            None,
        )
    assert (
        await db.fetchval(
            "SELECT count(*) FROM session_versions WHERE session_id = ANY($1::text[])", sessions
        )
        == 0
    )


async def test_notifications_outbox_lists_and_marks_delivered(
    client: SessionsClient, db: asyncpg.Connection
) -> None:
    user = f"alive-{secrets.token_hex(3)}"
    await db.execute(
        """INSERT INTO session_notifications (user_id, kind, message, dedupe_key)
           VALUES ($1, 'expired', 'm1', $2), ($1, 'expiring_soon', 'm2', $3)""",
        user,
        f"k1-{user}",
        f"k2-{user}",
    )
    pending = await client.notifications(user)
    assert [n["kind"] for n in pending] == ["expired", "expiring_soon"]
    assert await client.mark_delivered(user, [pending[0]["id"]]) == [pending[0]["id"]]
    assert await client.mark_delivered("someone-else", [pending[1]["id"]]) == []
    assert [n["message"] for n in await client.notifications(user)] == ["m2"]
    assert len(await client.notifications(user, pending_only=False)) == 2


async def test_concurrent_write_backs_merge_per_item(
    database_url: str, db: asyncpg.Connection, base_settings: Settings
) -> None:
    """Two jobs restored version 1; the second to save merges onto the first's version."""
    from schema import queries
    from schema.db import create_pool
    from workers.jobs.keepalive import WriteBack, WriteBackResult

    owner = f"merge-{secrets.token_hex(3)}"
    session_id = await queries.insert_session(
        db,
        owner_id=owner,
        label="merge",
        start_url="https://app.example.com/home",
        site="app.example.com",
        logged_in_selector="#me",
        login_url_pattern=None,
        extra_origins=[],
    )
    store = store_for(base_settings)

    def cookie(name: str, value: str) -> dict[str, Any]:
        return {"name": name, "value": value, "domain": "app.example.com", "path": "/"}

    base = {"cookies": [cookie("sid", "s1"), cookie("a", "1"), cookie("b", "1")], "origins": []}
    await store.save(db, session_id=session_id, owner_id=owner, actor_id=owner, state=base)
    session = await queries.get_session(db, session_id)
    first = {"cookies": [cookie("sid", "s2"), cookie("a", "1"), cookie("b", "1")]}
    second = {"cookies": [cookie("sid", "s1"), cookie("b", "1"), cookie("c", "new")]}
    pool = await create_pool(database_url, min_size=1, max_size=2)
    try:
        write_back = WriteBack(db=pool, store=store)
        results = [
            await write_back.apply(
                session=session,
                base=base,
                base_version=1,
                final=final,
                source="write_back",
                caller={"actor_id": owner, "task_id": None, "request_id": f"job-{i}"},
            )
            for i, final in enumerate((first, second))
        ]
    finally:
        await pool.close()
    assert results == [WriteBackResult.SAVED, WriteBackResult.CONFLICT_MERGED]
    merged = await load_state(store, db, session_id, owner)
    values = {c["name"]: c["value"] for c in merged["cookies"]}
    # first rotated sid; second deleted a and added c; nobody touched b.
    assert values == {"sid": "s2", "b": "1", "c": "new"}
    assert await db.fetchval("SELECT version FROM browser_sessions WHERE id = $1", session_id) == 3
