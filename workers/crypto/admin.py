"""``browser-sessions keys ...``: two-phase root key rotation, retirement, shredding a user.

Runs where the workers' key provider is (never on the orchestrator side).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from schema.audit import AuditLog
from schema.db import connect
from schema.settings import Settings
from workers.crypto import keys, user_keys


async def _run(settings: Settings, action: str, **kwargs: Any) -> dict[str, Any]:
    provider = keys.provider_from_settings(settings)
    audit = AuditLog.from_settings(settings, side="workers", signer=provider.audit_signer())
    conn = await connect(settings.database_url)
    try:
        fn = getattr(user_keys, action)
        result: dict[str, Any] = await fn(conn, provider, audit=audit, **kwargs)
        return result
    finally:
        await conn.close()


async def rotate_root(settings: Settings) -> dict[str, Any]:
    """Both phases on one host with a writable key directory (the single-host shortcut)."""
    return await _run(settings, "rotate_root", actor_id="admin")


async def prepare_root(settings: Settings, *, directory: Path | None) -> dict[str, Any]:
    """Phase 1: a new root version file (in ``directory``, default the key directory) that
    nothing uses until it is activated."""
    result = await _run(settings, "prepare_root", directory=directory, actor_id="admin")
    version = result["prepared"].rpartition(":")[2]
    result["next"] = (
        f"copy {result['material']} into the key directory of every worker host (the "
        f"secret behind it), restart the workers, then run: keys rotate --activate {version}"
    )
    return result


async def activate_root(settings: Settings, *, version: int) -> dict[str, Any]:
    """Phase 2: switch new wraps to root version N and rewrap every user key under it."""
    provider = keys.provider_from_settings(settings)
    return await _run(
        settings, "activate_root", key_id=f"{provider.name}:{version}", actor_id="admin"
    )


async def retire_root(settings: Settings, *, version: int) -> dict[str, Any]:
    """Retire root key version N once no user key needs it; destroys its material here."""
    provider = keys.provider_from_settings(settings)
    return await _run(
        settings, "retire_root", key_id=f"{provider.name}:{version}", actor_id="admin"
    )


async def shred_user(settings: Settings, *, owner_id: str, actor_id: str) -> dict[str, Any]:
    """Destroy a user's key material: their sessions become unreadable and revoked."""
    return await _run(settings, "shred_user", owner_id=owner_id, actor_id=actor_id)
