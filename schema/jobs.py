"""Job payloads: ids and options only, never secrets (an imported state travels sealed).

Each payload is a frozen dataclass with a ``schema_version``; ``to_message`` /
``from_message`` are the only (de)serialisers, and unknown versions are refused.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from schema.errors import InvalidInput

SCHEMA_VERSION = 1

WAIT_CONDITIONS = ("load", "domcontentloaded", "networkidle", "commit")


@dataclass(frozen=True, kw_only=True)
class BrowseOptions:
    wait_until: str = "load"
    wait_for_selector: str | None = None
    extract_text: bool = True
    extract_html: bool = False
    screenshot: bool = False
    timeout_s: float = 30.0
    max_text_chars: int = 100_000

    def __post_init__(self) -> None:
        if self.wait_until not in WAIT_CONDITIONS:
            raise InvalidInput(f"wait_until must be one of {', '.join(WAIT_CONDITIONS)}")
        if not 0 < self.timeout_s <= 300:
            raise InvalidInput("timeout_s must be between 0 and 300 seconds")
        if self.max_text_chars < 0:
            raise InvalidInput("max_text_chars must not be negative")


@dataclass(frozen=True, kw_only=True)
class _Payload:
    kind: ClassVar[str] = ""  # the name of the actor that runs it
    schema_version: int = SCHEMA_VERSION

    def to_message(self) -> dict[str, Any]:
        return {"kind": self.kind, **dataclasses.asdict(self)}

    @classmethod
    def from_message(cls, data: dict[str, Any]) -> Self:
        if not isinstance(data, dict) or data.get("kind") != cls.kind:
            raise InvalidInput(f"not a {cls.kind} payload")
        if data.get("schema_version") != SCHEMA_VERSION:
            raise InvalidInput(
                f"unsupported {cls.kind} schema_version {data.get('schema_version')}"
            )
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in fields}
        try:
            return cls._build(values)
        except TypeError as exc:
            raise InvalidInput(f"malformed {cls.kind} payload: {exc}") from None

    @classmethod
    def _build(cls, values: dict[str, Any]) -> Self:
        return cls(**values)


@dataclass(frozen=True, kw_only=True)
class BrowseJob(_Payload):
    kind: ClassVar[str] = "browse"
    job_id: str
    task_id: str
    owner_id: str
    session_id: str
    url: str
    options: BrowseOptions = field(default_factory=BrowseOptions)

    @classmethod
    def _build(cls, values: dict[str, Any]) -> Self:
        options = values.pop("options", None) or {}
        return cls(options=BrowseOptions(**options), **values)


@dataclass(frozen=True, kw_only=True)
class ExpireJob(_Payload):
    kind: ClassVar[str] = "expire"
    session_id: str
    task_id: str
    job_id: str


@dataclass(frozen=True, kw_only=True)
class CaptureJob(_Payload):
    kind: ClassVar[str] = "capture"
    capture_id: str
    session_id: str
    owner_id: str


@dataclass(frozen=True, kw_only=True)
class ImportJob(_Payload):
    """A storageState file sealed to the workers' public key (base64 text)."""

    kind: ClassVar[str] = "import_state"
    capture_id: str
    session_id: str
    owner_id: str
    sealed_state: str


@dataclass(frozen=True, kw_only=True)
class ProbeJob(_Payload):
    """A health probe of one session, enqueued by the probe scheduler."""

    kind: ClassVar[str] = "probe"
    session_id: str
    probe_id: str


@dataclass(frozen=True, kw_only=True)
class RollbackJob(_Payload):
    """Make a kept version of a session current again (re-encrypted by a worker)."""

    kind: ClassVar[str] = "rollback"
    session_id: str
    owner_id: str
    actor_id: str
    version: int
    request_id: str


BROWSE_QUEUE = "browse"
CAPTURE_QUEUE = "capture"
EXPIRY_QUEUE = "expiry"
QUEUES = (BROWSE_QUEUE, CAPTURE_QUEUE, EXPIRY_QUEUE)

#: The one routing table: each job kind is its actor's name, and runs on this queue.
ACTOR_QUEUES: dict[str, str] = {
    BrowseJob.kind: BROWSE_QUEUE,
    ImportJob.kind: BROWSE_QUEUE,
    CaptureJob.kind: CAPTURE_QUEUE,
    ExpireJob.kind: EXPIRY_QUEUE,
    ProbeJob.kind: BROWSE_QUEUE,  # a probe opens a browser: browse workers run it
    RollbackJob.kind: EXPIRY_QUEUE,  # keys and Postgres only, no browser
}
