"""Status values shared by the tables, the producers and the workers."""

from __future__ import annotations

from enum import StrEnum


class SessionStatus(StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    EXPIRED = "expired"
    REVOKED = "revoked"


class CaptureState(StrEnum):
    QUEUED = "queued"
    OPEN = "open"
    SAVING = "saving"
    SAVED = "saved"
    NOT_LOGGED_IN = "not_logged_in"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    INTERRUPTED = "interrupted"
    FAILED = "failed"

    @property
    def is_final(self) -> bool:
        return self in FINAL_CAPTURE_STATES


FINAL_CAPTURE_STATES = frozenset(
    {
        CaptureState.SAVED,
        CaptureState.CANCELLED,
        CaptureState.TIMED_OUT,
        CaptureState.INTERRUPTED,
        CaptureState.FAILED,
    }
)


class CaptureSignal(StrEnum):
    """What a producer asks of an open capture."""

    SAVE = "save"
    CANCEL = "cancel"


class TaskStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class BrowseOutcome(StrEnum):
    OK = "ok"
    ERROR = "error"


class AuditResult(StrEnum):
    OK = "ok"
    DENIED = "denied"
    ERROR = "error"


class AuditAction(StrEnum):
    CREATE = "create"
    SAVE = "save"
    IMPORT = "import"
    USE = "use"
    DECRYPT = "decrypt"
    REVOKE = "revoke"
    DELETE = "delete"
    EXPIRE = "expire"
    SHRED = "shred"
    RELOGIN = "relogin"
    CAPTURE_START = "capture_start"
    CAPTURE_CANCEL = "capture_cancel"
    ROTATE = "rotate"
    WRITE_BACK = "write_back"
    ROLLBACK = "rollback"
    PROBE = "probe"
    LEASE_MODE = "lease_mode"
