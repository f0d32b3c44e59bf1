#!/usr/bin/env bash
# Install the Debian packages voxloop builds and runs with, if any is missing.
# Idempotent and quiet when everything is present.
set -euo pipefail

PACKAGES=(
  build-essential pkg-config cmake clang libclang-dev   # C/C++ deps: Opus, whisper.cpp, llama.cpp
  espeak-ng espeak-ng-data                                # phonemes for the Piper voice (run as a program)
  chromium fonts-dejavu-core                              # the browser tests (tests/browser.rs) drive Debian's Chromium
)
# Tools checked by command, so an existing install (pyenv, nodesource) is kept.
declare -A TOOLS=( [python3]=python3 [npm]=npm )

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
for cmd in "${!TOOLS[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${TOOLS[$cmd]}")
done
if ! python3 -m pip --version >/dev/null 2>&1; then
  missing+=(python3-pip)
fi
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
