"""Status values shared by the tables, the producers and the workers.

Each value is its member's name in lower case (``StrEnum``'s own rule), so the short ones are
declared by their names alone.
"""

from __future__ import annotations

from enum import StrEnum

SessionStatus = StrEnum("SessionStatus", "PENDING ACTIVE EXPIRED REVOKED")


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


#: What a producer asks of an open capture.
CaptureSignal = StrEnum("CaptureSignal", "SAVE CANCEL")
TaskStatus = StrEnum("TaskStatus", "PENDING RUNNING SUCCEEDED FAILED")
BrowseOutcome = StrEnum("BrowseOutcome", "OK ERROR")
AuditResult = StrEnum("AuditResult", "OK DENIED ERROR")


AuditAction = StrEnum(
    "AuditAction",
    "CREATE SAVE IMPORT USE DECRYPT REVOKE DELETE EXPIRE SHRED RELOGIN "
    "CAPTURE_START CAPTURE_CANCEL ROTATE WRITE_BACK ROLLBACK PROBE LEASE_MODE",
)
