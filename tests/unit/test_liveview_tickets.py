"""Live-view ticket material: the MAC binds capture, token hash and expiry; producers never
create the key (a key of their own would mint tickets that open nothing)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from schema.errors import KeyError_
from schema.liveview import load_liveview_key, ticket_mac, token_hash


def test_the_mac_binds_capture_hash_and_expiry() -> None:
    key = bytes(32)
    at = datetime(2026, 11, 30, 22, 0, 0, 123456, tzinfo=UTC)
    digest = token_hash("t")
    mac = ticket_mac(key, capture_id="cap_1", digest=digest, expires_at=at)
    same_instant = at.astimezone(timezone(timedelta(hours=2)))
    assert ticket_mac(key, capture_id="cap_1", digest=digest, expires_at=same_instant) == mac
    for changed in (
        ticket_mac(key, capture_id="cap_2", digest=digest, expires_at=at),
        ticket_mac(key, capture_id="cap_1", digest=token_hash("u"), expires_at=at),
        ticket_mac(key, capture_id="cap_1", digest=digest, expires_at=at + timedelta(seconds=1)),
        ticket_mac(bytes(31) + b"\x01", capture_id="cap_1", digest=digest, expires_at=at),
    ):
        assert changed != mac


def test_producers_never_create_the_key(tmp_path: Path) -> None:
    key_dir = tmp_path / "keys"
    key_dir.mkdir(mode=0o700)
    with pytest.raises(KeyError_):
        load_liveview_key(key_dir, create=False)
    created = load_liveview_key(key_dir)  # a worker
    assert load_liveview_key(key_dir, create=False) == created
