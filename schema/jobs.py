"""Job payloads: ids and options only, never secrets (an imported state travels sealed).

Each payload is a frozen dataclass with a ``schema_version``; ``to_message`` /
``from_message`` are the only (de)serialisers, and unknown versions are refused.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self, dataclass_transform

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


@dataclass_transform(kw_only_default=True, frozen_default=True, field_specifiers=(field,))
@dataclass(frozen=True, kw_only=True)
class _Payload:
    """The base of every payload: each subclass is a frozen, keyword-only dataclass too, and
    names its ``kind`` (the actor that runs it) in its class statement."""

    kind: ClassVar[str] = ""
    schema_version: int = SCHEMA_VERSION

    def __init_subclass__(cls, *, kind: str = "", **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.kind = kind or cls.kind
        dataclass(frozen=True, kw_only=True)(cls)

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


class _SessionPayload(_Payload):
    session_id: str


class _OwnedPayload(_SessionPayload):
    """About a session of ``owner_id``'s (checked against the row by the worker)."""

    owner_id: str


class BrowseJob(_OwnedPayload, kind="browse"):
    job_id: str
    task_id: str
    url: str
    options: BrowseOptions = field(default_factory=BrowseOptions)

    @classmethod
    def _build(cls, values: dict[str, Any]) -> Self:
        options = values.pop("options", None) or {}
        return cls(options=BrowseOptions(**options), **values)


class ExpireJob(_SessionPayload, kind="expire"):
    task_id: str
    job_id: str


class _CapturePayload(_OwnedPayload):
    capture_id: str


class CaptureJob(_CapturePayload, kind="capture"):
    """Open the login window of a capture (its progress is the capture row)."""


class ImportJob(_CapturePayload, kind="import_state"):
    """A storageState file sealed to the workers' public key (base64 text), verified under
    its capture."""

    sealed_state: str


class ProbeJob(_SessionPayload, kind="probe"):
    """A health probe of one session, enqueued by the probe scheduler."""

    probe_id: str


class RollbackJob(_OwnedPayload, kind="rollback"):
    """Make a kept version of a session current again (re-encrypted by a worker)."""

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
