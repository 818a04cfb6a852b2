"""Find a Chromium executable and the launch flags that work headless in a closed network."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from schema.errors import ConfigError

HEADLESS_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)

_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")


def find_chromium(configured: str = "") -> str:
    """The Chromium to launch: the configured path, a system one, or Playwright's own."""
    if configured:
        if not os.access(configured, os.X_OK):
            raise ConfigError(
                f"BROWSER_SESSIONS_CHROMIUM_PATH: {configured} is not an executable file"
            )
        return configured
    for candidate in _CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    cache = Path(os.environ.get("PLAYWRIGHT_BROWSERS_PATH", "~/.cache/ms-playwright")).expanduser()
    for path in sorted(cache.glob("chromium-*/chrome-linux*/chrome"), reverse=True):
        if os.access(path, os.X_OK):
            return str(path)
    raise ConfigError(
        "no Chromium found: set BROWSER_SESSIONS_CHROMIUM_PATH, install Debian's chromium "
        "(apt-get install -y chromium) or run `playwright install chromium`"
    )
