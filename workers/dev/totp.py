"""RFC 6238 time-based one-time passwords (HMAC-SHA-1, 30 s steps), pure and tiny."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import struct
import time

from schema.errors import InvalidInput

STEP_SECONDS = 30
DIGITS = 6


def decode_secret(secret_b32: str) -> bytes:
    """The key bytes of a base32 secret; spaces, case and missing padding are tolerated."""
    cleaned = secret_b32.replace(" ", "").replace("-", "").upper().rstrip("=")
    if not cleaned:
        raise InvalidInput("TOTP secret is empty")
    try:
        return base64.b32decode(cleaned + "=" * (-len(cleaned) % 8))
    except binascii.Error as exc:
        raise InvalidInput("TOTP secret is not valid base32") from exc


def new_secret() -> str:
    """A random 160-bit secret in base32 without padding, as authenticator apps expect."""
    return base64.b32encode(secrets.token_bytes(20)).decode("ascii").rstrip("=")


def hotp(key: bytes, counter: int, *, digits: int = DIGITS) -> str:
    """RFC 4226 HOTP of ``counter`` with HMAC-SHA-1, zero-padded to ``digits``."""
    mac = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    value = struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(value % 10**digits).zfill(digits)


def totp(
    secret_b32: str, at: float | None = None, *, step: int = STEP_SECONDS, digits: int = DIGITS
) -> str:
    """The code for the time ``at`` (Unix seconds, default now)."""
    now = time.time() if at is None else at
    return hotp(decode_secret(secret_b32), int(now // step), digits=digits)


def verify(
    secret_b32: str,
    code: str,
    at: float | None = None,
    *,
    window: int = 1,
    step: int = STEP_SECONDS,
    digits: int = DIGITS,
) -> bool:
    """Whether ``code`` matches the step of ``at`` or one within ``window`` steps of it."""
    code = code.strip()
    if len(code) != digits or not code.isdigit():
        return False
    key = decode_secret(secret_b32)
    counter = int((time.time() if at is None else at) // step)
    matched = False
    for delta in range(-window, window + 1):
        # Compare every candidate so the time taken does not tell which step matched.
        matched |= hmac.compare_digest(hotp(key, counter + delta, digits=digits), code)
    return matched


if __name__ == "__main__":  # python -m workers.dev.totp SECRET: the current code
    import sys

    print(totp(sys.argv[1]))
