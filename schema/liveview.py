"""Live-view tickets: a viewer token minted for a capture's owner, stored only as its SHA-256
next to an HMAC that binds it to the capture and its expiry.

The producer mints (after checking the owner) and the capture worker checks; both read the
same key file, ``liveview.key``. The orchestrator's database role may add rows but never read
them, and without the key a row it adds opens nothing: SQL access alone cannot produce a
working token.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from schema.keyfile import load_or_create_key, read_key_file
from schema.queries import CaptureInfo, Executor

LIVEVIEW_KEY_FILE = "liveview.key"
_DOMAIN = b"browser-sessions/liveview-ticket/v1\x00"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def load_liveview_key(key_dir: Path, *, create: bool = True) -> bytes:
    """The ticket HMAC key from ``key_dir/liveview.key``. Workers create it on first use
    (mode 0600); producers (``create=False``) must be given the workers' copy, or every
    ticket they mint would open nothing: a missing file is a `KeyError_`."""
    path = key_dir.expanduser() / LIVEVIEW_KEY_FILE
    return load_or_create_key(path) if create else read_key_file(path)


def token_hash(token: str) -> bytes:
    """What ``liveview_tickets`` keeps of a token: its SHA-256."""
    return hashlib.sha256(token.encode()).digest()


def ticket_mac(key: bytes, *, capture_id: str, digest: bytes, expires_at: datetime) -> bytes:
    micros = (expires_at - _EPOCH) // timedelta(microseconds=1)  # exact, whatever the zone
    message = b"\x00".join((_DOMAIN, capture_id.encode(), digest, str(micros).encode()))
    return hmac.new(key, message, hashlib.sha256).digest()


def viewable(capture: CaptureInfo) -> bool:
    """Whether the capture has a live view to mint a ticket for (open, not yet final)."""
    return not capture.state.is_final and bool(capture.liveview_url) and bool(capture.expires_at)


async def mint_ticket(db: Executor, key: bytes, capture: CaptureInfo) -> CaptureInfo:
    """``capture`` with a fresh viewer token while it is `viewable` (the caller has checked
    the owner); nothing but the token's hash and MAC is stored."""
    if not viewable(capture) or capture.expires_at is None:
        return capture
    token = secrets.token_urlsafe(32)
    digest = token_hash(token)
    await db.execute(
        """INSERT INTO liveview_tickets (token_hash, capture_id, expires_at, mac)
           VALUES ($1, $2, $3, $4)""",
        digest,
        capture.id,
        capture.expires_at,
        ticket_mac(key, capture_id=capture.id, digest=digest, expires_at=capture.expires_at),
    )
    return replace(capture, liveview_token=token)


async def ticket_valid(db: Executor, key: bytes, capture_id: str, token: str) -> bool:
    """Whether ``token`` opens ``capture_id``: a stored, unexpired ticket with a valid MAC."""
    digest = token_hash(token)
    row = await db.fetchrow(
        """SELECT expires_at, mac FROM liveview_tickets
           WHERE token_hash = $1 AND capture_id = $2 AND expires_at > now()""",
        digest,
        capture_id,
    )
    if row is None:
        return False
    expected = ticket_mac(key, capture_id=capture_id, digest=digest, expires_at=row["expires_at"])
    return hmac.compare_digest(expected, bytes(row["mac"]))


async def drop_tickets(db: Executor, capture_id: str) -> None:
    await db.execute("DELETE FROM liveview_tickets WHERE capture_id = $1", capture_id)
