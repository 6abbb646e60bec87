#!/usr/bin/env bash
# System packages the test suite starts: a one-node SLURM (slurm-wlm, munge) and a browser (chromium).
# Installed when missing, as root with apt; otherwise the tests that need them say which package is missing.
set -euo pipefail
PACKAGES=(slurm-wlm munge chromium)
missing=()
for package in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing system packages: ${missing[*]}"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
else
    echo "note: system packages ${missing[*]} are missing and installing them needs root with apt;" \
         "the tests that start them will fail saying so" >&2
fi
