"""Seal a state to the workers' X25519 public key (HPKE-style, base mode) and open it.

Producers hold only public keys (from ``seal_keys``); a worker opens the blob with its
private key and re-encrypts the state under the owner's key. Construction:

- a fresh ephemeral X25519 key pair per blob; ``shared = X25519(eph, recipient)``;
- ``HKDF-SHA256(shared, salt = eph_pub || recipient_pub, info = "browser-sessions/seal/v1"
  || key_id)`` gives a 256-bit AES key and a 96-bit nonce (one message per key, so the
  derived nonce is never reused);
- AES-256-GCM over the plaintext, with associated data = the blob header (version, key id,
  ephemeral public key) and the caller's ``aad`` (use :func:`seal_aad` to bind the owner
  and session), so a blob sealed for one session fails to open for another.

Blob layout: ``b"BSS" | version (1) | len(key_id) (1) | key_id | eph_pub (32) | ct+tag``.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from schema.errors import DecryptFailed, InvalidInput, KeyError_

MAGIC = b"BSS"
VERSION = 1
PUBLIC_KEY_BYTES = 32
_INFO = b"browser-sessions/seal/v1\x00"


def seal_aad(*, owner_id: str, session_id: str) -> bytes:
    """The associated data that binds a sealed import to its owner and session."""
    return json.dumps(["import", owner_id, session_id], separators=(",", ":")).encode()


def public_bytes(private_key: X25519PrivateKey) -> bytes:
    """The raw 32-byte public key of ``private_key``."""
    return private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _header(key_id: str, eph_pub: bytes) -> bytes:
    kid = key_id.encode()
    if not 0 < len(kid) < 256:
        raise InvalidInput("seal key id must be 1-255 bytes")
    return MAGIC + bytes([VERSION, len(kid)]) + kid + eph_pub


def _derive(
    shared: bytes, eph_pub: bytes, recipient_pub: bytes, key_id: str
) -> tuple[bytes, bytes]:
    okm = HKDF(
        algorithm=hashes.SHA256(),
        length=44,
        salt=eph_pub + recipient_pub,
        info=_INFO + key_id.encode(),
    ).derive(shared)
    return okm[:32], okm[32:]


def seal(public_key: bytes, key_id: str, plaintext: bytes, aad: bytes) -> bytes:
    """Encrypt ``plaintext`` so only the holder of ``key_id``'s private key can open it."""
    if len(public_key) != PUBLIC_KEY_BYTES:
        raise InvalidInput("seal public key must be 32 bytes")
    eph = X25519PrivateKey.generate()
    eph_pub = public_bytes(eph)
    try:
        shared = eph.exchange(X25519PublicKey.from_public_bytes(public_key))
    except ValueError:
        raise InvalidInput("seal public key is not a usable X25519 key") from None
    key, nonce = _derive(shared, eph_pub, public_key, key_id)
    header = _header(key_id, eph_pub)
    return header + AESGCM(key).encrypt(nonce, plaintext, header + b"\x00" + aad)


def seal_text(public_key: bytes, key_id: str, plaintext: bytes, aad: bytes) -> str:
    """:func:`seal`, as base64 text for a job payload."""
    return base64.b64encode(seal(public_key, key_id, plaintext, aad)).decode("ascii")


def _as_bytes(blob: bytes | str) -> bytes:
    if isinstance(blob, bytes):
        return blob
    try:
        return base64.b64decode(blob.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise DecryptFailed("sealed blob is not valid base64") from None


def _parse(blob: bytes) -> tuple[str, bytes, bytes, bytes]:
    """(key_id, header, eph_pub, ciphertext) of a blob, or ``DecryptFailed``."""
    if len(blob) < 5 or blob[:3] != MAGIC or blob[3] != VERSION:
        raise DecryptFailed("not a sealed blob of a known version")
    end = 5 + blob[4]
    eph_end = end + PUBLIC_KEY_BYTES
    if len(blob) < eph_end + 16:
        raise DecryptFailed("sealed blob is truncated")
    try:
        key_id = blob[5:end].decode()
    except UnicodeDecodeError:
        raise DecryptFailed("sealed blob has a malformed key id") from None
    return key_id, blob[:eph_end], blob[end:eph_end], blob[eph_end:]


def sealed_key_id(blob: bytes | str) -> str:
    """The id of the key a blob was sealed to (to pick the private key that opens it)."""
    return _parse(_as_bytes(blob))[0]


def open_sealed(private_key: X25519PrivateKey, blob: bytes | str, aad: bytes) -> bytes:
    """Decrypt a sealed blob; any mismatch (key, aad, tampering) raises ``DecryptFailed``."""
    key_id, header, eph_pub, ciphertext = _parse(_as_bytes(blob))
    try:
        shared = private_key.exchange(X25519PublicKey.from_public_bytes(eph_pub))
        key, nonce = _derive(shared, eph_pub, public_bytes(private_key), key_id)
        return AESGCM(key).decrypt(nonce, ciphertext, header + b"\x00" + aad)
    except (InvalidTag, ValueError):
        raise DecryptFailed("sealed blob failed to open") from None


# -- public keys in the database -------------------------------------------------------


@dataclass(frozen=True)
class SealKey:
    key_id: str
    public_key: bytes


class SealKeySource(Protocol):
    """What :func:`publish_seal_key` needs from a key provider (public half only)."""

    def seal_key_id(self) -> str: ...

    def seal_public_key(self) -> bytes: ...


async def publish_seal_key(conn: Any, provider: SealKeySource) -> SealKey:
    """Record the provider's current sealing public key in ``seal_keys`` (idempotent)."""
    key = SealKey(provider.seal_key_id(), provider.seal_public_key())
    await conn.execute(
        """INSERT INTO seal_keys (key_id, public_key) VALUES ($1, $2)
           ON CONFLICT (key_id) DO NOTHING""",
        key.key_id,
        key.public_key,
    )
    stored = await conn.fetchval("SELECT public_key FROM seal_keys WHERE key_id = $1", key.key_id)
    if bytes(stored) != key.public_key:
        raise KeyError_(
            f"seal key {key.key_id} is already published with a different public key: "
            "workers disagree on their sealing key files"
        )
    return key


async def current_seal_key(conn: Any) -> SealKey:
    """The newest non-retired sealing public key; ``KeyError_`` when no worker published one."""
    row = await conn.fetchrow(
        """SELECT key_id, public_key FROM seal_keys WHERE retired_at IS NULL
           ORDER BY created_at DESC, key_id DESC LIMIT 1"""
    )
    if row is None:
        raise KeyError_("no sealing key is published: start a worker first")
    return SealKey(row["key_id"], bytes(row["public_key"]))
