#!/usr/bin/env bash
# Usage: ensure-debian-package.sh PACKAGE PROBE WHY
# Some tests drive programs from Debian's packages (never a downloaded build): chromium for the
# dashboard's browser test, softhsm2 for the PKCS#11 key-store test. PROBE is a command name or
# a file path that shows PACKAGE is installed. When it is missing and we may (root, or sudo
# without a password) this installs PACKAGE; otherwise it says how, and the test that needs it
# fails with the same advice.
set -euo pipefail
package="$1" probe="$2" why="$3"
if command -v "$probe" >/dev/null 2>&1 || [ -e "$probe" ]; then
    exit 0
fi
if [ "$(id -u)" = 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
else
    echo "fedfort: $package is not installed; run: sudo apt-get install $package" >&2
    exit 0
fi
echo "fedfort: installing Debian's $package for $why" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "$package" >/dev/null
