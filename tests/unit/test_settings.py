from datetime import timedelta

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
