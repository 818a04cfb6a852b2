"""The append-only audit log: a signed hash chain over rows, checkpoints of its head kept
outside the database, and the verifier.

Writers never insert rows themselves. :meth:`AuditLog.write` signs the row's fields, the
chain id and the previous row's hash with its side's Ed25519 key (``producers`` or
``workers``) and calls the database's ``audit_append()`` (a ``SECURITY DEFINER`` function,
the only way the application roles can add a row). The function refuses a row that does
not build on the current head, picks the id and time and computes
``row_hash = SHA-256(domain || prev_hash || id || time || signature)``.

Each side holds only its own private key, so neither can write rows in the other's name;
nobody without a key can re-link the chain around a removed row. What a key-less database
superuser can still do is cut the tail and put back an older head: writers therefore
append a signed *checkpoint* of the head to a file outside the database
(``Settings.audit_checkpoint_file``) and :func:`verify` checks the log against them.

Rows written before signatures existed (HMAC-SHA256 under the shared ``audit.key``) still
verify when that file is present.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Self

import asyncpg
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from schema.db import connection
from schema.enums import AuditAction, AuditResult
from schema.errors import AuditWriteFailed, KeyError_
from schema.events import NO_EVENTS, Events
from schema.keyfile import load_or_create_key, read_key_file
from schema.logs import get_logger
from schema.redact import scrub_text
from schema.settings import Settings

log = get_logger(__name__)

SIDES = ("producers", "workers")
LEGACY_AUDIT_KEY_FILE = "audit.key"
GENESIS_HASH = bytes(32)
MAX_DETAIL_CHARS = 500
CHECKPOINT_EVENT = "audit_checkpoint"
_LOCK_KEY = 0x62735F6175646974  # "bs_audit"; audit_append() takes the same lock
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SIG_DOMAIN = b"browser-sessions/audit-sig/v2\x00"
_ROW_DOMAIN_V2 = b"browser-sessions/audit-row/v2\x00"
_CHECKPOINT_DOMAIN = b"browser-sessions/audit-checkpoint/v1\x00"
_LEGACY_ROW_DOMAIN = b"browser-sessions/audit-row/v1\x00"
_FIELDS = ("actor_id", "action", "session_id", "task_id", "request_id", "result", "detail")


def private_key_file(side: str) -> str:
    return f"audit-{side}.key"


def public_key_file(side: str) -> str:
    return f"audit-{side}.pub"


def _key_id(side: str, public: bytes) -> str:
    return f"ed25519:{side}:{hashlib.sha256(public).hexdigest()[:16]}"


class AuditSigner:
    """One writer side's Ed25519 signing key (``producers`` or ``workers``)."""

    def __init__(self, *, side: str, private_key: bytes) -> None:
        if side not in SIDES:
            raise ValueError(f"unknown audit writer side {side!r}")
        self.side = side
        self._key = Ed25519PrivateKey.from_private_bytes(private_key)
        self.public_key = self._key.public_key().public_bytes_raw()
        self.key_id = _key_id(side, self.public_key)

    def __repr__(self) -> str:
        return f"AuditSigner(key_id={self.key_id!r})"

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)


def load_signer(key_dir: Path, side: str) -> AuditSigner:
    """``side``'s signing key from ``key_dir/audit-<side>.key`` (created on first use, 0600),
    and its public half beside it (``audit-<side>.pub``) where the directory is writable."""
    key_dir = key_dir.expanduser()
    signer = AuditSigner(
        side=side, private_key=load_or_create_key(key_dir / private_key_file(side))
    )
    public = key_dir / public_key_file(side)
    if not public.exists():
        with contextlib.suppress(OSError):
            tmp = public.with_name(f".{public.name}.{os.getpid()}.tmp")
            tmp.write_bytes(signer.public_key)
            tmp.chmod(0o644)
            os.replace(tmp, public)
    return signer


@dataclass(frozen=True)
class AuditKeys:
    """What :func:`verify` trusts: writers' public keys by key id, plus legacy HMAC keys."""

    public: dict[str, Ed25519PublicKey] = field(default_factory=dict)
    legacy: dict[str, bytes] = field(default_factory=dict)

    @classmethod
    def of(cls, *signers: AuditSigner, legacy: Iterable[bytes] = ()) -> AuditKeys:
        return cls(
            public={s.key_id: Ed25519PublicKey.from_public_bytes(s.public_key) for s in signers},
            legacy={legacy_key_id(k): k for k in legacy},
        )

    @classmethod
    def from_key_dir(cls, key_dir: Path) -> AuditKeys:
        """Pinned keys from ``key_dir``: each side's ``.pub`` file, else the public half of its
        ``.key`` file; the legacy ``audit.key`` when present. Nothing is created."""
        key_dir = key_dir.expanduser()
        public: dict[str, Ed25519PublicKey] = {}
        for side in SIDES:
            raw = _read_public(key_dir / public_key_file(side))
            if raw is None and (key_dir / private_key_file(side)).exists():
                raw = AuditSigner(
                    side=side, private_key=read_key_file(key_dir / private_key_file(side))
                ).public_key
            if raw is not None:
                public[_key_id(side, raw)] = Ed25519PublicKey.from_public_bytes(raw)
        legacy = {}
        if (key_dir / LEGACY_AUDIT_KEY_FILE).exists():
            key = read_key_file(key_dir / LEGACY_AUDIT_KEY_FILE)
            legacy[legacy_key_id(key)] = key
        return cls(public=public, legacy=legacy)

    def side_of(self, key_id: str) -> str | None:
        return key_id.split(":")[1] if key_id in self.public else None


def _read_public(path: Path) -> bytes | None:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise KeyError_(f"public key file {path} cannot be read: {exc.strerror}") from None
    if len(raw) != 32:
        raise KeyError_(f"public key file {path} must hold exactly 32 bytes")
    return raw


def legacy_key_id(key: bytes) -> str:
    """The key id of rows written under the old shared HMAC key."""
    return "audit:" + hashlib.sha256(b"browser-sessions/audit-key-id\x00" + key).hexdigest()[:16]


def _micros(at: datetime) -> int:
    return (at - _EPOCH) // timedelta(microseconds=1)


def signed_message(chain_id: str, prev_hash: bytes, row: dict[str, Any]) -> bytes:
    """What a writer signs: the chain id, the previous row's hash and the row's fields."""
    body = [2, chain_id, prev_hash.hex(), *(row[f] for f in _FIELDS), row["key_id"]]
    return _SIG_DOMAIN + json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def chained_hash(prev_hash: bytes, row_id: int, at: datetime, signature: bytes) -> bytes:
    """The row hash ``audit_append()`` computes (and :func:`verify` recomputes)."""
    return hashlib.sha256(
        _ROW_DOMAIN_V2
        + prev_hash
        + row_id.to_bytes(8, "big", signed=True)
        + _micros(at).to_bytes(8, "big", signed=True)
        + signature
    ).digest()


def legacy_row_hash(key: bytes, prev_hash: bytes, row: dict[str, Any]) -> bytes:
    """The HMAC chain hash of a row written before signatures (format 1)."""
    fields = [
        1,
        row["id"],
        row["at"].astimezone(UTC).isoformat(timespec="microseconds"),
        *(row[f] for f in _FIELDS),
        row["key_id"],
    ]
    body = json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode()
    return hmac.new(key, _LEGACY_ROW_DOMAIN + prev_hash + body, hashlib.sha256).digest()


# -- checkpoints ---------------------------------------------------------------------------


def _checkpoint_message(chain_id: str, row_id: int, row_hash: bytes) -> bytes:
    body = json.dumps([chain_id, row_id, row_hash.hex()], separators=(",", ":"))
    return _CHECKPOINT_DOMAIN + body.encode()


def checkpoint_line(signer: AuditSigner, chain_id: str, row_id: int, row_hash: bytes) -> str:
    """One signed checkpoint of the chain head, as a JSON line."""
    checkpoint = {
        "chain": chain_id,
        "id": row_id,
        "row_hash": row_hash.hex(),
        "key_id": signer.key_id,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "sig": signer.sign(_checkpoint_message(chain_id, row_id, row_hash)).hex(),
    }
    return json.dumps({"event": CHECKPOINT_EVENT, "checkpoint": checkpoint}) + "\n"


class CheckpointFile:
    """Appends signed checkpoints to a file outside the database (one JSON line each).

    Appends are single ``O_APPEND`` writes, so processes on one host may share the file. A
    failed append is logged, never raised: the audit row is already committed.
    """

    def __init__(self, path: Path) -> None:
        self.path = path.expanduser()
        self._warned = False

    def append(self, line: str) -> None:
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.error("audit_checkpoint_failed", path=str(self.path), error=exc.strerror)


@dataclass(frozen=True)
class Checkpoint:
    chain: str
    id: int
    row_hash: bytes
    key_id: str
    sig: bytes


def read_checkpoints(paths: Sequence[Path]) -> list[Checkpoint]:
    """Every checkpoint line in ``paths`` (other lines, e.g. of a whole log file, skipped)."""
    found = []
    for path in paths:
        try:
            text = path.expanduser().read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            continue
        for line in text.splitlines():
            with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):
                data = json.loads(line)
                if data.get("event") != CHECKPOINT_EVENT:
                    continue
                c = data["checkpoint"]
                found.append(
                    Checkpoint(
                        chain=str(c["chain"]),
                        id=int(c["id"]),
                        row_hash=bytes.fromhex(c["row_hash"]),
                        key_id=str(c["key_id"]),
                        sig=bytes.fromhex(c["sig"]),
                    )
                )
    return found


# -- writing -------------------------------------------------------------------------------


class AuditLog:
    """Appends signed rows through ``audit_append()``; one row per call."""

    def __init__(
        self,
        *,
        signer: AuditSigner,
        checkpoints: CheckpointFile | None = None,
        events: Events = NO_EVENTS,
    ) -> None:
        self.signer = signer
        self.key_id = signer.key_id
        self.checkpoints = checkpoints
        self._events = events

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        side: str,
        signer: AuditSigner | None = None,
        events: Events = NO_EVENTS,
    ) -> Self:
        """``side``'s writer: its key from ``settings.key_dir`` (unless given), checkpoints
        to ``settings.audit_checkpoint_file``."""
        return cls(
            signer=signer or load_signer(settings.key_dir, side),
            checkpoints=CheckpointFile(settings.audit_checkpoint_file),
            events=events,
        )

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
        """Append one row; returns its id.

        ``conn`` is a connection or a pool. Runs in its own transaction (a savepoint inside a
        caller's transaction, in which case the row commits with the caller's). Raises
        ``AuditWriteFailed``.
        """
        async with connection(conn) as conn:
            row = {
                "actor_id": actor_id,
                "action": AuditAction(action).value,
                "session_id": session_id,
                "task_id": task_id,
                "request_id": request_id,
                "result": AuditResult(result).value,
                "detail": None if detail is None else scrub_text(detail)[:MAX_DETAIL_CHARS],
                "key_id": self.key_id,
            }
            nested = conn.is_in_transaction()
            try:
                async with conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
                    head = await conn.fetchrow(
                        "SELECT c.chain_id, h.last_id, h.last_hash FROM audit_chain c "
                        "LEFT JOIN audit_head h ON h.singleton WHERE c.singleton"
                    )
                    chain_id = head["chain_id"]
                    prev = GENESIS_HASH if head["last_id"] is None else bytes(head["last_hash"])
                    signature = self.signer.sign(signed_message(chain_id, prev, row))
                    added = await conn.fetchrow(
                        "SELECT out_id, out_row_hash FROM audit_append($1, $2, $3, $4, $5, $6, $7, "
                        "$8, $9, $10)",
                        prev,
                        *(row[f] for f in _FIELDS),
                        self.key_id,
                        signature,
                    )
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
                self._events.audit_write_failed()
                raise AuditWriteFailed(f"audit row not written: {type(exc).__name__}") from exc
            if self.checkpoints is not None:
                # A row inside a caller's transaction may still roll back: checkpoint the
                # committed head it builds on instead (the next write covers this row).
                if not nested:
                    self._checkpoint(chain_id, added["out_id"], bytes(added["out_row_hash"]))
                elif head["last_id"] is not None:
                    self._checkpoint(chain_id, head["last_id"], bytes(head["last_hash"]))
            return int(added["out_id"])

    def _checkpoint(self, chain_id: str, row_id: int, row_hash: bytes) -> None:
        assert self.checkpoints is not None
        self.checkpoints.append(checkpoint_line(self.signer, chain_id, row_id, row_hash))

    async def checkpoint(self, conn: Any) -> int | None:
        """Checkpoint the committed head now; returns its row id. For callers whose rows went
        in inside their own transaction, once it has committed (``conn``: a connection or a
        pool; nothing is done inside a transaction, whose rows may still roll back)."""
        if self.checkpoints is None:
            return None
        if not isinstance(conn, asyncpg.Pool) and conn.is_in_transaction():
            return None
        head = await conn.fetchrow(
            "SELECT c.chain_id, h.last_id, h.last_hash FROM audit_chain c "
            "JOIN audit_head h ON h.singleton WHERE c.singleton"
        )
        if head is None:
            return None
        self._checkpoint(head["chain_id"], head["last_id"], bytes(head["last_hash"]))
        return int(head["last_id"])


# -- verifying -----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class VerifyReport:
    """The outcome of walking the chain: ``ok``, or every break found (the first one also in
    ``first_bad_id`` / ``problem`` / ``message``)."""

    ok: bool
    rows: int
    last_id: int | None = None
    first_bad_id: int | None = None
    # edited | removed | truncated | head_mismatch | unknown_key | checkpoint_mismatch |
    # bad_checkpoint
    problem: str | None = None
    message: str = "chain intact"
    breaks: list[dict[str, Any]] = field(default_factory=list)
    chain_id: str | None = None
    checkpoints: int = 0
    last_checkpoint_id: int | None = None
    rows_by_side: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Walk:
    breaks: list[dict[str, Any]] = field(default_factory=list)

    def add(self, row_id: int | None, problem: str, message: str) -> None:
        self.breaks.append({"id": row_id, "problem": problem, "message": message})


async def verify(
    conn: Any, keys: AuditKeys, *, checkpoints: Sequence[Checkpoint] = (), batch: int = 1000
) -> VerifyReport:
    """Walk ``audit_log`` in id order inside one snapshot; check every link, signature and
    row hash, the head, and the signed ``checkpoints`` of this chain. Lists every break."""
    if isinstance(conn, asyncpg.Pool):
        async with conn.acquire() as pooled:
            return await verify(pooled, keys, checkpoints=checkpoints, batch=batch)
    walk = _Walk()
    prev = GENESIS_HASH
    count = 0
    last_id: int | None = None
    by_side: dict[str, int] = {}
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        chain_id = await conn.fetchval("SELECT chain_id FROM audit_chain WHERE singleton")
        ours = [c for c in checkpoints if c.chain == chain_id]
        wanted = {c.id for c in ours}
        seen: dict[int, bytes] = {}
        head = await conn.fetchrow("SELECT last_id, last_hash FROM audit_head WHERE singleton")
        async for record in conn.cursor(
            """SELECT id, at, actor_id, action, session_id, task_id, request_id, result,
                      detail, key_id, prev_hash, row_hash, signature
               FROM audit_log ORDER BY id""",
            prefetch=batch,
        ):
            row = dict(record)
            row_id = int(row["id"])
            stored_prev, stored_hash = bytes(row["prev_hash"]), bytes(row["row_hash"])
            if stored_prev != prev:
                what = "the first row" if last_id is None else f"row {last_id}"
                walk.add(
                    row_id,
                    "removed",
                    f"row {row_id} does not follow {what}: a row before it was removed or altered",
                )
            problem = _check_row(keys, chain_id, row, stored_prev, stored_hash)
            if problem is not None:
                walk.add(row_id, *problem)
            side = keys.side_of(row["key_id"]) or "legacy"
            by_side[side] = by_side.get(side, 0) + 1
            if row_id in wanted:
                seen[row_id] = stored_hash
            prev, last_id = stored_hash, row_id
            count += 1
    _check_head(walk, head, last_id, prev)
    _check_checkpoints(walk, keys, ours, seen, last_id)
    breaks = sorted(walk.breaks, key=lambda b: (b["id"] is None, b["id"] or 0))
    first = breaks[0] if breaks else None
    return VerifyReport(
        ok=not breaks,
        rows=count,
        last_id=last_id,
        first_bad_id=first["id"] if first else None,
        problem=first["problem"] if first else None,
        message=first["message"] if first else ("chain intact" if count else "empty log"),
        breaks=breaks,
        chain_id=chain_id,
        checkpoints=len(ours),
        last_checkpoint_id=max(wanted, default=None),
        rows_by_side=by_side,
    )


def _check_row(
    keys: AuditKeys, chain_id: str, row: dict[str, Any], prev: bytes, stored: bytes
) -> tuple[str, str] | None:
    row_id, key_id = row["id"], row["key_id"]
    if key_id in keys.legacy:
        if not hmac.compare_digest(legacy_row_hash(keys.legacy[key_id], prev, row), stored):
            return "edited", f"row {row_id} does not match its hash: it was edited"
        return None
    public = keys.public.get(key_id)
    if public is None:
        return "unknown_key", f"row {row_id} was written with an unknown audit key {key_id}"
    signature = bytes(row["signature"] or b"")
    try:
        public.verify(signature, signed_message(chain_id, prev, row))
    except InvalidSignature:
        return "edited", f"row {row_id} does not match its signature: it was edited or forged"
    if not hmac.compare_digest(chained_hash(prev, row_id, row["at"], signature), stored):
        return "edited", f"row {row_id} does not match its hash: its id or time was edited"
    return None


def _check_head(walk: _Walk, head: Any, last_id: int | None, last_hash: bytes) -> None:
    if head is None:
        if last_id is not None:
            walk.add(None, "head_mismatch", "audit_head is missing but the log has rows")
        return
    head_id, head_hash = int(head["last_id"]), bytes(head["last_hash"])
    if last_id is None or head_id > last_id:
        walk.add(
            head_id,
            "truncated",
            f"the log ends at row {last_id} but the head names row {head_id}: "
            "rows were removed from the end",
        )
    elif head_id < last_id or head_hash != last_hash:
        walk.add(
            head_id, "head_mismatch", f"the head names row {head_id} but the log ends at {last_id}"
        )


def _check_checkpoints(
    walk: _Walk,
    keys: AuditKeys,
    checkpoints: Sequence[Checkpoint],
    seen: dict[int, bytes],
    last_id: int | None,
) -> None:
    beyond: Checkpoint | None = None
    reported: set[int] = set()
    for c in checkpoints:
        public = keys.public.get(c.key_id)
        try:
            if public is None:
                raise InvalidSignature
            public.verify(c.sig, _checkpoint_message(c.chain, c.id, c.row_hash))
        except InvalidSignature:
            walk.add(c.id, "bad_checkpoint", f"a checkpoint of row {c.id} has no valid signature")
            continue
        if last_id is None or c.id > last_id:
            if beyond is None or c.id > beyond.id:
                beyond = c
        elif c.id in reported:
            continue
        elif c.id not in seen:
            reported.add(c.id)
            walk.add(c.id, "removed", f"row {c.id}, named by a signed checkpoint, is missing")
        elif seen[c.id] != c.row_hash:
            reported.add(c.id)
            walk.add(
                c.id,
                "checkpoint_mismatch",
                f"row {c.id} differs from its signed checkpoint: the chain was rewritten",
            )
    if beyond is not None:
        walk.add(
            beyond.id,
            "truncated",
            f"a signed checkpoint names row {beyond.id} but the log ends at row {last_id}: "
            "rows were removed from the end",
        )


async def verify_configured(
    settings: Settings, *, checkpoint_files: Sequence[Path] | None = None
) -> VerifyReport:
    """:func:`verify` with the pinned keys of ``settings.key_dir`` and the checkpoints of
    ``checkpoint_files`` (default: ``settings.audit_checkpoint_file``)."""
    from schema.db import connect

    files = [settings.audit_checkpoint_file] if checkpoint_files is None else checkpoint_files
    keys = AuditKeys.from_key_dir(settings.key_dir)
    conn = await connect(settings.database_url)
    try:
        return await verify(conn, keys, checkpoints=read_checkpoints(files))
    finally:
        await conn.close()
