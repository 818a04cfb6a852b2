#!/usr/bin/env bash
# promtool (Debian package prometheus) for the rule and config checks in the tests.
set -euo pipefail
command -v promtool >/dev/null && { echo "promtool: $(command -v promtool)"; exit 0; }
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "promtool: installing Debian's prometheus package"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  command -v promtool >/dev/null && { echo "promtool: installed"; exit 0; }
fi
echo "promtool not found: apt-get install prometheus (or put promtool on PATH)" >&2
exit 1
