"""The envelope format: round trip, freshness, and binding of every byte and field."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from schema.errors import DecryptFailed, InvalidInput
from workers.crypto.envelope import (
    FORMAT_V1,
    FORMAT_V2,
    NONCE_BYTES,
    Binding,
    EncryptedState,
    associated_data,
    canonical_state,
    decrypt_state,
    encrypt_bytes,
    encrypt_state,
)

CANARY = "canary-7f3a9c1e5b2d4f60"
LIMIT = 8 * 1024 * 1024


def realistic_state() -> dict[str, Any]:
    return {
        "cookies": [
            {
                "name": "sid",
                "value": CANARY,
                "domain": ".example.com",
                "path": "/",
                "expires": 1_900_000_000.5,
                "httpOnly": True,
                "secure": True,
                "sameSite": "Lax",
            },
            {
                "name": "prefs",
                "value": "théme=dark; ünïcode ✓",
                "domain": "app.example.com",
                "path": "/",
                "expires": -1,
                "httpOnly": False,
                "secure": False,
                "sameSite": "None",
            },
        ],
        "origins": [
            {
                "origin": "https://app.example.com",
                "localStorage": [{"name": "token", "value": "ls-" + CANARY}],
                "sessionStorage": [{"name": "nonce", "value": "ss-value"}],
                "indexedDB": [
                    {
                        "name": "keyval",
                        "version": 3,
                        "stores": [
                            {
                                "name": "kv",
                                "autoIncrement": False,
                                "keyPath": None,
                                "records": [
                                    {"key": "auth", "value": {"jwt": "eyJ.x.y", "n": [1, 2]}}
                                ],
                                "indexes": [],
                            }
                        ],
                    }
                ],
            }
        ],
    }


def enc(state: dict[str, Any] | None = None, **over: Any) -> tuple[EncryptedState, bytes]:
    key = over.pop("user_key", None) or os.urandom(32)
    args: dict[str, Any] = {
        "owner_id": "user-a",
        "session_id": "sess-1",
        "key_version": 1,
        "row_version": 1,
        "max_state_bytes": LIMIT,
        **over,
    }
    return encrypt_state(realistic_state() if state is None else state, user_key=key, **args), key


def dec(e: EncryptedState, key: bytes, **over: Any) -> dict[str, Any]:
    args = {"owner_id": "user-a", "session_id": "sess-1", "row_version": 1, **over}
    return decrypt_state(e, user_key=key, **args)


def flip(data: bytes, index: int) -> bytes:
    out = bytearray(data)
    out[index] ^= 0x01
    return bytes(out)


def test_round_trip_realistic_state() -> None:
    state = realistic_state()
    e, key = enc(state)
    assert e.format == FORMAT_V2 and e.key_version == 1
    assert dec(e, key) == state
    assert CANARY.encode() not in e.ciphertext
    assert CANARY not in repr(e)


def test_same_state_twice_gives_fresh_data_key_nonce_and_ciphertext() -> None:
    key = os.urandom(32)
    a, _ = enc(user_key=key)
    b, _ = enc(user_key=key)
    assert a.nonce != b.nonce
    assert a.wrapped_key != b.wrapped_key
    assert a.ciphertext != b.ciphertext
    bind = Binding(
        format=FORMAT_V2, owner_id="user-a", session_id="sess-1", key_version=1, row_version=1
    )
    data_keys = [
        AESGCM(key).decrypt(
            w.wrapped_key[:NONCE_BYTES],
            w.wrapped_key[NONCE_BYTES:],
            associated_data(bind, "data-key"),
        )
        for w in (a, b)
    ]
    assert len(data_keys[0]) == 32 and data_keys[0] != data_keys[1]
    assert dec(a, key) == dec(b, key)


@pytest.mark.parametrize("field", ["ciphertext", "nonce", "wrapped_key"])
@pytest.mark.parametrize("where", [0, -1, "middle"])
def test_one_flipped_byte_fails(field: str, where: int | str) -> None:
    e, key = enc()
    data = getattr(e, field)
    index = len(data) // 2 if where == "middle" else int(where)
    changes: dict[str, Any] = {field: flip(data, index)}
    tampered = dataclasses.replace(e, **changes)
    with pytest.raises(DecryptFailed) as info:
        dec(tampered, key)
    assert info.value.code == "DECRYPT_FAILED"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("owner_id", "user-b"),
        ("session_id", "sess-2"),
        ("row_version", 2),
        ("key_version", 2),
        ("format", 1),
        ("format", 3),
    ],
)
def test_every_bound_field_is_checked(field: str, value: Any) -> None:
    e, key = enc()
    with pytest.raises(DecryptFailed):
        if field in ("key_version", "format"):
            dec(dataclasses.replace(e, **{field: value}), key)
        else:
            dec(e, key, **{field: value})


def test_an_older_version_of_the_same_session_does_not_decrypt_as_a_newer_one() -> None:
    key = os.urandom(32)
    older, _ = enc(user_key=key, row_version=3)
    newer, _ = enc(user_key=key, row_version=4)
    assert dec(newer, key, row_version=4) == dec(older, key, row_version=3)
    with pytest.raises(DecryptFailed):
        dec(older, key, row_version=4)  # the rollback: an old ciphertext put back


def test_format_1_envelopes_still_decrypt_whatever_the_row_version() -> None:
    key = os.urandom(32)
    legacy = encrypt_bytes(
        canonical_state(realistic_state(), max_state_bytes=LIMIT),
        user_key=key,
        owner_id="user-a",
        session_id="sess-1",
        key_version=1,
        row_version=1,
        format=FORMAT_V1,
    )
    assert legacy.format == FORMAT_V1
    assert dec(legacy, key, row_version=7) == realistic_state()


def test_wrapped_key_and_payload_cannot_be_mixed_between_envelopes() -> None:
    key = os.urandom(32)
    a, _ = enc(user_key=key)
    b, _ = enc(user_key=key)
    with pytest.raises(DecryptFailed):
        dec(dataclasses.replace(a, wrapped_key=b.wrapped_key), key)
    with pytest.raises(DecryptFailed):
        dec(dataclasses.replace(a, nonce=b.nonce, ciphertext=b.ciphertext), key)


def test_other_users_key_and_truncated_fields_fail() -> None:
    e, _ = enc()
    with pytest.raises(DecryptFailed):
        dec(e, os.urandom(32))
    e2, key = enc()
    for field in ("ciphertext", "nonce", "wrapped_key"):
        with pytest.raises(DecryptFailed):
            dec(dataclasses.replace(e2, **{field: getattr(e2, field)[:-1]}), key)


def test_canonical_serialisation_ignores_key_order() -> None:
    a = canonical_state({"b": 1, "a": {"y": 2, "x": [3]}}, max_state_bytes=LIMIT)
    b = canonical_state({"a": {"x": [3], "y": 2}, "b": 1}, max_state_bytes=LIMIT)
    assert a == b == b'{"a":{"x":[3],"y":2},"b":1}'


def test_size_limit_applies_to_serialised_state() -> None:
    state = {"cookies": [{"name": "big", "value": "x" * 2000}]}
    size = len(canonical_state(state, max_state_bytes=LIMIT))
    assert canonical_state(state, max_state_bytes=size)
    with pytest.raises(InvalidInput, match="over the limit"):
        enc(state, max_state_bytes=size - 1)


@pytest.mark.parametrize(
    "bad",
    [[1, 2], {"cookies": {"a": 1}}, {"x": float("nan")}, {"x": {1, 2}}, {"x": "\ud800"}],
)
def test_non_json_states_are_invalid_input(bad: Any) -> None:
    with pytest.raises(InvalidInput):
        enc(bad)


def test_compression_shrinks_repetitive_states() -> None:
    state = {
        "origins": [
            {
                "origin": "https://a.example",
                "localStorage": [
                    {"name": f"k{i}", "value": "same-value-" * 10} for i in range(500)
                ],
            }
        ]
    }
    e, key = enc(state)
    assert len(e.ciphertext) < len(json.dumps(state)) / 5
    assert dec(e, key) == state


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=20)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.text(max_size=10), json_values, max_size=5))
def test_any_json_object_round_trips(state: dict[str, Any]) -> None:
    state.pop("cookies", None)
    state.pop("origins", None)
    e, key = enc(state)
    assert dec(e, key) == state
