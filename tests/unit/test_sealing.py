"""Sealing to the workers' X25519 key: round trip, binding, tampering, key ids."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from schema.errors import DecryptFailed, InvalidInput
from schema.sealing import (
    open_sealed,
    public_bytes,
    seal,
    seal_aad,
    seal_text,
    sealed_key_id,
)

STATE = b'{"cookies":[{"name":"sid","value":"canary-5e1d"}],"origins":[]}'
AAD = seal_aad(owner_id="user-a", session_id="sess-1")


@pytest.fixture
def worker_key() -> X25519PrivateKey:
    return X25519PrivateKey.generate()


def test_round_trip_bytes_and_text(worker_key: X25519PrivateKey) -> None:
    blob = seal(public_bytes(worker_key), "local-seal:1", STATE, AAD)
    assert open_sealed(worker_key, blob, AAD) == STATE
    text = seal_text(public_bytes(worker_key), "local-seal:1", STATE, AAD)
    assert isinstance(text, str) and b"canary" not in base64.b64decode(text)
    assert open_sealed(worker_key, text, AAD) == STATE
    assert sealed_key_id(text) == sealed_key_id(blob) == "local-seal:1"


def test_each_seal_uses_a_fresh_ephemeral_key(worker_key: X25519PrivateKey) -> None:
    a = seal(public_bytes(worker_key), "k", STATE, AAD)
    b = seal(public_bytes(worker_key), "k", STATE, AAD)
    assert a != b
    assert a[6:38] != b[6:38]  # ephemeral public keys (after the 6-byte header for "k")


@pytest.mark.parametrize(("owner_id", "session_id"), [("user-b", "sess-1"), ("user-a", "sess-2")])
def test_blob_is_bound_to_owner_and_session(
    worker_key: X25519PrivateKey, owner_id: str, session_id: str
) -> None:
    blob = seal(public_bytes(worker_key), "k", STATE, AAD)
    with pytest.raises(DecryptFailed):
        open_sealed(worker_key, blob, seal_aad(owner_id=owner_id, session_id=session_id))


def test_other_private_key_cannot_open(worker_key: X25519PrivateKey) -> None:
    blob = seal(public_bytes(worker_key), "k", STATE, AAD)
    with pytest.raises(DecryptFailed):
        open_sealed(X25519PrivateKey.generate(), blob, AAD)


def test_every_byte_is_authenticated(worker_key: X25519PrivateKey) -> None:
    blob = seal(public_bytes(worker_key), "local-seal:1", b"x" * 40, AAD)
    for index in range(len(blob)):
        tampered = bytearray(blob)
        tampered[index] ^= 0x80
        with pytest.raises(DecryptFailed):
            open_sealed(worker_key, bytes(tampered), AAD)


@pytest.mark.parametrize("blob", [b"", b"BSS", b"XYZ\x01\x01k" + bytes(60), "not base64!"])
def test_malformed_blobs_fail_cleanly(worker_key: X25519PrivateKey, blob: bytes | str) -> None:
    with pytest.raises(DecryptFailed):
        open_sealed(worker_key, blob, AAD)


def test_truncated_blob_fails(worker_key: X25519PrivateKey) -> None:
    blob = seal(public_bytes(worker_key), "k", STATE, AAD)
    with pytest.raises(DecryptFailed):
        open_sealed(worker_key, blob[:-1], AAD)
    with pytest.raises(DecryptFailed):
        open_sealed(worker_key, blob[:30], AAD)


def test_bad_public_key_or_key_id_is_invalid_input() -> None:
    with pytest.raises(InvalidInput):
        seal(b"short", "k", STATE, AAD)
    with pytest.raises(InvalidInput):
        seal(bytes(32), "k", STATE, AAD)  # a low-order point gives an all-zero secret
    with pytest.raises(InvalidInput):
        seal(public_bytes(X25519PrivateKey.generate()), "", STATE, AAD)
