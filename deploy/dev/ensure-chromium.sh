#!/usr/bin/env bash
# Make sure a Chromium is there: the configured path, a system one, Playwright's own;
# else Debian's package (as root), else Playwright's download; else say what to do.
set -euo pipefail
# As root, the workers run Chromium as an unprivileged system user (Chromium's sandbox does not
# run as root, and that user cannot read the key files): make sure it exists.
CHROMIUM_USER="${BROWSER_SESSIONS_CHROMIUM_USER:-bs-chromium}"
if [ "$(id -u)" = 0 ] && ! id -u "$CHROMIUM_USER" >/dev/null 2>&1; then
  useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin \
    "$CHROMIUM_USER"
  echo "chromium: created the unprivileged user $CHROMIUM_USER"
fi
found() { echo "chromium: $1"; exit 0; }
if [ -n "${BROWSER_SESSIONS_CHROMIUM_PATH:-}" ]; then
  [ -x "$BROWSER_SESSIONS_CHROMIUM_PATH" ] && found "$BROWSER_SESSIONS_CHROMIUM_PATH"
  echo "BROWSER_SESSIONS_CHROMIUM_PATH=$BROWSER_SESSIONS_CHROMIUM_PATH is not executable" >&2; exit 1
fi
for c in /usr/bin/chromium /usr/bin/chromium-browser /usr/bin/google-chrome; do
  [ -x "$c" ] && found "$c"
done
for c in "${PLAYWRIGHT_BROWSERS_PATH:-$HOME/.cache/ms-playwright}"/chromium-*/chrome-linux*/chrome; do
  [ -x "$c" ] && found "$c"
done
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "chromium: installing Debian's chromium package"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  [ -x /usr/bin/chromium ] && found /usr/bin/chromium
fi
if [ -x .venv/bin/playwright ] && .venv/bin/playwright install chromium; then
  echo "chromium: installed by playwright"; exit 0
fi
echo "No Chromium found. Install one (apt-get install chromium, or 'playwright install chromium')" \
     "or set BROWSER_SESSIONS_CHROMIUM_PATH." >&2
exit 1
