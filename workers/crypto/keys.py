"""Key providers: where the root key-encryption keys, the workers' audit signing key and
their X25519 sealing key come from.

:class:`KeyProvider` is the whole interface the rest of the code uses. Root key ids look
like ``"<provider>:<version>"`` (``"local:3"``) and are stored beside every wrapped user
key (``user_keys.root_key_id``), so several versions can be live during a rotation.

``LocalFileKeyProvider`` keeps everything in ``Settings.key_dir`` (mode 0700): root keys
``root-v1.key``, ``root-v2.key``... (a retired version's file is overwritten and unlinked,
leaving an empty ``root-vN.key.retired`` marker where the directory is writable; which
version new wraps use is recorded in the database's ``root_keys``, see
:mod:`workers.crypto.user_keys`), ``seal-v1.key`` (X25519 private key) and
``audit-workers.key`` (the workers' Ed25519 audit signing key). Files are created on first
use with mode 0600 and refused if group- or world-readable. Key bytes are never logged or
put in an error message.

Plugging in Vault transit or a cloud KMS: implement the root-key half of the protocol
against the service and keep the root key inside it.

- Vault transit (key ``browser-sessions-root``): ``wrap`` = ``transit/encrypt`` (the
  ``vault:vN:`` prefix of the ciphertext gives the key id ``vault:N``), ``unwrap`` =
  ``transit/decrypt``, ``rewrap`` = ``transit/rewrap`` (the plaintext never leaves Vault),
  ``prepare_root_version`` = ``transit/keys/<name>/rotate`` (every host sees the new
  version at once; ``wrap`` passes ``key_version``, so it is unused until activated),
  ``retire_root_version`` = raise ``min_decryption_version`` and trim the old version,
  ``list_root_keys`` = ``transit/keys/<name>``. Bind ``aad``
  with the key's associated-data / derivation ``context`` so a wrapped key cannot be
  replayed for another user.
- AWS KMS / GCP Cloud KMS: ``Encrypt`` / ``Decrypt`` / ``ReEncrypt`` with ``aad`` as the
  encryption context (AWS) or additional authenticated data (GCP); key versions are the
  KMS key versions (GCP) or one key per version behind an alias (AWS); retiring disables
  the version.

The audit key and the sealing private key are used on every request and must be available
synchronously: in those deployments they come from a secret mount (Kubernetes Secret,
Vault agent template) as files in ``key_dir`` under the same 0600 rules, so
``audit_signer`` and ``seal_private_key`` keep their local-file implementation.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from schema.audit import AuditSigner, load_signer
from schema.errors import ConfigError, DecryptFailed, KeyError_
from schema.keyfile import create_key_file, destroy_key_file, ensure_key_dir, read_key_file
from schema.sealing import public_bytes
from schema.settings import Settings

_ROOT_FILE = re.compile(r"^root-v([1-9][0-9]*)\.key(\.retired)?$")
_SEAL_FILE = re.compile(r"^seal-v([1-9][0-9]*)\.key$")
_WRAP_DOMAIN = b"browser-sessions/root-wrap/v1\x00"
_NONCE = 12


@dataclass(frozen=True)
class RootKeyVersion:
    key_id: str
    version: int
    retired: bool
    current: bool


@runtime_checkable
class KeyProvider(Protocol):
    """Root key-encryption keys (wrap / unwrap / rewrap, versions) plus the workers' other keys."""

    name: str

    async def current_root_key_id(self) -> str:
        """The version to start from when the database records no active version yet
        (created on first use by providers that can). Afterwards the database decides."""
        ...

    async def list_root_keys(self) -> list[RootKeyVersion]: ...

    async def prepare_root_version(
        self, *, above: int = 0, directory: Path | None = None
    ) -> tuple[str, str]:
        """Create a new root key version numbered above ``above`` and every version this
        provider knows, without using it; returns (key id, where its material is: for the
        local provider the file to copy to every worker's key directory)."""
        ...

    async def new_root_version(self) -> str:
        """:meth:`prepare_root_version` where this provider reads keys from."""
        ...

    async def retire_root_version(self, key_id: str) -> bool:
        """Destroy a version's key material where this provider holds it (overwrite and
        unlink); False if it cannot here (a read-only secret volume: remove it at the
        source). Callers check that nothing still needs it."""
        ...

    async def wrap(
        self, plaintext: bytes, *, aad: bytes, key_id: str | None = None
    ) -> tuple[str, bytes]:
        """Encrypt key material under root key ``key_id`` (default: :meth:`current_root_key_id`);
        returns (key id, wrapped)."""
        ...

    async def unwrap(self, key_id: str, wrapped: bytes, *, aad: bytes) -> bytes:
        """Decrypt; ``DecryptFailed`` on any mismatch, ``KeyError_`` for an unusable key id."""
        ...

    async def rewrap(
        self, key_id: str, wrapped: bytes, *, aad: bytes, target: str | None = None
    ) -> tuple[str, bytes]:
        """Move wrapped material to root key ``target``."""
        ...

    def audit_signer(self) -> AuditSigner:
        """The workers' audit signing key (Ed25519; decrypts nothing)."""
        ...

    def seal_key_id(self) -> str: ...

    def seal_public_key(self) -> bytes: ...

    def seal_private_key(self, key_id: str) -> X25519PrivateKey:
        """The X25519 private key that opens blobs sealed to ``key_id``."""
        ...


class LocalFileKeyProvider:
    """Key files in one private directory. For development and single-host deployments."""

    name = "local"

    def __init__(self, *, key_dir: Path) -> None:
        self.key_dir = ensure_key_dir(key_dir.expanduser())
        self._roots: dict[int, bytes] = {}
        self._seals: dict[int, X25519PrivateKey] = {}
        self._audit: AuditSigner | None = None

    def __repr__(self) -> str:
        return f"LocalFileKeyProvider(key_dir={str(self.key_dir)!r})"

    # -- root keys -----------------------------------------------------------------------

    def _root_path(self, version: int, *, retired: bool = False) -> Path:
        return self.key_dir / f"root-v{version}.key{'.retired' if retired else ''}"

    def _scan_roots(self) -> dict[int, bool]:
        """version -> retired, from the directory listing."""
        found: dict[int, bool] = {}
        for entry in os.listdir(self.key_dir):
            match = _ROOT_FILE.match(entry)
            if match:
                version = int(match[1])
                found[version] = found.get(version, True) and bool(match[2])
        return found

    def _key_id(self, version: int) -> str:
        return f"{self.name}:{version}"

    def _version_of(self, key_id: str) -> int:
        prefix, _, number = key_id.partition(":")
        if prefix != self.name or not number.isdigit() or int(number) < 1:
            raise KeyError_(f"root key id {key_id!r} does not belong to the local provider")
        return int(number)

    def _current_version(self) -> int:
        roots = self._scan_roots()
        active = [v for v, retired in roots.items() if not retired]
        if active:
            return max(active)
        return self._create_root(max(roots, default=0) + 1)

    def _create_root(self, version: int) -> int:
        create_key_file(self._root_path(version), AESGCM.generate_key(bit_length=256))
        return version

    def _root_key(self, version: int) -> bytes:
        path = self._root_path(version)
        if not path.exists():
            self._roots.pop(version, None)
            if self._root_path(version, retired=True).exists():
                raise KeyError_(f"root key {self._key_id(version)} is retired")
            raise KeyError_(
                f"root key {self._key_id(version)} is missing from the key directory: "
                "distribute every prepared root key version to every worker"
            )
        key = self._roots.get(version)
        if key is None:
            key = self._roots[version] = read_key_file(path)
        return key

    async def current_root_key_id(self) -> str:
        return self._key_id(self._current_version())

    async def list_root_keys(self) -> list[RootKeyVersion]:
        current = self._current_version()
        return [
            RootKeyVersion(self._key_id(v), v, retired, v == current)
            for v, retired in sorted(self._scan_roots().items())
        ]

    async def prepare_root_version(
        self, *, above: int = 0, directory: Path | None = None
    ) -> tuple[str, str]:
        target = ensure_key_dir(directory) if directory is not None else self.key_dir
        known = set(self._scan_roots()) | {
            int(m[1]) for m in map(_ROOT_FILE.match, os.listdir(target)) if m is not None
        }
        version = max(known | {above}) + 1
        while not create_key_file(
            target / f"root-v{version}.key", AESGCM.generate_key(bit_length=256)
        ):  # another process took this number: take the next one
            version += 1
        return self._key_id(version), str(target / f"root-v{version}.key")

    async def new_root_version(self) -> str:
        return (await self.prepare_root_version())[0]

    async def retire_root_version(self, key_id: str) -> bool:
        version = self._version_of(key_id)
        self._roots.pop(version, None)
        destroyed = False
        tombstone = self._root_path(version, retired=True)
        for path in (self._root_path(version), tombstone):  # (older releases renamed it)
            if path.exists() and path.stat().st_size:
                destroyed = destroy_key_file(path) or destroyed
        with contextlib.suppress(OSError):  # an empty marker keeps the number taken
            tombstone.touch(mode=0o600)
        return destroyed

    def _aad(self, key_id: str, aad: bytes) -> bytes:
        return _WRAP_DOMAIN + key_id.encode() + b"\x00" + aad

    async def wrap(
        self, plaintext: bytes, *, aad: bytes, key_id: str | None = None
    ) -> tuple[str, bytes]:
        version = self._current_version() if key_id is None else self._version_of(key_id)
        key_id = self._key_id(version)
        nonce = os.urandom(_NONCE)
        sealed = AESGCM(self._root_key(version)).encrypt(nonce, plaintext, self._aad(key_id, aad))
        return key_id, nonce + sealed

    async def unwrap(self, key_id: str, wrapped: bytes, *, aad: bytes) -> bytes:
        key = self._root_key(self._version_of(key_id))
        try:
            return AESGCM(key).decrypt(wrapped[:_NONCE], wrapped[_NONCE:], self._aad(key_id, aad))
        except (InvalidTag, ValueError):
            raise DecryptFailed("wrapped key failed authentication under its root key") from None

    async def rewrap(
        self, key_id: str, wrapped: bytes, *, aad: bytes, target: str | None = None
    ) -> tuple[str, bytes]:
        return await self.wrap(await self.unwrap(key_id, wrapped, aad=aad), aad=aad, key_id=target)

    # -- audit and sealing keys --------------------------------------------------------

    def audit_signer(self) -> AuditSigner:
        if self._audit is None:
            self._audit = load_signer(self.key_dir, "workers")
        return self._audit

    def _seal_version(self) -> int:
        versions = [
            int(m[1]) for m in map(_SEAL_FILE.match, os.listdir(self.key_dir)) if m is not None
        ]
        if versions:
            return max(versions)
        create_key_file(
            self.key_dir / "seal-v1.key", X25519PrivateKey.generate().private_bytes_raw()
        )
        return 1

    def _seal_key(self, version: int) -> X25519PrivateKey:
        key = self._seals.get(version)
        if key is None:
            raw = read_key_file(self.key_dir / f"seal-v{version}.key")
            key = self._seals[version] = X25519PrivateKey.from_private_bytes(raw)
        return key

    def seal_key_id(self) -> str:
        return f"{self.name}-seal:{self._seal_version()}"

    def seal_public_key(self) -> bytes:
        return public_bytes(self._seal_key(self._seal_version()))

    def seal_private_key(self, key_id: str) -> X25519PrivateKey:
        prefix, _, number = key_id.partition(":")
        if prefix != f"{self.name}-seal" or not number.isdigit() or int(number) < 1:
            raise KeyError_(f"seal key id {key_id!r} does not belong to the local provider")
        return self._seal_key(int(number))


def provider_from_settings(settings: Settings) -> KeyProvider:
    """The key provider named by ``Settings.key_provider``."""
    if settings.key_provider == "local":
        return LocalFileKeyProvider(key_dir=settings.key_dir)
    raise ConfigError(f"unknown key provider {settings.key_provider!r}")
