"""One settings object, read once at start from ``BROWSER_SESSIONS_*`` variables.

A malformed value fails at start with a message naming the variable.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from schema.errors import ConfigError

PREFIX = "BROWSER_SESSIONS_"

_N = TypeVar("_N", int, float)


@dataclass(frozen=True, kw_only=True)
class Settings:
    database_url: str = "postgresql://postgres@127.0.0.1:5432/browser_sessions"
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/%2F"
    queue_prefix: str = ""
    key_provider: str = "local"
    key_dir: Path = Path("~/.local/share/browser-sessions/keys")
    chromium_path: str = ""
    browsers: int = 2
    contexts_per_browser: int = 2
    browser_max_contexts: int = 200
    browser_call_timeout: timedelta = timedelta(seconds=30)
    navigation_timeout: timedelta = timedelta(seconds=30)
    browse_retries: int = 2
    result_timeout: timedelta = timedelta(seconds=60)
    max_state_bytes: int = 8 * 1024 * 1024
    capture_timeout: timedelta = timedelta(minutes=15)
    liveview_host: str = "127.0.0.1"
    liveview_port: int = 9193
    liveview_public_url: str = ""
    metrics_port: int = 9191
    health_port: int = 9192
    allow_private_hosts: frozenset[str] = field(default_factory=frozenset)
    log_format: str = "auto"
    log_level: str = "INFO"
    admins: frozenset[str] = field(default_factory=frozenset)
    frame_ancestors: str = ""
    api_host: str = "127.0.0.1"
    api_port: int = 9194
    api_token: str = field(default="", repr=False)
    api_token_file: str = ""
    audit_checkpoint_file: Path = Path("~/.local/share/browser-sessions/audit-checkpoints.jsonl")
    api_public_url: str = ""
    enqueue_retry: timedelta = timedelta(seconds=30)
    infra_retry_budget: timedelta = timedelta(seconds=120)
    max_message_bytes: int = 64 * 1024
    chromium_user: str = "bs-chromium"
    liveview_peers: str = ""
    keep_versions: int = 5
    write_back: bool = True
    lease_ttl: timedelta = timedelta(seconds=90)
    probe_interval: timedelta = timedelta(hours=6)
    probe_tick: timedelta = timedelta(seconds=30)
    probe_scheduler: bool = True
    expiring_soon: timedelta = timedelta(hours=24)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build and validate from the environment; raises ``ConfigError`` naming the variable."""
        env = os.environ if environ is None else environ
        r = _Reader(env)
        return cls(
            database_url=r.url("DATABASE_URL", cls.database_url, ("postgres", "postgresql")),
            amqp_url=r.url("AMQP_URL", cls.amqp_url, ("amqp", "amqps")),
            queue_prefix=r.text("QUEUE_PREFIX", cls.queue_prefix),
            key_provider=r.choice("KEY_PROVIDER", cls.key_provider, ("local",)),
            key_dir=Path(r.text("KEY_DIR", str(cls.key_dir))).expanduser(),
            chromium_path=r.text("CHROMIUM_PATH", cls.chromium_path),
            browsers=r.integer("BROWSERS", cls.browsers, minimum=1),
            contexts_per_browser=r.integer("CONTEXTS_PER_BROWSER", cls.contexts_per_browser, 1),
            browser_max_contexts=r.integer("BROWSER_MAX_CONTEXTS", cls.browser_max_contexts, 1),
            browser_call_timeout=r.seconds("BROWSER_CALL_TIMEOUT", cls.browser_call_timeout),
            navigation_timeout=r.seconds("NAVIGATION_TIMEOUT", cls.navigation_timeout),
            browse_retries=r.integer("BROWSE_RETRIES", cls.browse_retries, minimum=0),
            result_timeout=r.seconds("RESULT_TIMEOUT", cls.result_timeout),
            max_state_bytes=r.integer("MAX_STATE_BYTES", cls.max_state_bytes, minimum=1024),
            capture_timeout=r.seconds("CAPTURE_TIMEOUT", cls.capture_timeout),
            liveview_host=r.text("LIVEVIEW_HOST", cls.liveview_host),
            liveview_port=r.integer("LIVEVIEW_PORT", cls.liveview_port, minimum=0),
            liveview_public_url=r.text("LIVEVIEW_PUBLIC_URL", cls.liveview_public_url),
            metrics_port=r.integer("METRICS_PORT", cls.metrics_port, minimum=0),
            health_port=r.integer("HEALTH_PORT", cls.health_port, minimum=0),
            allow_private_hosts=r.host_ports("ALLOW_PRIVATE_HOSTS"),
            log_format=r.choice("LOG_FORMAT", cls.log_format, ("auto", "json", "console")),
            log_level=r.choice(
                "LOG_LEVEL", cls.log_level, ("DEBUG", "INFO", "WARNING", "ERROR"), upper=True
            ),
            admins=r.names("ADMINS"),
            frame_ancestors=r.text("FRAME_ANCESTORS", cls.frame_ancestors),
            api_host=r.text("API_HOST", cls.api_host),
            api_port=r.integer("API_PORT", cls.api_port, minimum=0),
            api_token=r.text("API_TOKEN", cls.api_token),
            api_token_file=r.text("API_TOKEN_FILE", cls.api_token_file),
            audit_checkpoint_file=Path(
                r.text("AUDIT_CHECKPOINT_FILE", str(cls.audit_checkpoint_file))
            ).expanduser(),
            api_public_url=r.text("API_PUBLIC_URL", cls.api_public_url),
            enqueue_retry=r.seconds("ENQUEUE_RETRY", cls.enqueue_retry),
            infra_retry_budget=r.seconds("INFRA_RETRY_BUDGET", cls.infra_retry_budget),
            max_message_bytes=r.integer("MAX_MESSAGE_BYTES", cls.max_message_bytes, 1024),
            chromium_user=r.text("CHROMIUM_USER", cls.chromium_user),
            liveview_peers=r.text("LIVEVIEW_PEERS", cls.liveview_peers),
            keep_versions=r.integer("KEEP_VERSIONS", cls.keep_versions, minimum=1),
            write_back=r.boolean("WRITE_BACK", cls.write_back),
            lease_ttl=r.seconds("LEASE_TTL", cls.lease_ttl),
            probe_interval=r.seconds("PROBE_INTERVAL", cls.probe_interval),
            probe_tick=r.seconds("PROBE_TICK", cls.probe_tick),
            probe_scheduler=r.boolean("PROBE_SCHEDULER", cls.probe_scheduler),
            expiring_soon=r.seconds("EXPIRING_SOON", cls.expiring_soon),
        )

    def to_env(self) -> dict[str, str]:
        """The ``BROWSER_SESSIONS_*`` environment that reproduces these settings in a
        subprocess: ``Settings.from_env(s.to_env()) == s``. Every field's variable is its
        name in upper case."""
        env = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, timedelta):
                text = repr(value.total_seconds())
            elif isinstance(value, frozenset):
                text = ",".join(sorted(value))
            else:
                text = str(value)
            env[PREFIX + f.name.upper()] = text
        return env

    def queue(self, name: str) -> str:
        """The RabbitMQ queue name for a logical queue (``browse``, ``capture``, ``expiry``)."""
        return f"{self.queue_prefix}{name}"


class _Reader:
    """Parses one variable at a time and names it in every error."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def raw(self, name: str) -> str | None:
        value = self.env.get(PREFIX + name)
        return None if value is None or value.strip() == "" else value.strip()

    def fail(self, name: str, why: str) -> ConfigError:
        return ConfigError(f"{PREFIX}{name}: {why}", variable=PREFIX + name)

    def text(self, name: str, default: str) -> str:
        value = self.raw(name)
        return default if value is None else value

    def choice(self, name: str, default: str, allowed: tuple[str, ...], upper: bool = False) -> str:
        value = self.text(name, default)
        value = value.upper() if upper else value.lower()
        if value not in allowed:
            raise self.fail(name, f"must be one of {', '.join(allowed)}, got {value!r}")
        return value

    def _number(self, name: str, convert: Callable[[str], _N], what: str) -> _N | None:
        """The variable converted (``None`` when unset); ``what`` names the expected form."""
        value = self.raw(name)
        if value is None:
            return None
        try:
            return convert(value)
        except ValueError:
            raise self.fail(name, f"must be {what}, got {value!r}") from None

    def integer(self, name: str, default: int, minimum: int = 0) -> int:
        number = self._number(name, int, "a whole number")
        if number is None:
            return default
        if number < minimum:
            raise self.fail(name, f"must be at least {minimum}, got {number}")
        return number

    def seconds(self, name: str, default: timedelta) -> timedelta:
        number = self._number(name, float, "a number of seconds")
        if number is None:
            return default
        if not number > 0:
            raise self.fail(name, f"must be a positive number of seconds, got {self.raw(name)!r}")
        return timedelta(seconds=number)

    def boolean(self, name: str, default: bool) -> bool:
        value = self.raw(name)
        if value is None:
            return default
        lowered = value.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise self.fail(name, f"must be true or false, got {value!r}")

    def url(self, name: str, default: str, schemes: tuple[str, ...]) -> str:
        value = self.text(name, default)
        try:
            parts = urlsplit(value)
            _ = parts.port  # raises on a malformed port
        except ValueError as exc:
            raise self.fail(name, f"is not a valid URL ({exc})") from None
        if parts.scheme not in schemes or not parts.hostname:
            raise self.fail(
                name, f"must look like {schemes[0]}://user@host:port/path, got a malformed URL"
            )
        return value

    def names(self, name: str) -> frozenset[str]:
        """A comma list of opaque ids (user ids, for example)."""
        value = self.raw(name)
        if value is None:
            return frozenset()
        return frozenset(item.strip() for item in value.split(",") if item.strip())

    def host_ports(self, name: str) -> frozenset[str]:
        value = self.raw(name)
        if value is None:
            return frozenset()
        pairs = set()
        for item in value.split(","):
            item = item.strip().lower()
            if not item:
                continue
            host, sep, port = item.rpartition(":")
            if not sep or not host or not port.isdigit():
                raise self.fail(name, f"entries must be host:port, got {item!r}")
            pairs.add(f"{host}:{int(port)}")
        return frozenset(pairs)


@functools.cache
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings.from_env()
