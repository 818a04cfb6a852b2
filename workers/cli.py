"""The ``browser-sessions`` console script: the producers' commands plus the commands that
only a worker host runs (``worker``, ``keys``, ``demo``). JSON on stdout, errors as
``{"error": {"code": ..., "message": ...}}`` with a non-zero exit."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import Any

from producers import cli as producer_cli
from schema.errors import BrowserSessionsError
from schema.jobs import QUEUES, ProbeJob
from schema.settings import Settings


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="browser-sessions", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    producer_cli.add_commands(sub)

    w = sub.add_parser("worker", help="run dramatiq workers")
    w.add_argument("--queues", nargs="+", choices=QUEUES, default=list(QUEUES))
    w.add_argument("--processes", type=int, default=1)
    w.add_argument("--threads", type=int, default=None)

    k = sub.add_parser("keys", help="key management (workers' hosts only)").add_subparsers(
        dest="action", required=True
    )
    k.add_parser("rotate")
    sh = k.add_parser("shred")
    sh.add_argument("--user", required=True)
    sh.add_argument("--actor", default="admin")
    k.add_parser("retire").add_argument("--version", type=int, required=True)

    sub.add_parser(
        "scheduler",
        help="run the probe scheduler alone (browse workers also run it unless "
        "BROWSER_SESSIONS_PROBE_SCHEDULER=false)",
    )

    sub.add_parser("demo", help="the end-to-end demo")
    return p


async def _keys(args: argparse.Namespace, settings: Settings) -> Any:
    from workers.crypto.admin import retire_root, rotate_root, shred_user

    if args.action == "rotate":
        return await rotate_root(settings)
    if args.action == "retire":
        return await retire_root(settings, version=args.version)
    return await shred_user(settings, owner_id=args.user, actor_id=args.actor)


async def run_scheduler(settings: Settings) -> None:
    """The probe scheduler as a process of its own, until SIGTERM or SIGINT. Browse workers
    run the same loop (``PROBE_SCHEDULER=true``, the default); claims use ``SKIP LOCKED``,
    so this, or several replicas of it, alongside them is safe."""
    import signal

    from producers.enqueue import Enqueuer
    from schema.db import create_pool
    from workers.jobs.probes import ProbeScheduler

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    db = await create_pool(settings.database_url, min_size=1, max_size=2)
    enqueuer = Enqueuer(settings=settings)

    async def enqueue(job: ProbeJob) -> None:
        await enqueuer.send_async(job.kind, job.to_message())

    try:
        scheduler = ProbeScheduler(
            db=db, enqueue=enqueue, tick=settings.probe_tick, expiring_soon=settings.expiring_soon
        )
        async with scheduler.running():
            await stop.wait()
    finally:
        enqueuer.close()
        await db.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except BrowserSessionsError as err:
        return producer_cli.error_line(err.code, err.message)
    from schema.logs import configure_logging

    configure_logging(level=settings.log_level, fmt=settings.log_format)
    try:
        if args.command == "worker":
            from workers.runtime.launcher import exec_worker

            return exec_worker(
                settings, queues=args.queues, processes=args.processes, threads=args.threads
            )
        if args.command == "scheduler":
            asyncio.run(run_scheduler(settings))
            return 0
        if args.command == "demo":  # human progress lines, ending with PASSED or FAILED
            from workers.dev.demo import run_demo

            return 0 if asyncio.run(run_demo(settings)) else 1
    except BrowserSessionsError as err:
        return producer_cli.error_line(err.code, err.message)
    except KeyboardInterrupt:
        return 130
    handler = _keys if args.command == "keys" else producer_cli.HANDLERS[args.command]
    return producer_cli.run(handler, args, settings)


if __name__ == "__main__":
    sys.exit(main())
