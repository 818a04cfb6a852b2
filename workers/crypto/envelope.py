"""The envelope format of a saved session state. Pure: no I/O, no key storage.

Format 2 (written since the row version is bound; format 1 rows still decrypt and are
re-encrypted as format 2 on their next save):

- the state (a Playwright storage-state dict) is serialised canonically (sorted keys,
  compact JSON, UTF-8), limited to ``max_state_bytes``, then zlib-compressed;
- a fresh random 256-bit data key and 96-bit nonce encrypt it with AES-256-GCM;
- the data key is wrapped with AES-256-GCM under the owner's user key
  (``wrapped_key = nonce || ciphertext || tag``);
- both ciphertexts carry associated data binding (purpose, format, owner id, session id,
  user key version, row version), so a payload or wrapped key copied into another row,
  another user or another key version fails with ``DecryptFailed``, and so does an older
  ciphertext of the same session copied back over a newer one (a rollback: the row's
  ``version`` only grows, a trigger refuses lowering it). Format 1 lacked the row version.

The format number and the user key version are stored beside the payload
(``enc_format``, ``enc_key_version``); the root key never touches the payload, so root
rotation only rewraps user keys.
"""

from __future__ import annotations

import json
import os
import zlib
from dataclasses import dataclass, field
from typing import Any, TypedDict, Unpack

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from schema.errors import DecryptFailed, InvalidInput, KeyError_

FORMAT_V1 = 1
FORMAT_V2 = 2
FORMATS = (FORMAT_V1, FORMAT_V2)
KEY_BYTES = 32
NONCE_BYTES = 12
ZLIB_LEVEL = 1
# Decompression bound independent of settings: authenticated payloads only, so this only
# guards against a future format bug, not an attacker.
MAX_DECOMPRESSED_BYTES = 256 * 1024 * 1024
_DOMAIN = "browser-sessions/state"


@dataclass(frozen=True, kw_only=True)
class EncryptedState:
    """The ``enc_*`` columns of one ``browser_sessions`` row."""

    format: int
    key_version: int
    wrapped_key: bytes = field(repr=False)
    nonce: bytes = field(repr=False)
    ciphertext: bytes = field(repr=False)


def canonical_state(state: dict[str, Any], *, max_state_bytes: int) -> bytes:
    """Sorted-key compact UTF-8 JSON of ``state``; ``InvalidInput`` if not JSON or too big."""
    if not isinstance(state, dict):
        raise InvalidInput("a session state must be a JSON object")
    for key in ("cookies", "origins"):
        if key in state and not isinstance(state[key], list):
            raise InvalidInput(f"a session state's {key!r} must be a list")
    try:
        data = json.dumps(
            state, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode("utf-8")
    except (TypeError, ValueError, UnicodeEncodeError, RecursionError):
        raise InvalidInput("a session state must be plain JSON (no NaN, no surrogates)") from None
    if len(data) > max_state_bytes:
        raise InvalidInput(
            f"session state is {len(data)} bytes, over the limit of {max_state_bytes} bytes"
        )
    return data


class Row(TypedDict):
    """The row an envelope is for (what decrypting it needs besides the key)."""

    owner_id: str
    session_id: str
    row_version: int  # the version the row has with this envelope (bound from format 2)


class Sealing(Row):
    """What encrypting an envelope needs besides the key: the row and the user key version."""

    key_version: int


class Binding(Sealing):
    """What every ciphertext of one envelope is bound to (its associated data)."""

    format: int


def associated_data(bind: Binding, purpose: str) -> bytes:
    """The associated data of the envelope's ``purpose`` ciphertext (payload or data key)."""
    fields: list[Any] = [
        _DOMAIN,
        purpose,
        bind["format"],
        bind["owner_id"],
        bind["session_id"],
        bind["key_version"],
    ]
    if bind["format"] >= FORMAT_V2:
        fields.append(bind["row_version"])
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def encrypt_state(
    state: dict[str, Any], *, user_key: bytes, max_state_bytes: int, **sealing: Unpack[Sealing]
) -> EncryptedState:
    """Encrypt ``state`` under a fresh data key wrapped by ``user_key``, for the row's
    ``row_version`` (the version the row has once this ciphertext is stored)."""
    return encrypt_bytes(
        canonical_state(state, max_state_bytes=max_state_bytes), user_key=user_key, **sealing
    )


def encrypt_bytes(
    plaintext: bytes, *, user_key: bytes, format: int = FORMAT_V2, **sealing: Unpack[Sealing]
) -> EncryptedState:
    """Encrypt already-canonical state bytes (see :func:`canonical_state`).

    ``format`` is the current format; an older one only for tests of rows written before.
    """
    _check_key(user_key)
    if format not in FORMATS:
        raise KeyError_(f"unknown session state format {format}")
    bind = Binding(format=format, **sealing)
    data_key = AESGCM.generate_key(bit_length=256)
    nonce = os.urandom(NONCE_BYTES)
    ciphertext = AESGCM(data_key).encrypt(
        nonce, zlib.compress(plaintext, ZLIB_LEVEL), associated_data(bind, "payload")
    )
    wrap_nonce = os.urandom(NONCE_BYTES)
    wrapped = wrap_nonce + AESGCM(user_key).encrypt(
        wrap_nonce, data_key, associated_data(bind, "data-key")
    )
    return EncryptedState(
        format=format,
        key_version=sealing["key_version"],
        wrapped_key=wrapped,
        nonce=nonce,
        ciphertext=ciphertext,
    )


def decrypt_state(enc: EncryptedState, *, user_key: bytes, **row: Unpack[Row]) -> dict[str, Any]:
    """Decrypt a row's envelope; any mismatch or tampering raises ``DecryptFailed``."""
    data = decrypt_bytes(enc, user_key=user_key, **row)
    try:
        state = json.loads(data)
    except ValueError:
        raise DecryptFailed("session state is not valid JSON") from None
    if not isinstance(state, dict):
        raise DecryptFailed("session state is not a JSON object")
    return state


def decrypt_bytes(enc: EncryptedState, *, user_key: bytes, **row: Unpack[Row]) -> bytes:
    """The canonical state bytes of a row's envelope (``row_version``: the row's version)."""
    if enc.format not in FORMATS:
        raise DecryptFailed(f"unknown session state format {enc.format}")
    _check_key(user_key)
    bind = Binding(format=enc.format, key_version=enc.key_version, **row)
    wrapped = enc.wrapped_key
    if len(wrapped) != NONCE_BYTES + KEY_BYTES + 16 or len(enc.nonce) != NONCE_BYTES:
        raise DecryptFailed("session state failed authentication")
    try:
        data_key = AESGCM(user_key).decrypt(
            wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], associated_data(bind, "data-key")
        )
        compressed = AESGCM(data_key).decrypt(
            enc.nonce, enc.ciphertext, associated_data(bind, "payload")
        )
    except (InvalidTag, ValueError):
        raise DecryptFailed("session state failed authentication") from None
    return _decompress(compressed)


def _decompress(data: bytes) -> bytes:
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, MAX_DECOMPRESSED_BYTES)
    except zlib.error:
        raise DecryptFailed("session state is not valid zlib data") from None
    if inflater.unconsumed_tail or not inflater.eof:
        raise DecryptFailed("session state is truncated or too large")
    return out


def _check_key(key: bytes) -> None:
    if len(key) != KEY_BYTES:
        raise KeyError_("a user key must be 32 bytes")
