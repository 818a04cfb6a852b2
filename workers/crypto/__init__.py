"""Encryption of saved session states: the envelope format, key providers, per-user keys."""

from workers.crypto.envelope import EncryptedState, decrypt_state, encrypt_state
from workers.crypto.keys import KeyProvider, LocalFileKeyProvider, provider_from_settings
from workers.crypto.user_keys import retire_root, rotate_root, shred_user

__all__ = [
    "EncryptedState",
    "KeyProvider",
    "LocalFileKeyProvider",
    "decrypt_state",
    "encrypt_state",
    "provider_from_settings",
    "retire_root",
    "rotate_root",
    "shred_user",
]
