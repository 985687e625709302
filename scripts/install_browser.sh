#!/usr/bin/env bash
# Install Debian's Chromium and its matching chromedriver (both from the `chromium` source
# package, so their versions always agree), used by tests/test_report.py to open the run report
# in a real headless browser.
#
# Idempotent and quick when present: does nothing when both programs run. Otherwise runs
# apt-get update, then installs the packages (as root, or through sudo when available).
# Fonts for CJK text in screenshots come with fonts-noto-cjk (a small set of sample documents is
# Chinese/Japanese).
#
# Environment: BROWSER_PACKAGES (default: chromium chromium-driver fonts-noto-cjk).
set -euo pipefail

read -r -a PACKAGES <<<"${BROWSER_PACKAGES:-chromium chromium-driver fonts-noto-cjk}"

log() { echo "[browser] $*"; }

works() {
  command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 || return 1
  chromium --headless --no-sandbox --version >/dev/null 2>&1 && chromedriver --version >/dev/null 2>&1
}

missing_packages() {
  command -v dpkg-query >/dev/null 2>&1 || return 0
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
  done
}

mapfile -t missing < <(missing_packages)
if works && [[ ${#missing[@]} -eq 0 ]]; then
  log "$(chromium --version 2>/dev/null | head -n1) and its chromedriver already installed: nothing to do"
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "[browser] no apt-get here: install Chromium and chromedriver yourself (needed by tests/test_report.py)" >&2
  exit 1
fi
sudo=()
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null 2>&1; then
    sudo=(sudo)
  else
    echo "[browser] missing Debian packages: ${missing[*]} (not root and no sudo: install them first)" >&2
    exit 1
  fi
fi
log "installing Debian packages: ${missing[*]}"
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

if works; then
  log "installed $(chromium --version 2>/dev/null | head -n1) and $(chromedriver --version | head -n1)"
else
  echo "[browser] chromium or chromedriver does not run after installing ${missing[*]}" >&2
  exit 1
fi
