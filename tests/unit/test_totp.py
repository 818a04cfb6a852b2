"""RFC 6238 TOTP: the RFC's SHA-1 vectors, the 6-digit truncation and the ±1 step window."""

from __future__ import annotations

import base64

import pytest

from schema.errors import InvalidInput
from workers.dev.totp import decode_secret, new_secret, totp, verify

# RFC 6238 appendix B: SHA-1 key is the ASCII string "12345678901234567890".
RFC_SECRET = base64.b32encode(b"12345678901234567890").decode("ascii")
RFC_VECTORS = [
    (59, "94287082"),
    (1111111109, "07081804"),
    (1111111111, "14050471"),
    (1234567890, "89005924"),
    (2000000000, "69279037"),
    (20000000000, "65353130"),
]


def test_rfc_secret_is_the_known_base32() -> None:
    assert RFC_SECRET == "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"


@pytest.mark.parametrize(("at", "expected"), RFC_VECTORS)
def test_rfc6238_sha1_vectors_eight_digits(at: int, expected: str) -> None:
    assert totp(RFC_SECRET, at, digits=8) == expected


@pytest.mark.parametrize(("at", "expected"), RFC_VECTORS)
def test_six_digits_are_the_last_six_of_the_rfc_code(at: int, expected: str) -> None:
    assert totp(RFC_SECRET, at) == expected[-6:]


def test_code_is_constant_within_a_step_and_changes_across() -> None:
    assert totp(RFC_SECRET, 60) == totp(RFC_SECRET, 89.9)
    assert totp(RFC_SECRET, 59) != totp(RFC_SECRET, 60)


def test_secret_formatting_is_tolerated() -> None:
    sloppy = "gezd gnbv gy3t qojq gezd gnbv gy3t qojq"
    assert totp(sloppy, 59) == "287082"
    assert decode_secret("GEZDGNBVGY3TQOJQ") == b"1234567890"  # no padding needed


@pytest.mark.parametrize("bad", ["", "   ", "not base32!", "GEZDGNB1"])
def test_invalid_secret_raises_invalid_input(bad: str) -> None:
    with pytest.raises(InvalidInput):
        totp(bad, 0)


def test_verify_accepts_current_and_adjacent_steps_only() -> None:
    at = 1111111111.0
    assert verify(RFC_SECRET, totp(RFC_SECRET, at), at)
    assert verify(RFC_SECRET, totp(RFC_SECRET, at - 30), at)
    assert verify(RFC_SECRET, totp(RFC_SECRET, at + 30), at)
    assert not verify(RFC_SECRET, totp(RFC_SECRET, at - 60), at)
    assert not verify(RFC_SECRET, totp(RFC_SECRET, at + 60), at)
    assert not verify(RFC_SECRET, totp(RFC_SECRET, at - 30), at, window=0)


@pytest.mark.parametrize("code", ["", "12345", "1234567", "abcdef", "05047x"])
def test_verify_rejects_malformed_codes(code: str) -> None:
    assert not verify(RFC_SECRET, code, 1111111111)


def test_verify_tolerates_surrounding_whitespace() -> None:
    assert verify(RFC_SECRET, " 050471\n", 1111111111)


def test_verify_without_time_uses_now() -> None:
    secret = new_secret()
    assert verify(secret, totp(secret))


def test_new_secret_is_random_160_bit_base32() -> None:
    first, second = new_secret(), new_secret()
    assert first != second
    assert len(decode_secret(first)) == 20
    assert "=" not in first
