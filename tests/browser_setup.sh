#!/usr/bin/env bash
# Installs Debian's Chromium for the GraphiQL browser test (tests/test_graphiql_browser.py).
# Called by .ci/run and, when /usr/bin/chromium is missing, by the test itself. Playwright
# drives this Chromium (executable_path); `playwright install` is never run.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "browser_setup: no apt-get here; install Chromium at /usr/bin/chromium by hand" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo -n"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq chromium >/dev/null
/usr/bin/chromium --version
