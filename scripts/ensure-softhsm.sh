#!/usr/bin/env bash
# The PKCS#11 key-store test runs against Debian's SoftHSM2 (a software token).
# Installs it from Debian's packages when it is missing and we may (root, or sudo without a
# password); otherwise says how, and the PKCS#11 test fails with the same advice.
set -euo pipefail
if [ -e /usr/lib/softhsm/libsofthsm2.so ] && command -v softhsm2-util >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" = 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
else
    echo "fedfort: SoftHSM2 is not installed; run: sudo apt-get install softhsm2" >&2
    exit 0
fi
echo "fedfort: installing Debian's softhsm2 for the PKCS#11 key-store test" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends softhsm2 >/dev/null
