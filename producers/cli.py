"""The producer side of the ``browser-sessions`` console script: migrate, sessions, capture,
browse and audit. JSON on stdout, errors as ``{"error": {"code": ..., "message": ...}}`` with a
non-zero exit. The console-script root (``workers.cli``) mounts these commands."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Coroutine
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from schema.errors import BrowserSessionsError, InvalidInput
from schema.settings import Settings

if TYPE_CHECKING:
    from producers.api import NewSession

Handler = Callable[[argparse.Namespace, Settings], Coroutine[Any, Any, Any]]


def _actions(sub: Any, name: str, help: str) -> Any:
    """A command whose first argument is its action (``sessions add``, ``capture save``...)."""
    return sub.add_parser(name, help=help).add_subparsers(dest="action", required=True)


def add_commands(sub: Any) -> None:
    """Add the producer commands to the console script's sub-parsers."""

    m = sub.add_parser("migrate", help="apply schema migrations (idempotent)")
    m.add_argument(
        "--create-database",
        action="store_true",
        help="create the database first if it does not exist",
    )

    s = _actions(sub, "sessions", "manage saved sessions")
    for name in ("add", "import"):
        # Each option is stored under its NewSession name (see _new_session).
        a = s.add_parser(name)
        a.add_argument("--owner", dest="owner_id", metavar="OWNER", required=True)
        a.add_argument("--label", required=True)
        a.add_argument("--start-url", required=True)
        a.add_argument("--logged-in-selector")
        a.add_argument("--login-url-pattern")
        a.add_argument(
            "--extra-origin",
            dest="extra_origins",
            metavar="EXTRA_ORIGIN",
            action="append",
            default=[],
        )
        if name == "import":
            a.add_argument("--state-file", required=True, type=Path)
            a.add_argument("--timeout", type=float, default=90.0)
    s.add_parser("list").add_argument("--owner", required=True)
    r = s.add_parser("relogin")
    r.add_argument("session")
    r.add_argument("--actor", required=True)
    v = s.add_parser("versions", help="the kept versions of a session (never secrets)")
    v.add_argument("session")
    v.add_argument("--actor", required=True)
    rb = s.add_parser("rollback", help="make a kept version current again")
    rb.add_argument("session")
    rb.add_argument("--to", type=int, required=True, metavar="VERSION")
    rb.add_argument("--actor", required=True)
    lm = s.add_parser("lease-mode", help="one job at a time (exclusive), parallel, or auto")
    lm.add_argument("session")
    lm.add_argument("--mode", required=True, choices=("auto", "exclusive", "parallel"))
    lm.add_argument("--actor", required=True)
    for name in ("revoke", "delete"):
        d = s.add_parser(name)
        d.add_argument("session")
        d.add_argument("--actor", required=True)
        d.add_argument(
            "--admin",
            action="store_true",
            help="act as an admin: granted only if --actor is in BROWSER_SESSIONS_ADMINS",
        )

    c = _actions(sub, "capture", "drive a capture")
    for name in ("status", "save", "cancel"):
        cc = c.add_parser(name)
        cc.add_argument("capture")
        cc.add_argument("--actor", required=True)

    t = _actions(sub, "tasks", "the minimal tasks a browse needs")
    ta = t.add_parser("add", help="insert a task row (idempotent) when the orchestrator has not")
    ta.add_argument("task")
    ta.add_argument("--owner", required=True)

    n = _actions(sub, "notifications", "the outbox of news without a task")
    nl = n.add_parser("list")
    nl.add_argument("--user", required=True)
    nl.add_argument("--all", action="store_true", help="delivered ones too")
    na = n.add_parser("ack", help="mark notifications delivered")
    na.add_argument("ids", type=int, nargs="+")
    na.add_argument("--user", required=True)

    b = sub.add_parser("browse", help="enqueue a browse job and wait for its result")
    b.add_argument("url")
    b.add_argument("--task", required=True)
    b.add_argument("--owner", required=True)
    b.add_argument("--session", required=True)
    b.add_argument("--wait-until", default="load")
    b.add_argument("--wait-for-selector")
    b.add_argument("--html", action="store_true")
    b.add_argument("--screenshot", action="store_true")
    b.add_argument("--timeout", type=float, default=30.0, help="navigation timeout, seconds")
    b.add_argument("--result-timeout", type=float, default=None)

    sub.add_parser("api", help="the HTTP API and the settings page")

    au = _actions(sub, "audit", "the audit log")
    av = au.add_parser(
        "verify", help="check the chain against the configured checkpoints; lists every break"
    )
    av.add_argument(
        "--checkpoints",
        type=Path,
        action="append",
        help="checkpoint or log file to check against (repeatable; replaces the configured "
        "BROWSER_SESSIONS_AUDIT_CHECKPOINT_FILE)",
    )


async def _migrate(args: argparse.Namespace, settings: Settings) -> Any:
    from schema.migrate import create_database_if_missing, migrate

    created = False
    if args.create_database:
        created = await create_database_if_missing(settings.database_url)
    applied = await migrate(settings.database_url)
    return {"created_database": created, "applied": applied}


async def _sessions(args: argparse.Namespace, settings: Settings) -> Any:
    from producers.api import SessionsClient

    async with SessionsClient.open(settings) as client:
        if args.action == "add":
            return await client.add_session(**_new_session(args))
        if args.action == "import":
            try:
                state = args.state_file.read_bytes()
            except OSError as exc:
                raise InvalidInput(f"cannot read the state file: {exc.strerror}") from None
            return await client.import_session(
                state=state, timeout=timedelta(seconds=args.timeout), **_new_session(args)
            )
        if args.action == "list":
            return {"sessions": [s.to_dict() for s in await client.list_sessions(args.owner)]}
        if args.action == "relogin":
            return await client.relogin(args.session, actor_id=args.actor)
        if args.action == "versions":
            return await client.versions(args.session, actor_id=args.actor)
        if args.action == "rollback":
            return await client.rollback(args.session, to=args.to, actor_id=args.actor)
        if args.action == "lease-mode":
            return await client.set_lease_mode(args.session, mode=args.mode, actor_id=args.actor)
        if args.action == "revoke":
            return await client.revoke(args.session, actor_id=args.actor, admin=args.admin)
        return await client.delete(args.session, actor_id=args.actor, admin=args.admin)


def _new_session(args: argparse.Namespace) -> NewSession:
    """``sessions add`` / ``import``'s options, by the names the API gives them."""
    from producers.api import NewSession

    return cast(NewSession, {name: getattr(args, name) for name in NewSession.__annotations__})


async def _notifications(args: argparse.Namespace, settings: Settings) -> Any:
    from producers.api import SessionsClient

    async with SessionsClient.open(settings) as client:
        if args.action == "list":
            pending = not args.all
            return {"notifications": await client.notifications(args.user, pending_only=pending)}
        return {"delivered": await client.mark_delivered(args.user, args.ids)}


async def _capture(args: argparse.Namespace, settings: Settings) -> Any:
    from producers.api import SessionsClient

    async with SessionsClient.open(settings) as client:
        if args.action == "status":
            return (await client.capture_status(args.capture, actor_id=args.actor)).to_dict()
        if args.action == "save":
            return (await client.save_capture(args.capture, actor_id=args.actor)).to_dict()
        return (await client.cancel_capture(args.capture, actor_id=args.actor)).to_dict()


async def _tasks(args: argparse.Namespace, settings: Settings) -> Any:
    from producers.api import SessionsClient

    async with SessionsClient.open(settings) as client:
        return await client.add_task(args.task, owner_id=args.owner)


async def _browse(args: argparse.Namespace, settings: Settings) -> Any:
    from producers.api import SessionsClient
    from schema.jobs import BrowseOptions

    options = BrowseOptions(
        wait_until=args.wait_until,
        wait_for_selector=args.wait_for_selector,
        extract_html=args.html,
        screenshot=args.screenshot,
        timeout_s=args.timeout,
    )
    async with SessionsClient.open(settings) as client:
        result = await client.browse(
            task_id=args.task,
            owner_id=args.owner,
            session_id=args.session,
            url=args.url,
            options=options,
            timeout=timedelta(seconds=args.result_timeout) if args.result_timeout else None,
        )
    if not result.ok:
        raise ExitWith(result.to_dict(), code=1)
    return result.to_dict()


async def _audit(args: argparse.Namespace, settings: Settings) -> Any:
    from schema.audit import verify_configured

    report = await verify_configured(settings, checkpoint_files=args.checkpoints)
    if not report.ok:
        raise ExitWith(report.to_dict(), code=1)
    return report.to_dict()


async def _api(args: argparse.Namespace, settings: Settings) -> Any:
    from producers.http.app import serve_forever

    return await serve_forever(settings)


class ExitWith(Exception):
    """Print this JSON and exit with this code."""

    def __init__(self, payload: Any, *, code: int) -> None:
        super().__init__("exit")
        self.payload = payload
        self.code = code


HANDLERS: dict[str, Handler] = {
    "migrate": _migrate,
    "sessions": _sessions,
    "capture": _capture,
    "tasks": _tasks,
    "browse": _browse,
    "notifications": _notifications,
    "audit": _audit,
    "api": _api,
}


def print_json(payload: Any) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")
    sys.stdout.flush()


def error_line(code: str, message: str) -> int:
    sys.stdout.write(json.dumps({"error": {"code": code, "message": message}}) + "\n")
    return 2 if code in ("INVALID_INPUT", "CONFIG_ERROR") else 1


def run(handler: Handler, args: argparse.Namespace, settings: Settings) -> int:
    """Run one command handler: its JSON on stdout, or the error line and exit code."""
    try:
        print_json(asyncio.run(handler(args, settings)))
        return 0
    except ExitWith as done:
        print_json(done.payload)
        return done.code
    except BrowserSessionsError as err:
        return error_line(err.code, err.message)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        from schema.outages import describe, is_outage

        if is_outage(exc):
            return error_line("SERVICE_UNAVAILABLE", describe(exc))
        raise
