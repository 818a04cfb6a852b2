"""The OpenAPI 3.1 document served at ``/v1/openapi.json``. A schemathesis test runs it
against the live API, so every route, status and response shape here is checked."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

Json = dict[str, Any]
Ok = dict[int, tuple[str, str]]  # status -> (description, schema name)

ID = {"type": "string", "minLength": 1, "maxLength": 200, "pattern": r"^[^\s\x00-\x1f]+$"}
TIME = {"type": "string", "format": "date-time"}
MAYBE_TIME = {"type": ["string", "null"], "format": "date-time"}
MAYBE_TEXT = {"type": ["string", "null"]}
HTTP_URL = {
    "type": "string",
    "maxLength": 4096,
    "pattern": r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,4})?(/[^\s\x00]*)?$",
    "description": "An http or https URL with a host.",
}
TEXT = {"type": "string", "pattern": r"^[^\x00]*[^\s\x00][^\x00]*$"}
NO_NUL = r"^[^\x00]*$"


def ref(name: str) -> Json:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(required: list[str], properties: Json, *, extra: bool = True) -> Json:
    return {
        "type": "object",
        "required": required,
        "properties": properties,
        "additionalProperties": extra,
    }


SCHEMAS: Json = {
    "Error": obj(
        ["error"],
        {
            "error": obj(
                ["code", "message"],
                {
                    "code": {
                        "type": "string",
                        "description": "A stable error code (see the README's table).",
                    },
                    "message": {"type": "string"},
                },
            )
        },
    ),
    "Session": obj(
        ["id", "owner_id", "label", "start_url", "site", "status", "version", "created_at"],
        {
            "id": ID,
            "owner_id": ID,
            "label": {"type": "string"},
            "start_url": {"type": "string"},
            "site": {"type": "string"},
            "logged_in_selector": MAYBE_TEXT,
            "login_url_pattern": MAYBE_TEXT,
            "extra_origins": {"type": "array", "items": {"type": "string"}},
            "status": {"type": "string", "enum": ["pending", "active", "expired", "revoked"]},
            "version": {"type": "integer", "minimum": 0},
            "created_at": TIME,
            "updated_at": TIME,
            "saved_at": MAYBE_TIME,
            "last_used_at": MAYBE_TIME,
            "expired_at": MAYBE_TIME,
            "revoked_at": MAYBE_TIME,
        },
    ),
    "SessionList": obj(["sessions"], {"sessions": {"type": "array", "items": ref("Session")}}),
    "NewSession": {
        **obj(
            ["label", "start_url"],
            {
                "label": {**TEXT, "maxLength": 200},
                "start_url": HTTP_URL,
                "logged_in_selector": {
                    "type": ["string", "null"],
                    "maxLength": 1000,
                    "pattern": NO_NUL,
                    "description": "CSS that exists only when logged in.",
                },
                "login_url_pattern": {
                    "type": ["string", "null"],
                    "maxLength": 1000,
                    "pattern": NO_NUL,
                    "description": "A glob matching the login page: ** anything, * anything but /.",
                },
                "extra_origins": {"type": "array", "maxItems": 20, "items": HTTP_URL},
            },
            extra=False,
        ),
        "anyOf": [
            {"required": ["logged_in_selector"], "properties": {"logged_in_selector": TEXT}},
            {"required": ["login_url_pattern"], "properties": {"login_url_pattern": TEXT}},
        ],
        "description": "Give a logged-in selector, a login URL pattern, or both.",
    },
    "Capture": obj(
        ["id", "session_id", "owner_id", "kind", "state", "liveview_url", "created_at"],
        {
            "id": ID,
            "session_id": ID,
            "owner_id": ID,
            "kind": {"type": "string", "enum": ["live", "import"]},
            "state": {
                "type": "string",
                "enum": [
                    "queued",
                    "open",
                    "saving",
                    "saved",
                    "not_logged_in",
                    "cancelled",
                    "timed_out",
                    "interrupted",
                    "failed",
                ],
            },
            "signal": {"type": ["string", "null"], "enum": ["save", "cancel", None]},
            "reason": MAYBE_TEXT,
            "error_code": MAYBE_TEXT,
            "liveview_url": {
                "type": ["string", "null"],
                "description": "The live view (with its access token) while the capture is "
                "open; only its owner gets it.",
            },
            "created_at": TIME,
            "updated_at": TIME,
            "opened_at": MAYBE_TIME,
            "finished_at": MAYBE_TIME,
            "expires_at": MAYBE_TIME,
        },
    ),
    "CaptureStarted": obj(
        ["session_id", "capture_id", "capture"],
        {"session_id": ID, "capture_id": ID, "capture": ref("Capture")},
    ),
    "Revoked": obj(
        ["session_id", "status"],
        {"session_id": ID, "status": {"type": "string", "enum": ["revoked"]}},
    ),
    "Deleted": obj(["session_id", "deleted"], {"session_id": ID, "deleted": {"type": "boolean"}}),
    "BrowseRequest": obj(
        ["task_id", "session_id", "url"],
        {
            "task_id": ID,
            "session_id": ID,
            "url": HTTP_URL,
            "wait": {
                "type": "boolean",
                "default": True,
                "description": "Wait for the result (200) or answer 202 at once.",
            },
            "timeout_s": {
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": 300,
                "description": "How long to wait for the result (default RESULT_TIMEOUT).",
            },
            "options": obj(
                [],
                {
                    "wait_until": {
                        "type": "string",
                        "enum": ["load", "domcontentloaded", "networkidle", "commit"],
                    },
                    "wait_for_selector": {"type": ["string", "null"]},
                    "html": {"type": "boolean"},
                    "screenshot": {"type": "boolean"},
                    "navigation_timeout_s": {
                        "type": "number",
                        "exclusiveMinimum": 0,
                        "maximum": 300,
                    },
                },
                extra=False,
            ),
        },
        extra=False,
    ),
    "BrowseResult": obj(
        ["job_id", "task_id", "session_id", "outcome"],
        {
            "job_id": ID,
            "task_id": ID,
            "session_id": {"type": ["string", "null"]},
            "outcome": {"type": "string", "enum": ["ok", "error"]},
            "final_url": MAYBE_TEXT,
            "http_status": {"type": ["integer", "null"]},
            "title": MAYBE_TEXT,
            "text": MAYBE_TEXT,
            "html": {"type": "string"},
            "screenshot_png_base64": {"type": "string"},
            "duration_ms": {"type": ["integer", "null"]},
            "attempts": {"type": "integer"},
            "error": {
                "type": "object",
                "properties": {"code": MAYBE_TEXT, "message": MAYBE_TEXT},
            },
        },
    ),
    "BrowseAccepted": obj(
        ["job_id", "status"],
        {"job_id": ID, "status": {"type": "string", "enum": ["queued", "pending"]}},
    ),
    "TaskRequest": obj(["task_id"], {"task_id": ID}, extra=False),
    "Task": obj(["task_id", "owner_id"], {"task_id": ID, "owner_id": ID}),
    "UiLinkRequest": obj(
        ["user_id"],
        {"user_id": ID, "lang": {"type": "string", "enum": ["en", "ja"]}},
        extra=False,
    ),
    "UiLink": obj(["url", "expires_at"], {"url": {"type": "string"}, "expires_at": TIME}),
    "Health": obj(["status"], {"status": {"type": "string"}, "pid": {"type": "integer"}}),
    "Ready": obj(
        ["status", "checks"],
        {
            "status": {"type": "string", "enum": ["ready", "not_ready"]},
            "checks": {"type": "object"},
        },
    ),
}

ERRORS = {
    400: "Bad input (INVALID_INPUT, URL_NOT_ALLOWED).",
    401: "No valid service token or page cookie (UNAUTHENTICATED).",
    403: "Not the owner (NOT_OWNER) or a page call without its CSRF token (CSRF_REJECTED).",
    404: "No such session or capture (SESSION_NOT_FOUND, CAPTURE_NOT_FOUND).",
    405: "Method not allowed on this path.",
    409: "Conflicts: SESSION_REVOKED, SESSION_NOT_ACTIVE, CAPTURE_CLOSED.",
    413: "The request body is too large.",
    503: "RabbitMQ, the database or the workers are not available (SERVICE_UNAVAILABLE, "
    "AUDIT_WRITE_FAILED, KEY_ERROR: no worker has published its sealing key yet).",
    504: "No browse result in time (RESULT_TIMEOUT).",
}


def json_response(description: str, schema: Json) -> Json:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def responses(ok: Ok, errors: tuple[int, ...]) -> Json:
    out: Json = {str(code): json_response(text, ref(name)) for code, (text, name) in ok.items()}
    for code in errors:
        out[str(code)] = json_response(ERRORS[code], ref("Error"))
    return out


def body(name: str) -> Json:
    return {"required": True, "content": {"application/json": {"schema": ref(name)}}}


def path_param(name: str) -> Json:
    return {"name": name, "in": "path", "required": True, "schema": ID}


AUTHED = (400, 401, 403, 405, 503)
USER_SECURITY: list[Json] = [
    {"serviceToken": [], "actingUser": []},
    {"pageCookie": [], "csrfToken": []},
]


def operation(
    op_id: str,
    summary: str,
    ok: Ok,
    errors: tuple[int, ...] = AUTHED,
    *,
    params: tuple[str, ...] = (),
    request: str | None = None,
    security: list[Json] | None = None,
) -> Json:
    op: Json = {
        "operationId": op_id,
        "summary": summary,
        "responses": responses(ok, tuple(sorted(set(errors)))),
        "security": USER_SECURITY if security is None else security,
    }
    if params:
        op["parameters"] = [path_param(p) for p in params]
    if request:
        op["requestBody"] = body(request)
    return op


STARTED: Ok = {201: ("Created; the login window is starting.", "CaptureStarted")}
CAPTURE: Ok = {200: ("The capture.", "Capture")}
IMPORTED: Ok = {202: ("Accepted; the import's capture tracks it.", "CaptureStarted")}
SESSIONS: Ok = {200: ("The sessions.", "SessionList")}
SESSION: Ok = {200: ("The session.", "Session")}
DELETED: Ok = {200: ("Deleted.", "Deleted")}
REVOKED: Ok = {200: ("Revoked.", "Revoked")}
TASK: Ok = {201: ("The task.", "Task")}
BROWSED: Ok = {
    200: ("The result.", "BrowseResult"),
    202: ("Queued (wait: false).", "BrowseAccepted"),
}
RESULT: Ok = {
    200: ("The result.", "BrowseResult"),
    202: ("Not finished (or not yours).", "BrowseAccepted"),
}

#: The acting user's operations, in document order: path, method, operationId, success
#: responses, the error statuses added to ``AUTHED``, request body schema. Path parameters
#: come from the path, summaries from ``SUMMARIES``.
USER_OPERATIONS: tuple[tuple[str, str, str, Ok, tuple[int, ...], str | None], ...] = (
    ("/v1/sessions", "get", "listSessions", SESSIONS, (), None),
    ("/v1/sessions", "post", "addSession", STARTED, (413,), "NewSession"),
    ("/v1/sessions/import", "post", "importSession", IMPORTED, (413,), "ImportRequest"),
    ("/v1/sessions/{session_id}", "get", "getSession", SESSION, (404,), None),
    ("/v1/sessions/{session_id}", "delete", "deleteSession", DELETED, (404,), None),
    ("/v1/sessions/{session_id}/relogin", "post", "reloginSession", STARTED, (404, 409), None),
    ("/v1/sessions/{session_id}/revoke", "post", "revokeSession", REVOKED, (404,), None),
    ("/v1/captures/{capture_id}", "get", "getCapture", CAPTURE, (404,), None),
    ("/v1/captures/{capture_id}/save", "post", "saveCapture", CAPTURE, (404, 409), None),
    ("/v1/captures/{capture_id}/cancel", "post", "cancelCapture", CAPTURE, (404, 409), None),
    ("/v1/tasks", "post", "addTask", TASK, (), "TaskRequest"),
    ("/v1/browse", "post", "browse", BROWSED, (404, 504), "BrowseRequest"),
    ("/v1/browse/{job_id}", "get", "getBrowseResult", RESULT, (), None),
)
SUMMARIES = {
    "listSessions": "The acting user's sessions (for the settings list and the dropdown).",
    "addSession": "Add a session and open its login window (a capture).",
    "importSession": "Add a session from a Playwright storageState; a worker verifies it is "
    "logged in (poll the capture: saved, or failed with CAPTURE_NOT_LOGGED_IN; "
    "a refused import's session is removed).",
    "getSession": "One session (its owner, or an admin).",
    "deleteSession": "Delete a session and its saved state (owner or admin).",
    "reloginSession": "Open a fresh login window into an existing session (its owner only).",
    "revokeSession": "Revoke a session for good (owner or admin).",
    "getCapture": "A capture's state and, while open, its live-view URL (owner only).",
    "saveCapture": "Save: the worker checks the login and stores the state (state saving, "
    "then saved or not_logged_in).",
    "cancelCapture": "Cancel the login window.",
    "addTask": "Record a task of the acting user's, the row a browse needs (for a "
    "platform that does not write the tasks table itself). Idempotent.",
    "browse": "Browse a URL for a task of the acting user's with one of their sessions. "
    "A finished job answers 200 even when its outcome is an error (its code "
    "is in error.code, e.g. AUTH_SESSION_EXPIRED).",
    "getBrowseResult": "A browse job's result once stored (the task's owner only), else 202.",
}


def public_operation(op_id: str, summary: str, ok: Json) -> Json:
    """An unauthenticated operation (probes, metrics, this document)."""
    return {"operationId": op_id, "summary": summary, "security": [], "responses": ok}


def paths() -> Json:
    out: Json = {}
    for path, method, op_id, ok, errors, request in USER_OPERATIONS:
        params = tuple(re.findall(r"\{(\w+)\}", path))
        out.setdefault(path, {})[method] = operation(
            op_id, SUMMARIES[op_id], ok, (*AUTHED, *errors), params=params, request=request
        )
    out["/v1/ui-links"] = {
        "post": operation(
            "createUiLink",
            "For the platform's backend: a short-lived signed link that opens the "
            "settings page as user_id (an iframe src).",
            {201: ("The link.", "UiLink")},
            (400, 401, 405),
            request="UiLinkRequest",
            security=[{"serviceToken": []}],
        )
    }
    out["/healthz"] = {
        "get": public_operation(
            "healthz", "Liveness.", {"200": json_response("Up.", ref("Health"))}
        )
    }
    ready = json_response("Ready.", ref("Ready"))
    out["/readyz"] = {
        "get": public_operation(
            "readyz",
            "Readiness: the database and RabbitMQ answer.",
            {"200": ready, "503": json_response("Not ready.", ref("Ready"))},
        )
    }
    metrics_text = {
        "description": "Prometheus text format.",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    }
    out["/metrics"] = {
        "get": public_operation(
            "metrics", "Prometheus metrics of this API process.", {"200": metrics_text}
        )
    }
    openapi = json_response("OpenAPI 3.1.", {"type": "object"})
    out["/v1/openapi.json"] = {
        "get": public_operation("openapi", "This document.", {"200": openapi})
    }
    return out


def document() -> Json:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Browser Sessions",
            "version": "1",
            "description": "Saved, encrypted, per-user browser sessions for scheduled agent "
            "tasks. Every call acts for one user: the platform's backend sends its service "
            "token and X-Acting-User; the settings page sends its cookie and X-CSRF-Token.",
        },
        "paths": paths(),
        "components": {
            "schemas": {
                **SCHEMAS,
                "ImportRequest": {
                    **SCHEMAS["NewSession"],
                    "required": ["label", "start_url", "state"],
                    "properties": {
                        **SCHEMAS["NewSession"]["properties"],
                        "state": obj(
                            [],
                            {
                                "cookies": {"type": "array", "items": {"type": "object"}},
                                "origins": {"type": "array", "items": {"type": "object"}},
                            },
                        ),
                    },
                },
            },
            "securitySchemes": {
                "serviceToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "BROWSER_SESSIONS_API_TOKEN (the platform's backend).",
                },
                "actingUser": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-Acting-User",
                    "description": "The user the backend acts for (admins: "
                    "BROWSER_SESSIONS_ADMINS).",
                },
                "pageCookie": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": "bs_ui",
                    "description": "Set by opening a /v1/ui-links URL.",
                },
                "csrfToken": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-CSRF-Token",
                    "description": "The page's CSRF token (state-changing calls).",
                },
            },
        },
    }


DOCUMENT = document()


async def handler(request: web.Request) -> web.Response:
    return web.json_response(DOCUMENT)
