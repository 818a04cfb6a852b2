"""The redaction processor: a canary secret never reaches a log line, tracebacks included."""

from __future__ import annotations

import io
import json
import logging

from schema.logs import configure_logging, get_logger
from schema.redact import REDACTED, scrub_text, secret_values, state_secret_values

CANARY = "CANARY-7f3a9c21"


def _logged(fn: object) -> str:
    stream = io.StringIO()
    configure_logging(fmt="json", stream=stream, force=True)
    fn()  # type: ignore[operator]
    return stream.getvalue()


def test_secret_keys_and_nested_cookies_are_removed() -> None:
    state = {
        "cookies": [{"name": "sid", "value": CANARY, "domain": "a.test"}],
        "origins": [{"origin": "https://a.test", "localStorage": [{"name": "t", "value": CANARY}]}],
    }
    out = _logged(
        lambda: get_logger("t").info(
            "saving",
            storage_state=state,
            headers={"Authorization": f"Bearer {CANARY}"},
            detail={"cookie": f"sid={CANARY}"},
            note=f"Cookie: sid={CANARY}",
        )
    )
    assert CANARY not in out
    event = json.loads(out)
    assert event["storage_state"] == REDACTED
    assert event["headers"]["Authorization"] == REDACTED


def test_traceback_with_a_state_in_its_message_is_scrubbed() -> None:
    state = {"cookies": [{"name": "sid", "value": CANARY}]}

    def fail() -> None:
        try:
            raise ValueError(f"could not restore {state}")
        except ValueError:
            get_logger("t").exception("restore_failed")

    out = _logged(fail)
    assert "Traceback" in out and "ValueError" in out
    assert CANARY not in out


def test_registered_values_are_scrubbed_from_stdlib_logs_too() -> None:
    state = {"cookies": [{"name": "x", "value": CANARY}], "origins": []}

    def log_it() -> None:
        with secret_values(state_secret_values(state)):
            logging.getLogger("dramatiq.worker").warning("odd message %s", CANARY)
            try:
                raise RuntimeError(f"plain {CANARY}")
            except RuntimeError:
                logging.getLogger("pika").error("boom", exc_info=True)

    out = _logged(log_it)
    assert out.count(REDACTED) >= 2
    assert CANARY not in out
    # Once the job is over the value is no longer special.
    assert scrub_text(f"x {CANARY}") == f"x {CANARY}"


def test_state_secret_values_cover_every_store() -> None:
    state = {
        "cookies": [{"name": "c", "value": "cookie-v"}],
        "origins": [
            {
                "origin": "https://a.test",
                "localStorage": [{"name": "l", "value": "local-v"}],
                "sessionStorage": [{"name": "s", "value": "session-v"}],
                "indexedDB": [
                    {
                        "name": "db",
                        "stores": [
                            {
                                "name": "st",
                                "records": [
                                    {"key": "k", "value": {"token": "idb-v", "list": ["idb-w"]}}
                                ],
                            }
                        ],
                    }
                ],
            }
        ],
    }
    assert sorted(state_secret_values(state)) == sorted(
        ["cookie-v", "local-v", "session-v", "idb-v", "idb-w"]
    )
