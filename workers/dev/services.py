"""Private, throwaway Postgres and RabbitMQ servers for fault injection.

``make faults`` stops and starts its database and broker under load; it never touches the
servers other programs use. Each server here lives in a temporary directory on free ports,
is started and stopped by the harness, and is removed at the end. They need the local
server binaries (Debian's ``postgresql`` and ``rabbitmq-server`` packages, which
``make test`` installs); as root, Postgres runs as the ``postgres`` user.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

from schema.errors import ConfigError
from workers.dev.processes import free_port

START_TIMEOUT_S = 60.0


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _wait_port(port: int, *, up: bool, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while _port_open(port) != up:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not {'start' if up else 'stop'} in {timeout:g}s")
        time.sleep(0.1)


def _as_postgres(argv: list[str]) -> list[str]:
    """Postgres refuses to run as root: run its tools as the ``postgres`` user then."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *argv]
    return argv


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    path = found[0] if found else shutil.which(name)
    if not path:
        raise ConfigError(f"{name} not found: install PostgreSQL's server package")
    return path


class PrivatePostgres:
    """A Postgres cluster of its own: ``url``, :meth:`stop`, :meth:`start`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _ctl(self, *args: str) -> None:
        subprocess.run(
            _as_postgres([_pg_bin("pg_ctl"), "-D", str(self.data), "-w", *args]),
            check=True,
            stdout=subprocess.DEVNULL,
            timeout=START_TIMEOUT_S,
        )

    def init(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
        subprocess.run(
            _as_postgres(
                [_pg_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres"]
            ),
            check=True,
            stdout=subprocess.DEVNULL,
            timeout=START_TIMEOUT_S,
        )

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c max_connections=200"
        )
        self._ctl("-l", str(self.root / "postgres.log"), "-o", options, "start")

    def stop(self) -> None:
        """A fast shutdown: open connections are cut, as in a restart or a failover."""
        self._ctl("-m", "fast", "stop")

    @classmethod
    @contextlib.contextmanager
    def running(cls) -> Iterator[PrivatePostgres]:
        with _temporary("bs-faults-pg-") as root:
            root.chmod(0o755)
            server = cls(root)
            server.init()
            with _started(server):
                yield server


def _rabbitmq_server() -> str:
    for path in ("/usr/lib/rabbitmq/bin/rabbitmq-server", shutil.which("rabbitmq-server")):
        if path and os.access(path, os.X_OK):
            return path
    raise ConfigError("rabbitmq-server not found: install RabbitMQ's server package")


class PrivateRabbit:
    """A RabbitMQ node of its own (own node name, ports, data and log directories, no
    plugins): ``url``, :meth:`stop`, :meth:`start`. Its data survives a stop/start, like a
    broker restart; durable queues and persistent messages come back."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.dist_port = free_port()
        self.node = f"bsfaults{os.getpid()}@localhost"
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"
        self._process: subprocess.Popen[bytes] | None = None
        for sub in ("mnesia", "log", "home"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        (root / "enabled_plugins").write_text("[].\n")
        (root / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\nloopback_users = none\n"
        )

    def _env(self) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin:/usr/sbin"),
            "HOME": str(self.root / "home"),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.root / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.root / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.root / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(self.root / "rabbitmq"),
            "RABBITMQ_CONF_ENV_FILE": str(self.root / "no-env-file"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }

    def start(self) -> None:
        with (self.root / "server.log").open("ab") as log:
            self._process = subprocess.Popen(
                [_rabbitmq_server()],
                env=self._env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _wait_port(self.port, up=True, timeout=START_TIMEOUT_S, what="RabbitMQ")

    def stop(self) -> None:
        """A clean broker stop (SIGTERM): connections close, consumers see it at once."""
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=START_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        _wait_port(self.port, up=False, timeout=10, what="RabbitMQ")

    @classmethod
    @contextlib.contextmanager
    def running(cls) -> Iterator[PrivateRabbit]:
        with _temporary("bs-faults-mq-") as root, _started(cls(root)) as server:
            yield server


@contextlib.contextmanager
def _temporary(prefix: str) -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


S = TypeVar("S", PrivatePostgres, PrivateRabbit)


@contextlib.contextmanager
def _started(server: S) -> Iterator[S]:
    """Started on entry, stopped on exit whatever happened."""
    server.start()
    try:
        yield server
    finally:
        with contextlib.suppress(Exception):
            server.stop()
