#!/usr/bin/env bash
# The browser the report's browser test drives: Debian's chromium at /usr/bin/chromium.
# Idempotent: returns at once when it is already there. Installing needs root (CI runs as
# root); without root it says how and exits 0, and the browser test is skipped (unless CI
# is set, where it fails).
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "install_browser.sh: /usr/bin/chromium is missing and installing it needs root:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y chromium" >&2
    echo "  (the browser test is skipped without it)" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# Without the recommended packages (399 -> 239 to install on a Debian 12 with nothing
# installed: Mesa's GL drivers and LLVM, printing, U2F): headless chromium renders the
# report without them (the browser test passed on exactly this set, 2026-11-27).
apt-get install -y -q --no-install-recommends chromium
