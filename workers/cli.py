"""The ``browser-sessions`` console script: the producers' commands plus the commands that
only a worker host runs (``worker``, ``keys``, ``demo``). JSON on stdout, errors as
``{"error": {"code": ..., "message": ...}}`` with a non-zero exit."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from producers import cli as producer_cli
from schema.errors import BrowserSessionsError, ConfigError, InvalidInput
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
    rot = k.add_parser(
        "rotate",
        help="root key rotation: --prepare, distribute the file, then --activate N "
        "(no option: both at once, single host with a writable key directory)",
    )
    phase = rot.add_mutually_exclusive_group()
    phase.add_argument(
        "--prepare", action="store_true", help="create the next root key version, unused"
    )
    phase.add_argument(
        "--activate", type=int, metavar="N", help="use root key version N and rewrap user keys"
    )
    rot.add_argument(
        "--out", type=Path, help="with --prepare: directory for the new key file (0700)"
    )
    sh = k.add_parser("shred")
    sh.add_argument("--user", required=True)
    sh.add_argument("--actor", default="admin")
    k.add_parser("retire").add_argument("--version", type=int, required=True)

    sub.add_parser(
        "scheduler",
        help="run the probe scheduler alone (browse workers also run it unless "
        "BROWSER_SESSIONS_PROBE_SCHEDULER=false)",
    )

    d = sub.add_parser("demo", help="the end-to-end demo")
    d.add_argument(
        "--serve", action="store_true", help="keep it running afterwards and print the page link"
    )
    return p


async def _keys(args: argparse.Namespace, settings: Settings) -> Any:
    from workers.crypto.admin import (
        activate_root,
        prepare_root,
        retire_root,
        rotate_root,
        shred_user,
    )

    if args.action == "rotate" and args.prepare:
        return await prepare_root(settings, directory=args.out)
    if args.action == "rotate" and args.activate is not None:
        return await activate_root(settings, version=args.activate)
    if args.action == "rotate":
        if args.out is not None:
            raise InvalidInput("--out goes with --prepare")
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
            from workers.runtime.launcher import run_worker

            return run_worker(
                settings, queues=args.queues, processes=args.processes, threads=args.threads
            )
        if args.command == "scheduler":
            asyncio.run(run_scheduler(settings))
            return 0
        if args.command == "demo":  # human progress lines, ending with PASSED or FAILED
            try:
                from workers.dev.demo import run_demo
            except ModuleNotFoundError as exc:  # the worker image ships the runtime only
                if not (exc.name or "").startswith("workers.dev"):
                    raise
                raise ConfigError(
                    "the demo is development tooling, not installed here: run it from a checkout"
                ) from None

            return 0 if asyncio.run(run_demo(settings, serve=args.serve)) else 1
    except BrowserSessionsError as err:
        return producer_cli.error_line(err.code, err.message)
    except KeyboardInterrupt:
        return 130
    handler = _keys if args.command == "keys" else producer_cli.HANDLERS[args.command]
    return producer_cli.run(handler, args, settings)


if __name__ == "__main__":
    sys.exit(main())
