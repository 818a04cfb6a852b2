import dataclasses
from datetime import timedelta
from pathlib import Path

import pytest

from schema.errors import ConfigError
from schema.settings import Settings


def test_defaults_without_environment() -> None:
    settings = Settings.from_env({})
    assert settings.database_url.startswith("postgresql://")
    assert settings.capture_timeout == timedelta(minutes=15)
    assert settings.metrics_port == 9191
    assert settings.allow_private_hosts == frozenset()


def test_values_are_parsed() -> None:
    settings = Settings.from_env(
        {
            "BROWSER_SESSIONS_BROWSERS": "3",
            "BROWSER_SESSIONS_CAPTURE_TIMEOUT": "90",
            "BROWSER_SESSIONS_ALLOW_PRIVATE_HOSTS": "127.0.0.1:8080, LOCALHOST:9000",
            "BROWSER_SESSIONS_LOG_LEVEL": "debug",
            "BROWSER_SESSIONS_QUEUE_PREFIX": "t1.",
        }
    )
    assert settings.browsers == 3
    assert settings.capture_timeout == timedelta(seconds=90)
    assert settings.allow_private_hosts == {"127.0.0.1:8080", "localhost:9000"}
    assert settings.log_level == "DEBUG"
    assert settings.queue("browse") == "t1.browse"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DATABASE_URL", "not a url"),
        ("DATABASE_URL", "mysql://root@localhost/db"),
        ("DATABASE_URL", "postgresql://host:notaport/db"),
        ("AMQP_URL", "http://localhost"),
        ("BROWSERS", "two"),
        ("BROWSERS", "0"),
        ("CAPTURE_TIMEOUT", "-5"),
        ("ALLOW_PRIVATE_HOSTS", "127.0.0.1"),
        ("LOG_FORMAT", "xml"),
    ],
)
def test_malformed_value_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as err:
        Settings.from_env({f"BROWSER_SESSIONS_{name}": value})
    assert f"BROWSER_SESSIONS_{name}" in err.value.message
    assert err.value.code == "CONFIG_ERROR"


def test_to_env_round_trips_every_field() -> None:
    """A field that ``from_env`` does not read (or reads under another name) breaks this."""
    changed = Settings(
        database_url="postgresql://u@db.example:5433/x",
        amqp_url="amqps://u:p@mq.example:5671/v",
        queue_prefix="t.",
        key_provider="local",
        key_dir=Path("/var/lib/keys"),
        chromium_path="/usr/bin/chromium",
        browsers=3,
        contexts_per_browser=4,
        browser_max_contexts=5,
        browser_call_timeout=timedelta(seconds=6.5),
        navigation_timeout=timedelta(seconds=7),
        browse_retries=1,
        result_timeout=timedelta(seconds=8),
        max_state_bytes=4096,
        capture_timeout=timedelta(seconds=9),
        liveview_host="0.0.0.0",
        liveview_port=1,
        liveview_public_url="https://lv.example",
        metrics_port=2,
        health_port=3,
        allow_private_hosts=frozenset({"127.0.0.1:80", "localhost:81"}),
        log_format="json",
        log_level="DEBUG",
        admins=frozenset({"root", "ops"}),
        frame_ancestors="https://platform.example",
        api_host="0.0.0.0",
        api_port=4,
        api_token="t0ken",
        keep_versions=7,
        write_back=False,
        lease_ttl=timedelta(seconds=11),
        probe_interval=timedelta(seconds=12),
        probe_tick=timedelta(seconds=13),
        probe_scheduler=False,
        expiring_soon=timedelta(seconds=14),
        api_token_file="/run/secrets/token",
        audit_checkpoint_file=Path("/var/log/browser-sessions/audit-checkpoints.jsonl"),
        api_public_url="https://sessions.example",
        enqueue_retry=timedelta(seconds=2),
        infra_retry_budget=timedelta(seconds=61),
        max_message_bytes=2048,
        chromium_user="chrome-sandbox",
        liveview_peers="worker-capture-liveview",
    )
    defaults = Settings.from_env({})
    for f in dataclasses.fields(Settings):
        if f.name != "key_provider":  # one choice only today
            assert getattr(changed, f.name) != getattr(defaults, f.name), f.name
    assert Settings.from_env(changed.to_env()) == changed
    assert Settings.from_env(defaults.to_env()) == defaults


def test_the_live_view_may_be_framed_by_the_orchestrator_and_the_settings_page() -> None:
    from workers.runtime.resources import liveview_frame_ancestors

    settings = Settings(
        frame_ancestors="https://platform.example",
        api_public_url="https://sessions.example/base/",
    )
    assert liveview_frame_ancestors(settings) == "https://platform.example https://sessions.example"
    assert liveview_frame_ancestors(Settings()) == ""  # the live view then says 'self'
