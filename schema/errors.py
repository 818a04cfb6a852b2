"""The single exception hierarchy. Every class has one stable ``code`` string.

Messages never carry secrets (cookie values, storage values, state files).
"""

from __future__ import annotations

from typing import Any, ClassVar


class BrowserSessionsError(Exception):
    """Base class: a stable ``code``, a human message, and whether a retry may help.

    A subclass names its code (and whether it is retryable) in its class statement,
    ``class X(BrowserSessionsError, code="X")``; a new code is registered for
    :func:`from_code` and :data:`ALL_ERRORS`.
    """

    code: ClassVar[str] = "INTERNAL_ERROR"
    retryable: ClassVar[bool] = False

    def __init_subclass__(
        cls, *, code: str | None = None, retryable: bool | None = None, **kwargs: Any
    ) -> None:
        super().__init_subclass__(**kwargs)
        if retryable is not None:
            cls.retryable = retryable
        if code is not None:  # a subclass without one keeps its parent's (and its registration)
            cls.code = code
            _BY_CODE[code] = cls

    def __init__(self, message: str = "", **detail: Any) -> None:
        super().__init__(message or self.code)
        self.message = message or self.code
        self.detail = detail

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape used on stdout, in results and in task rows."""
        return {"code": self.code, "message": self.message}


_BY_CODE: dict[str, type[BrowserSessionsError]] = {BrowserSessionsError.code: BrowserSessionsError}


class InvalidInput(BrowserSessionsError, code="INVALID_INPUT"): ...


class ConfigError(BrowserSessionsError, code="CONFIG_ERROR"): ...


class SessionNotFound(BrowserSessionsError, code="SESSION_NOT_FOUND"): ...


class SessionRevoked(BrowserSessionsError, code="SESSION_REVOKED"): ...


class SessionNotActive(BrowserSessionsError, code="SESSION_NOT_ACTIVE"):
    """The session has no saved state yet (still pending its first capture)."""


class AuthSessionExpired(BrowserSessionsError, code="AUTH_SESSION_EXPIRED"): ...


class NotOwner(BrowserSessionsError, code="NOT_OWNER"): ...


class TaskNotFound(BrowserSessionsError, code="TASK_NOT_FOUND"): ...


class DecryptFailed(BrowserSessionsError, code="DECRYPT_FAILED"): ...


class KeyError_(BrowserSessionsError, code="KEY_ERROR"):
    """Key material missing, unreadable or insecure (the name avoids the builtin)."""


class AuditWriteFailed(BrowserSessionsError, code="AUDIT_WRITE_FAILED", retryable=True): ...


class UrlNotAllowed(BrowserSessionsError, code="URL_NOT_ALLOWED"): ...


class NavigationFailed(BrowserSessionsError, code="NAVIGATION_FAILED", retryable=True): ...


class BrowserCrashed(BrowserSessionsError, code="BROWSER_CRASHED", retryable=True): ...


class CaptureNotFound(BrowserSessionsError, code="CAPTURE_NOT_FOUND"): ...


class CaptureNotLoggedIn(BrowserSessionsError, code="CAPTURE_NOT_LOGGED_IN"): ...


class CaptureTimeout(BrowserSessionsError, code="CAPTURE_TIMEOUT"): ...


class CaptureClosed(BrowserSessionsError, code="CAPTURE_CLOSED"):
    """A signal arrived for a capture that already reached a final state."""


class ResultTimeout(BrowserSessionsError, code="RESULT_TIMEOUT"): ...


class ServiceUnavailable(BrowserSessionsError, code="SERVICE_UNAVAILABLE", retryable=True): ...


class Unauthenticated(BrowserSessionsError, code="UNAUTHENTICATED"):
    """An HTTP API call without a valid service token or page cookie."""


class CsrfRejected(BrowserSessionsError, code="CSRF_REJECTED"):
    """A state-changing call from the settings page without its CSRF token."""


class VersionNotFound(BrowserSessionsError, code="VERSION_NOT_FOUND"):
    """A rollback named a version that is not (or no longer) kept."""


class VersionConflict(BrowserSessionsError, code="VERSION_CONFLICT", retryable=True):
    """A compare-and-set save found that another job saved a newer version first."""


ALL_ERRORS: tuple[type[BrowserSessionsError], ...] = tuple(_BY_CODE.values())


def from_code(code: str, message: str = "") -> BrowserSessionsError:
    """Rebuild an error from its stored code (unknown codes map to the base class)."""
    cls = _BY_CODE.get(code, BrowserSessionsError)
    err = cls(message or code)
    if cls is BrowserSessionsError and code != cls.code:
        err.code = code  # type: ignore[misc]
    return err
