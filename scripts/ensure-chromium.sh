#!/usr/bin/env bash
# The dashboard's browser test drives Debian's chromium (never a downloaded browser).
# Installs it from Debian's packages when it is missing and we may (root, or sudo without a
# password); otherwise says how, and the browser test fails with the same advice.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" = 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
else
    echo "fedfort: chromium is not installed; run: sudo apt-get install chromium" >&2
    exit 0
fi
echo "fedfort: installing Debian's chromium for the dashboard browser test" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
