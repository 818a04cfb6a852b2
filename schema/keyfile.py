"""Secure key files: created atomically with mode 0600, refused when others can read them.

Used by the workers' key provider (root, sealing and audit signing keys) and by producers
(their audit signing key only). Key bytes are never logged, and errors name the file, never
its contents.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path

from schema.errors import KeyError_

KEY_BYTES = 32
_FILE_MODE = 0o600
_DIR_MODE = 0o700


def ensure_key_dir(path: Path) -> Path:
    """Create ``path`` (mode 0700) if missing; refuse it if others may replace files in it.

    A sticky world-writable directory (a Kubernetes secret volume) is accepted: others
    cannot replace its files, and :func:`read_key_file` refuses files they planted.
    """
    path = path.expanduser()
    try:
        path.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
        info = path.stat()
    except OSError as exc:
        raise KeyError_(f"key directory {path} is not usable: {exc.strerror}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise KeyError_(f"key directory {path} is not a directory")
    if info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX:
        raise KeyError_(
            f"key directory {path} is writable by group or others "
            f"(mode {stat.S_IMODE(info.st_mode):04o}); chmod 700 it"
        )
    return path


def read_key_file(path: Path, *, size: int = KEY_BYTES) -> bytes:
    """Read exactly ``size`` bytes of key material from a file only its owner can read.

    The file must belong to this user or root and have no group or other permissions.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise KeyError_(f"key file {path} does not exist") from None
    except OSError as exc:
        raise KeyError_(f"key file {path} cannot be opened: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise KeyError_(f"key file {path} is not a regular file")
        if info.st_uid not in (os.geteuid(), 0):
            raise KeyError_(f"key file {path} is owned by another user (uid {info.st_uid})")
        if info.st_mode & 0o077:
            raise KeyError_(
                f"key file {path} is accessible by group or others "
                f"(mode {stat.S_IMODE(info.st_mode):04o}); chmod 600 it"
            )
        data = os.read(fd, size + 1)
    finally:
        os.close(fd)
    if len(data) != size:
        raise KeyError_(f"key file {path} must hold exactly {size} bytes")
    return data


def create_key_file(path: Path, material: bytes) -> bool:
    """Write ``material`` to ``path`` atomically with mode 0600; False if it already exists.

    The bytes go to a private temporary file that is hard-linked into place, so a concurrent
    reader never sees a partial key and two racing creators agree on one winner.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(tmp, flags, _FILE_MODE)
        try:
            os.fchmod(fd, _FILE_MODE)  # the umask may have narrowed it further; never widen
            os.write(fd, material)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        _fsync_dir(path.parent)
        return True
    except OSError as exc:
        raise KeyError_(f"key file {path} cannot be created: {exc.strerror}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def destroy_key_file(path: Path) -> bool:
    """Overwrite a key file's bytes in place with random data, then unlink it; False if this
    process may not (a read-only volume): the material must then be removed at its source."""
    try:
        fd = os.open(path, os.O_WRONLY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return False
    except OSError:
        return False
    try:
        size = os.fstat(fd).st_size
        os.write(fd, secrets.token_bytes(max(size, KEY_BYTES)))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        path.unlink()
    except OSError:
        return False
    _fsync_dir(path.parent)
    return True


def load_or_create_key(path: Path, *, size: int = KEY_BYTES) -> bytes:
    """The key in ``path``, created from fresh random bytes on first use."""
    ensure_key_dir(path.parent)
    if not path.exists():
        create_key_file(path, secrets.token_bytes(size))
    return read_key_file(path, size=size)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
