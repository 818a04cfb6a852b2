"""Size limits that producers enforce on input and workers enforce again when they use it."""

from __future__ import annotations

from typing import Final

LOGIN_GLOB_MAX_CHARS: Final = 1000
LOGIN_GLOB_MAX_WILDCARDS: Final = 16
"""``*`` characters in a login-URL glob (``**`` counts as two)."""
