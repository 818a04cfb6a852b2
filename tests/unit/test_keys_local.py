"""The local-file key provider and key-file helper: modes, versions, wrap binding, sealing."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from schema.audit import AuditKeys, load_signer
from schema.errors import DecryptFailed, KeyError_
from schema.keyfile import create_key_file, load_or_create_key, read_key_file
from schema.sealing import open_sealed, seal, sealed_key_id
from schema.settings import Settings
from workers.crypto.keys import KeyProvider, LocalFileKeyProvider, provider_from_settings


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    return tmp_path / "keys"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_keys_are_created_on_first_use_private(keys: Path) -> None:
    provider = LocalFileKeyProvider(key_dir=keys)
    assert isinstance(provider, KeyProvider)
    assert mode(keys) == 0o700
    assert await provider.current_root_key_id() == "local:1"
    provider.audit_signer()
    provider.seal_public_key()
    names = sorted(os.listdir(keys))
    assert names == ["audit-workers.key", "audit-workers.pub", "root-v1.key", "seal-v1.key"]
    for name in names:
        assert mode(keys / name) == (0o644 if name.endswith(".pub") else 0o600)
        assert (keys / name).stat().st_size == 32


@pytest.mark.parametrize("name", ["root-v1.key", "audit-workers.key", "seal-v1.key"])
@pytest.mark.parametrize("bits", [0o640, 0o604])
async def test_group_or_world_readable_key_files_are_refused(
    keys: Path, name: str, bits: int
) -> None:
    provider = LocalFileKeyProvider(key_dir=keys)
    key_id, wrapped = await provider.wrap(b"k" * 32, aad=b"a")
    provider.audit_signer()
    provider.seal_public_key()
    (keys / name).chmod(bits)
    fresh = LocalFileKeyProvider(key_dir=keys)
    with pytest.raises(KeyError_, match="accessible by group or others") as info:
        if name == "root-v1.key":
            await fresh.unwrap(key_id, wrapped, aad=b"a")
        elif name == "audit-workers.key":
            fresh.audit_signer()
        else:
            fresh.seal_public_key()
    assert info.value.code == "KEY_ERROR"


def test_group_writable_key_dir_is_refused(keys: Path) -> None:
    keys.mkdir(mode=0o700)
    keys.chmod(0o770)
    with pytest.raises(KeyError_, match="writable by group or others"):
        LocalFileKeyProvider(key_dir=keys)


def test_key_file_helper(tmp_path: Path) -> None:
    path = tmp_path / "x.key"
    assert create_key_file(path, b"a" * 32) is True
    assert create_key_file(path, b"b" * 32) is False  # first creator wins
    assert read_key_file(path) == b"a" * 32
    assert load_or_create_key(path) == b"a" * 32
    assert [p.name for p in tmp_path.iterdir()] == ["x.key"]  # no temp files left
    short = tmp_path / "short.key"
    create_key_file(short, b"abc")
    with pytest.raises(KeyError_, match="exactly 32 bytes") as info:
        read_key_file(short)
    assert "abc" not in str(info.value)
    with pytest.raises(KeyError_, match="does not exist"):
        read_key_file(tmp_path / "missing.key")


async def test_wrap_is_bound_to_aad_and_key_id(keys: Path) -> None:
    provider = LocalFileKeyProvider(key_dir=keys)
    key_id, wrapped = await provider.wrap(b"secret-material", aad=b"owner-a|1")
    assert b"secret-material" not in wrapped
    assert await provider.unwrap(key_id, wrapped, aad=b"owner-a|1") == b"secret-material"
    with pytest.raises(DecryptFailed):
        await provider.unwrap(key_id, wrapped, aad=b"owner-b|1")
    await provider.new_root_version()
    with pytest.raises(DecryptFailed):
        await provider.unwrap("local:2", wrapped, aad=b"owner-a|1")
    with pytest.raises(KeyError_):
        await provider.unwrap("vault:1", wrapped, aad=b"owner-a|1")


async def test_versions_rewrap_and_retire(keys: Path) -> None:
    provider = LocalFileKeyProvider(key_dir=keys)
    v1, wrapped = await provider.wrap(b"m" * 32, aad=b"a")
    assert v1 == "local:1"
    assert await provider.new_root_version() == "local:2"
    assert await provider.current_root_key_id() == "local:2"
    v2, rewrapped = await provider.rewrap(v1, wrapped, aad=b"a")
    assert v2 == "local:2" and rewrapped != wrapped
    material = (keys / "root-v1.key").read_bytes()
    os.link(keys / "root-v1.key", keys.parent / "same-inode")
    assert await provider.retire_root_version("local:1") is True
    assert not (keys / "root-v1.key").exists()
    assert (keys / "root-v1.key.retired").stat().st_size == 0  # a marker, no material
    assert (keys.parent / "same-inode").read_bytes() != material  # overwritten in place
    with pytest.raises(KeyError_, match="retired"):
        await provider.unwrap(v1, wrapped, aad=b"a")
    assert await provider.unwrap(v2, rewrapped, aad=b"a") == b"m" * 32
    listed = [(k.key_id, k.retired, k.current) for k in await provider.list_root_keys()]
    assert listed == [("local:1", True, False), ("local:2", False, True)]
    # A new process sees the same versions and never reuses a retired number.
    other = LocalFileKeyProvider(key_dir=keys)
    assert await other.new_root_version() == "local:3"
    await other.retire_root_version("local:3")
    assert await provider.current_root_key_id() == "local:2"  # highest not retired


async def test_workers_and_producers_sign_with_keys_of_their_own(keys: Path) -> None:
    provider = LocalFileKeyProvider(key_dir=keys)
    workers, producers = provider.audit_signer(), load_signer(keys, "producers")
    assert workers.key_id == load_signer(keys, "workers").key_id
    assert workers.key_id.startswith("ed25519:workers:")
    assert producers.key_id.startswith("ed25519:producers:")
    assert workers.public_key != producers.public_key
    # A verifier pins both from their public halves alone.
    (keys / "audit-workers.key").unlink()
    (keys / "audit-producers.key").unlink()
    assert set(AuditKeys.from_key_dir(keys).public) == {workers.key_id, producers.key_id}


def test_sealing_key_opens_what_producers_seal(keys: Path) -> None:
    worker = LocalFileKeyProvider(key_dir=keys)
    key_id, public = worker.seal_key_id(), worker.seal_public_key()
    assert key_id == "local-seal:1" and len(public) == 32
    blob = seal(public, key_id, b"state", b"aad")
    restarted = LocalFileKeyProvider(key_dir=keys)
    assert restarted.seal_public_key() == public
    assert open_sealed(restarted.seal_private_key(sealed_key_id(blob)), blob, b"aad") == b"state"
    with pytest.raises(KeyError_):
        restarted.seal_private_key("local:1")


def test_repr_never_shows_key_material(keys: Path) -> None:
    provider = LocalFileKeyProvider(key_dir=keys)
    material = provider.audit_signer().public_key
    assert material.hex() not in repr(provider) and str(material) not in repr(provider)
    assert os.fspath(keys) in repr(provider)


def test_sticky_shared_dir_is_accepted_but_foreign_files_are_not(tmp_path: Path) -> None:
    shared = tmp_path / "secrets"
    shared.mkdir()
    shared.chmod(0o1777)  # like a Kubernetes secret volume
    assert load_or_create_key(shared / "audit.key")
    if os.geteuid() != 0:
        pytest.skip("needs root to give a file to another user")
    planted = shared / "root-v9.key"
    create_key_file(planted, b"p" * 32)
    os.chown(planted, 65534, 65534)
    with pytest.raises(KeyError_, match="owned by another user"):
        read_key_file(planted)


def test_provider_from_settings_is_the_local_provider(keys: Path) -> None:
    provider = provider_from_settings(Settings(key_dir=keys))
    assert isinstance(provider, LocalFileKeyProvider) and provider.key_dir == keys
