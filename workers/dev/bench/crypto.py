"""Benchmark the envelope: encrypt and decrypt a realistic state of a given size.

``python -m workers.dev.bench.crypto [--repeats N] [--sizes 100KiB,5MiB]`` prints a table and
one JSON line. Encrypt = canonical JSON + zlib + AES-256-GCM + data-key wrap; decrypt =
unwrap + AES-256-GCM + inflate + JSON parse. Times are medians over the repeats.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from workers.crypto.envelope import canonical_state, decrypt_state, encrypt_state

_UNITS = {"KiB": 1024, "MiB": 1024 * 1024, "B": 1}


def parse_size(text: str) -> int:
    for unit, factor in _UNITS.items():
        if text.endswith(unit):
            return int(float(text[: -len(unit)]) * factor)
    return int(text)


def make_state(target_bytes: int, *, seed: int = 1) -> dict[str, Any]:
    """A storage state of about ``target_bytes`` serialised: cookies with random tokens,
    localStorage of JSON-ish app data, an IndexedDB store (half random, half repetitive)."""
    rng = random.Random(seed)

    def token(n: int) -> str:
        return base64.urlsafe_b64encode(rng.randbytes(n)).decode()

    cookies = [
        {
            "name": f"c{i}",
            "value": token(48),
            "domain": ".example.com",
            "path": "/",
            "expires": 1_900_000_000 + i,
            "httpOnly": i % 2 == 0,
            "secure": True,
            "sameSite": "Lax",
        }
        for i in range(30)
    ]
    state: dict[str, Any] = {"cookies": cookies, "origins": []}
    local: list[dict[str, str]] = []
    records: list[dict[str, Any]] = []
    origin = {
        "origin": "https://app.example.com",
        "localStorage": local,
        "indexedDB": [
            {
                "name": "cache",
                "version": 1,
                "stores": [
                    {
                        "name": "kv",
                        "autoIncrement": False,
                        "keyPath": None,
                        "indexes": [],
                        "records": records,
                    }
                ],
            }
        ],
    }
    state["origins"].append(origin)
    size = len(canonical_state(state, max_state_bytes=1 << 40))
    i = 0
    while size < target_bytes:
        entry: dict[str, Any]
        if i % 2:
            value = json.dumps({"id": i, "user": "u-123", "flags": ["a", "b"], "blob": token(96)})
            entry = {"name": f"app:{i}", "value": value}
            local.append(entry)
        else:
            html = "<div class='row'>cached text fragment</div>" * 4
            entry = {
                "key": f"item-{i}",
                "value": {"title": f"Item {i}", "html": html, "sig": token(32)},
            }
            records.append(entry)
        size += len(json.dumps(entry, separators=(",", ":"), ensure_ascii=False)) + 1
        i += 1
    return state


def median_ms(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def bench(target: int, repeats: int) -> dict[str, Any]:
    state = make_state(target)
    serialised = len(canonical_state(state, max_state_bytes=1 << 40))
    key = os.urandom(32)
    args: dict[str, Any] = {
        "owner_id": "bench-user",
        "session_id": "bench-session",
        "row_version": 1,
    }
    enc = encrypt_state(state, user_key=key, key_version=1, max_state_bytes=1 << 40, **args)
    assert decrypt_state(enc, user_key=key, **args) == state
    return {
        "target_bytes": target,
        "state_bytes": serialised,
        "ciphertext_bytes": len(enc.ciphertext),
        "repeats": repeats,
        "encrypt_ms": round(
            median_ms(
                lambda: encrypt_state(
                    state, user_key=key, key_version=1, max_state_bytes=1 << 40, **args
                ),
                repeats,
            ),
            3,
        ),
        "decrypt_ms": round(
            median_ms(lambda: decrypt_state(enc, user_key=key, **args), repeats), 3
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100KiB,5MiB", help="comma list, e.g. 100KiB,5MiB")
    parser.add_argument("--repeats", type=int, default=21)
    args = parser.parse_args(argv)
    results = [bench(parse_size(s.strip()), args.repeats) for s in args.sizes.split(",")]
    header = f"{'state':>12} {'ciphertext':>12} {'encrypt ms':>11} {'decrypt ms':>11} {'n':>4}"
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r['state_bytes']:>12,} {r['ciphertext_bytes']:>12,} {r['encrypt_ms']:>11.2f} "
            f"{r['decrypt_ms']:>11.2f} {r['repeats']:>4}"
        )
    print(json.dumps({"bench": "crypto", "results": results}, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
