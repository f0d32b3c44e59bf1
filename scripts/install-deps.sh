#!/usr/bin/env bash
# Install the Debian packages voxloop builds and runs with, if any is missing.
# Idempotent and quiet when everything is present.
set -euo pipefail

PACKAGES=(
  build-essential pkg-config cmake clang libclang-dev   # C deps of -sys crates (Opus)
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi
echo "installing Debian packages: ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
