"""The single exception hierarchy. Every class has one stable ``code`` string.

Messages never carry secrets (cookie values, storage values, state files).
"""

from __future__ import annotations

from typing import Any, ClassVar


class BrowserSessionsError(Exception):
    """Base class: a stable ``code``, a human message, and whether a retry may help."""

    code: ClassVar[str] = "INTERNAL_ERROR"
    retryable: ClassVar[bool] = False

    def __init__(self, message: str = "", **detail: Any) -> None:
        super().__init__(message or self.code)
        self.message = message or self.code
        self.detail = detail

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape used on stdout, in results and in task rows."""
        return {"code": self.code, "message": self.message}


class InvalidInput(BrowserSessionsError):
    code = "INVALID_INPUT"


class ConfigError(BrowserSessionsError):
    code = "CONFIG_ERROR"


class SessionNotFound(BrowserSessionsError):
    code = "SESSION_NOT_FOUND"


class SessionRevoked(BrowserSessionsError):
    code = "SESSION_REVOKED"


class SessionNotActive(BrowserSessionsError):
    """The session has no saved state yet (still pending its first capture)."""

    code = "SESSION_NOT_ACTIVE"


class AuthSessionExpired(BrowserSessionsError):
    code = "AUTH_SESSION_EXPIRED"


class NotOwner(BrowserSessionsError):
    code = "NOT_OWNER"


class TaskNotFound(BrowserSessionsError):
    code = "TASK_NOT_FOUND"


class DecryptFailed(BrowserSessionsError):
    code = "DECRYPT_FAILED"


class KeyError_(BrowserSessionsError):
    """Key material missing, unreadable or insecure (the name avoids the builtin)."""

    code = "KEY_ERROR"


class AuditWriteFailed(BrowserSessionsError):
    code = "AUDIT_WRITE_FAILED"
    retryable = True


class UrlNotAllowed(BrowserSessionsError):
    code = "URL_NOT_ALLOWED"


class NavigationFailed(BrowserSessionsError):
    code = "NAVIGATION_FAILED"
    retryable = True


class BrowserCrashed(BrowserSessionsError):
    code = "BROWSER_CRASHED"
    retryable = True


class CaptureNotFound(BrowserSessionsError):
    code = "CAPTURE_NOT_FOUND"


class CaptureNotLoggedIn(BrowserSessionsError):
    code = "CAPTURE_NOT_LOGGED_IN"


class CaptureTimeout(BrowserSessionsError):
    code = "CAPTURE_TIMEOUT"


class CaptureClosed(BrowserSessionsError):
    """A signal arrived for a capture that already reached a final state."""

    code = "CAPTURE_CLOSED"


class ResultTimeout(BrowserSessionsError):
    code = "RESULT_TIMEOUT"


class ServiceUnavailable(BrowserSessionsError):
    code = "SERVICE_UNAVAILABLE"
    retryable = True


class Unauthenticated(BrowserSessionsError):
    """An HTTP API call without a valid service token or page cookie."""

    code = "UNAUTHENTICATED"


class CsrfRejected(BrowserSessionsError):
    """A state-changing call from the settings page without its CSRF token."""

    code = "CSRF_REJECTED"


ALL_ERRORS: tuple[type[BrowserSessionsError], ...] = (
    BrowserSessionsError,
    InvalidInput,
    ConfigError,
    SessionNotFound,
    SessionRevoked,
    SessionNotActive,
    AuthSessionExpired,
    NotOwner,
    TaskNotFound,
    DecryptFailed,
    KeyError_,
    AuditWriteFailed,
    UrlNotAllowed,
    NavigationFailed,
    BrowserCrashed,
    CaptureNotFound,
    CaptureNotLoggedIn,
    CaptureTimeout,
    CaptureClosed,
    ResultTimeout,
    ServiceUnavailable,
    Unauthenticated,
    CsrfRejected,
)

_BY_CODE = {cls.code: cls for cls in ALL_ERRORS}


def from_code(code: str, message: str = "") -> BrowserSessionsError:
    """Rebuild an error from its stored code (unknown codes map to the base class)."""
    cls = _BY_CODE.get(code, BrowserSessionsError)
    err = cls(message or code)
    if cls is BrowserSessionsError and code != cls.code:
        err.code = code  # type: ignore[misc]
    return err


class VersionNotFound(BrowserSessionsError):
    """A rollback named a version that is not (or no longer) kept."""

    code = "VERSION_NOT_FOUND"


class VersionConflict(BrowserSessionsError):
    """A compare-and-set save found that another job saved a newer version first."""

    code = "VERSION_CONFLICT"
    retryable = True


ALL_ERRORS = (*ALL_ERRORS, VersionNotFound, VersionConflict)
_BY_CODE.update({cls.code: cls for cls in (VersionNotFound, VersionConflict)})
