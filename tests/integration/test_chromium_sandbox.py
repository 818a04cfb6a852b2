"""The browser a real worker launches: sandboxed, no secrets in its environment, and (when the
worker is root) an unprivileged user that cannot read the key files."""

from __future__ import annotations

import dataclasses
import os
import pwd
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from schema.settings import Settings
from tests.support.waiting import wait_for
from workers.browser.chromium import browser_environment
from workers.dev.processes import WorkerProcess, free_port, run_worker

pytestmark = pytest.mark.integration

SECRET = "s3cret-password-canary"
EXTRA_SECRETS = {
    "MIGRATE_DATABASE_URL": f"postgresql://owner:{SECRET}@db.example/x",
    "AWS_SECRET_ACCESS_KEY": SECRET,
}


@pytest.fixture(scope="module")
def worker(
    worker_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    settings = dataclasses.replace(
        worker_settings,
        metrics_port=free_port(),
        health_port=free_port(),
        queue_prefix=worker_settings.queue_prefix + "sandbox.",
        api_token=SECRET,
    )
    log_path = tmp_path_factory.mktemp("sandbox") / "worker.log"
    with run_worker(settings, ["browse"], log_path, **EXTRA_SECRETS) as running:
        yield running


def _read(pid: int, name: str) -> list[bytes]:
    return Path(f"/proc/{pid}/{name}").read_bytes().split(b"\0")


def _uid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError("no Uid line")


def _browsers(worker: WorkerProcess) -> list[int]:
    return worker.chromium_pids()


async def _launched(worker: WorkerProcess) -> list[int]:
    async def some() -> bool:
        return bool(_browsers(worker))

    await wait_for(some, what="the pool's Chromium")
    return _browsers(worker)


async def test_chromium_environment_has_no_secrets(worker: WorkerProcess) -> None:
    for pid in await _launched(worker):
        environ = _read(pid, "environ")
        names = {entry.split(b"=", 1)[0].decode() for entry in environ if b"=" in entry}
        assert not {n for n in names if n.startswith("BROWSER_SESSIONS_")}, names
        assert not names & set(EXTRA_SECRETS), names
        assert SECRET.encode() not in b"\0".join(environ)
        # Of the worker's own variables, only the harmless ones get through (the Debian
        # launcher script adds a few of its own, such as CHROMIUM_FLAGS).
        worker_environ = _read(worker.process.pid, "environ")
        worker_names = {e.split(b"=", 1)[0].decode() for e in worker_environ if b"=" in e}
        inherited = names & worker_names - {"PWD"}  # every shell sets PWD itself
        assert inherited <= set(browser_environment({n: "x" for n in inherited})), inherited
        assert SECRET.encode() in b"\0".join(worker_environ)  # so a leak would show


async def test_chromium_runs_in_its_sandbox(worker: WorkerProcess) -> None:
    for pid in await _launched(worker):
        assert b"--no-sandbox" not in _cmdline(pid)
        own_namespace = os.readlink(f"/proc/{pid}/ns/user")
        zygotes = [
            child
            for child in worker.descendants()
            if b" --type=zygote" in _cmdline(child) and _ppid(child) == pid
        ]
        assert zygotes, "no zygote below the browser"
        # The sandboxed zygote lives in a user namespace of its own; without the sandbox it
        # shares the browser's.
        sandboxed = [z for z in zygotes if os.readlink(f"/proc/{z}/ns/user") != own_namespace]
        assert sandboxed, "no zygote in a sandbox namespace"


async def test_chromium_may_not_widen_its_webrtc_policy(worker: WorkerProcess) -> None:
    """WebRTC UDP goes through the guard proxy only, and a page or a policy cannot widen it
    (the force flag); both flags are on a real pool browser's command line."""
    for pid in await _launched(worker):
        cmdline = _cmdline(pid)
        assert b"--webrtc-ip-handling-policy=disable_non_proxied_udp" in cmdline
        assert b"--force-webrtc-ip-handling-policy" in cmdline


@pytest.mark.skipif(os.geteuid() != 0, reason="the worker is not root: Chromium runs as its user")
async def test_root_worker_runs_chromium_as_an_unprivileged_user(
    worker: WorkerProcess, worker_settings: Settings
) -> None:
    key_files = sorted(p for p in worker_settings.key_dir.iterdir() if p.is_file())
    assert key_files, "the worker made no keys"
    for pid in await _launched(worker):
        uid = _uid(pid)
        assert uid != 0
        assert pwd.getpwuid(uid).pw_name == worker_settings.chromium_user
        for path in key_files:
            denied = _open_as(uid, path)
            assert denied.returncode != 0 and b"Permission denied" in denied.stderr, path


def _open_as(uid: int, path: Path) -> subprocess.CompletedProcess[bytes]:
    """What ``uid`` gets when it opens ``path``."""
    return subprocess.run(
        ["setpriv", f"--reuid={uid}", "--regid=65534", "--clear-groups", "cat", str(path)],
        capture_output=True,
        timeout=10,
    )


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return b""


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return -1
