#!/usr/bin/env bash
# Installs the Debian packages some tests drive as real programs, when they are missing:
#   chromium   the GraphiQL and usage-page browser tests (Playwright drives /usr/bin/chromium;
#              `playwright install` is never run)
#   pgbouncer  tests/test_pgbouncer.py (a real PgBouncer in transaction mode)
# Usage: tests/system_setup.sh [PACKAGE ...] (default: all of them). Called by scripts/test and,
# when /usr/bin/chromium is missing, by the browser test itself.
set -euo pipefail
declare -A BINARY=([chromium]=/usr/bin/chromium [pgbouncer]=/usr/sbin/pgbouncer)
wanted=("$@")
if [ ${#wanted[@]} -eq 0 ]; then
    wanted=(chromium pgbouncer)
fi
missing=()
for package in "${wanted[@]}"; do
    if [ ! -x "${BINARY[$package]}" ]; then
        missing+=("$package")
    fi
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "system_setup: no apt-get here; install ${missing[*]} by hand" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo -n"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
for package in "${missing[@]}"; do
    "${BINARY[$package]}" --version | head -1
done
