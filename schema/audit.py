"""The append-only audit log: an HMAC-SHA256 chain over rows, and its verifier.

Each row's ``row_hash`` is ``HMAC(key, prev_hash || canonical fields)``; ``audit_head``
holds the last id and hash plus an HMAC over both, so an edited row, a removed row and a
truncated tail are all detected by :func:`verify`. Writers take a transaction-scoped
advisory lock, so the chain is linear.

The HMAC key lives in ``<key_dir>/audit.key`` (mode 0600). Producers and workers must
share the same file; it authenticates the log but decrypts nothing. Someone holding both
the key and database superuser can still rewrite history: the chain makes tampering by
anyone else evident, it is not a notary.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC
from pathlib import Path
from typing import Any

import asyncpg

from schema.db import connect, connection
from schema.enums import AuditAction, AuditResult
from schema.errors import AuditWriteFailed
from schema.events import NO_EVENTS, Events
from schema.keyfile import load_or_create_key
from schema.redact import scrub_text

AUDIT_KEY_FILE = "audit.key"
GENESIS_HASH = bytes(32)
MAX_DETAIL_CHARS = 500
_LOCK_KEY = 0x62735F6175646974  # "bs_audit"
_ROW_DOMAIN = b"browser-sessions/audit-row/v1\x00"
_HEAD_DOMAIN = b"browser-sessions/audit-head/v1\x00"


def load_audit_key(key_dir: Path) -> bytes:
    """The audit HMAC key from ``key_dir/audit.key``, created on first use (mode 0600)."""
    return load_or_create_key(key_dir.expanduser() / AUDIT_KEY_FILE)


def audit_key_id(key: bytes) -> str:
    """A public fingerprint naming ``key`` in each row (reveals nothing about the key)."""
    return "audit:" + hashlib.sha256(b"browser-sessions/audit-key-id\x00" + key).hexdigest()[:16]


def row_hash(key: bytes, prev_hash: bytes, row: dict[str, Any]) -> bytes:
    """The chain hash of one row (``row`` holds the audit_log columns)."""
    at = row["at"]
    fields = [
        1,
        row["id"],
        at.astimezone(UTC).isoformat(timespec="microseconds"),
        row["actor_id"],
        row["action"],
        row["session_id"],
        row["task_id"],
        row["request_id"],
        row["result"],
        row["detail"],
        row["key_id"],
    ]
    body = json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode()
    return hmac.new(key, _ROW_DOMAIN + prev_hash + body, hashlib.sha256).digest()


def head_mac(key: bytes, last_id: int, last_hash: bytes) -> bytes:
    """The HMAC that authenticates ``audit_head``."""
    msg = _HEAD_DOMAIN + str(last_id).encode() + b"\x00" + last_hash
    return hmac.new(key, msg, hashlib.sha256).digest()


class AuditLog:
    """Appends chained rows to ``audit_log``; one row per call."""

    def __init__(self, *, key: bytes, events: Events = NO_EVENTS) -> None:
        if len(key) < 32:
            raise ValueError("the audit key must be at least 32 bytes")
        self._key = key
        self._events = events
        self.key_id = audit_key_id(key)

    @classmethod
    def from_key_dir(cls, key_dir: Path, *, events: Events = NO_EVENTS) -> AuditLog:
        return cls(key=load_audit_key(key_dir), events=events)

    def __repr__(self) -> str:
        return f"AuditLog(key_id={self.key_id!r})"

    async def write(
        self,
        conn: Any,
        *,
        actor_id: str,
        action: AuditAction,
        result: AuditResult,
        session_id: str | None = None,
        task_id: str | None = None,
        request_id: str | None = None,
        detail: str | None = None,
    ) -> int:
        """Append one row and advance the head; returns the row id.

        ``conn`` is a connection or a pool. Runs in its own transaction (a savepoint inside a
        caller's transaction, in which case the row commits with the caller's). Raises
        ``AuditWriteFailed``.
        """
        async with connection(conn) as conn:
            action = AuditAction(action)
            result = AuditResult(result)
            if detail is not None:
                detail = scrub_text(detail)[:MAX_DETAIL_CHARS]
            try:
                async with conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
                    head = await conn.fetchrow("SELECT last_hash FROM audit_head WHERE singleton")
                    prev = GENESIS_HASH if head is None else bytes(head["last_hash"])
                    ids = await conn.fetchrow(
                        "SELECT nextval('audit_log_id_seq') AS id, clock_timestamp() AS at"
                    )
                    row = {
                        "id": ids["id"],
                        "at": ids["at"],
                        "actor_id": actor_id,
                        "action": action.value,
                        "session_id": session_id,
                        "task_id": task_id,
                        "request_id": request_id,
                        "result": result.value,
                        "detail": detail,
                        "key_id": self.key_id,
                    }
                    digest = row_hash(self._key, prev, row)
                    await conn.execute(
                        """INSERT INTO audit_log (id, at, actor_id, action, session_id, task_id,
                               request_id, result, detail, key_id, prev_hash, row_hash)
                           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)""",
                        *row.values(),
                        prev,
                        digest,
                    )
                    await conn.execute(
                        """INSERT INTO audit_head (singleton, last_id, last_hash, head_mac)
                           VALUES (true, $1, $2, $3)
                           ON CONFLICT (singleton) DO UPDATE
                           SET last_id = EXCLUDED.last_id, last_hash = EXCLUDED.last_hash,
                               head_mac = EXCLUDED.head_mac""",
                        row["id"],
                        digest,
                        head_mac(self._key, row["id"], digest),
                    )
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
                self._events.audit_write_failed()
                raise AuditWriteFailed(f"audit row not written: {type(exc).__name__}") from exc
            return int(row["id"])


@dataclass(frozen=True, kw_only=True)
class VerifyReport:
    """The outcome of walking the chain: ``ok``, or the first bad row and why."""

    ok: bool
    rows: int
    last_id: int | None = None
    first_bad_id: int | None = None
    problem: str | None = None  # edited | removed | truncated | head_mismatch | unknown_key
    message: str = "chain intact"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


async def verify(
    conn: Any, key: bytes, *, old_keys: Sequence[bytes] = (), batch: int = 1000
) -> VerifyReport:
    """Walk ``audit_log`` in id order inside one snapshot and check every link and the head.

    ``old_keys`` verify rows written before an audit key rotation.
    """
    async with connection(conn) as conn:
        return await _verify(conn, key, old_keys=old_keys, batch=batch)


async def _verify(conn: Any, key: bytes, *, old_keys: Sequence[bytes], batch: int) -> VerifyReport:
    keys = {audit_key_id(k): k for k in (key, *old_keys)}
    prev = GENESIS_HASH
    count = 0
    last_id: int | None = None

    def bad(row_id: int | None, problem: str, message: str) -> VerifyReport:
        return VerifyReport(
            ok=False,
            rows=count,
            last_id=last_id,
            first_bad_id=row_id,
            problem=problem,
            message=message,
        )

    async with conn.transaction(isolation="repeatable_read", readonly=True):
        head = await conn.fetchrow(
            "SELECT last_id, last_hash, head_mac FROM audit_head WHERE singleton"
        )
        async for record in conn.cursor(
            """SELECT id, at, actor_id, action, session_id, task_id, request_id, result,
                      detail, key_id, prev_hash, row_hash
               FROM audit_log ORDER BY id""",
            prefetch=batch,
        ):
            row = dict(record)
            row_id = int(row["id"])
            if bytes(row["prev_hash"]) != prev:
                what = "the first row" if last_id is None else f"row {last_id}"
                return bad(
                    row_id,
                    "removed",
                    f"row {row_id} does not follow {what}: a row before it was removed or altered",
                )
            row_key = keys.get(row["key_id"])
            if row_key is None:
                return bad(
                    row_id,
                    "unknown_key",
                    f"row {row_id} was written with an unknown audit key {row['key_id']}",
                )
            if not hmac.compare_digest(row_hash(row_key, prev, row), bytes(row["row_hash"])):
                return bad(row_id, "edited", f"row {row_id} does not match its hash: it was edited")
            prev = bytes(row["row_hash"])
            last_id = row_id
            count += 1

    if head is None:
        if last_id is None:
            return VerifyReport(ok=True, rows=0, message="empty log")
        return bad(None, "head_mismatch", "audit_head is missing but the log has rows")
    head_id = int(head["last_id"])
    head_hash = bytes(head["last_hash"])
    stored_mac = bytes(head["head_mac"]) if head["head_mac"] is not None else b""
    if not any(
        hmac.compare_digest(head_mac(k, head_id, head_hash), stored_mac) for k in keys.values()
    ):
        return bad(head_id, "head_mismatch", "audit_head does not match its MAC")
    if last_id is None or head_id > last_id:
        return bad(
            head_id,
            "truncated",
            f"the log ends at row {last_id} but the head names "
            f"row {head_id}: rows were removed from the end",
        )
    if head_id < last_id or head_hash != prev:
        return bad(
            head_id,
            "head_mismatch",
            f"the head names row {head_id} but the log ends at row {last_id}",
        )
    return VerifyReport(ok=True, rows=count, last_id=last_id)


async def verify_database(database_url: str, key_dir: Path) -> VerifyReport:
    """:func:`verify` on the database at ``database_url`` with the audit key in ``key_dir``
    (``browser-sessions audit verify`` and the demo)."""
    conn = await connect(database_url)
    try:
        return await verify(conn, load_audit_key(key_dir))
    finally:
        await conn.close()
