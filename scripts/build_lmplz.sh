#!/usr/bin/env bash
# Build KenLM's `lmplz` and `build_binary` from the kenlm source distribution (PyPI sdist,
# the same version as the Python module) and install them into the project's virtualenv.
#
# Idempotent: does nothing when $VENV/bin/lmplz and $VENV/bin/build_binary exist and train
# and binarise a tiny model. On Debian/Ubuntu it installs the missing build packages with
# apt-get (as root, or through sudo when available).
#
# Environment: VENV (default .venv), KENLM_VERSION (default 0.3.0), BUILD_DIR (default
# build/kenlm), JOBS (default: number of cores).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
KENLM_VERSION=${KENLM_VERSION:-0.3.0}
BUILD_DIR=${BUILD_DIR:-build/kenlm}
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}
BIN="$VENV/bin"
DEB_PACKAGES=(build-essential cmake libboost-program-options-dev libboost-system-dev
  libboost-thread-dev libboost-test-dev zlib1g-dev libbz2-dev liblzma-dev)

log() { echo "[lmplz] $*"; }

# True when both binaries exist and train + binarise a 2-gram model on three lines.
works() {
  [[ -x "$BIN/lmplz" && -x "$BIN/build_binary" ]] || return 1
  local tmp
  tmp=$(mktemp -d)
  # shellcheck disable=SC2064
  trap "rm -rf '$tmp'" RETURN
  printf 'a b c\na b d\nb c d\n' >"$tmp/in.txt"
  "$BIN/lmplz" -o 2 -S 100M -T "$tmp" --discount_fallback <"$tmp/in.txt" >"$tmp/lm.arpa" 2>"$tmp/log" &&
    "$BIN/build_binary" "$tmp/lm.arpa" "$tmp/lm.bin" >>"$tmp/log" 2>&1 &&
    [[ -s "$tmp/lm.bin" ]]
}

if works; then
  log "$BIN/lmplz and $BIN/build_binary already work: nothing to do"
  exit 0
fi

if [[ ! -x "$VENV/bin/python" ]]; then
  echo "[lmplz] no virtualenv at $VENV (run 'make setup' first)" >&2
  exit 1
fi

install_debian_packages() {
  command -v dpkg-query >/dev/null 2>&1 || return 0
  local missing=()
  for p in "${DEB_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  local sudo=()
  if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
      sudo=(sudo)
    else
      echo "[lmplz] missing Debian packages: ${missing[*]} (not root and no sudo: install them first)" >&2
      exit 1
    fi
  fi
  log "installing Debian packages: ${missing[*]}"
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

install_debian_packages
for tool in cmake c++ make; do
  command -v "$tool" >/dev/null 2>&1 || { echo "[lmplz] '$tool' not found (needed to build KenLM)" >&2; exit 1; }
done

mkdir -p "$BUILD_DIR"
SDIST="$BUILD_DIR/kenlm-$KENLM_VERSION.tar.gz"
if [[ ! -f "$SDIST" ]]; then
  log "downloading the kenlm $KENLM_VERSION source distribution"
  # --no-binary kenlm (not :all:) so that pip's metadata step may use wheels of its build tools.
  "$VENV/bin/python" -m pip download -q --no-deps --no-binary kenlm "kenlm==$KENLM_VERSION" -d "$BUILD_DIR"
fi
[[ -f "$SDIST" ]] || { echo "[lmplz] pip did not leave $SDIST" >&2; exit 1; }

SRC="$BUILD_DIR/kenlm-$KENLM_VERSION"
rm -rf "$SRC"
tar -xzf "$SDIST" -C "$BUILD_DIR"
log "building lmplz and build_binary (cmake, $JOBS jobs)"
cmake -S "$SRC" -B "$SRC/build" -DCMAKE_BUILD_TYPE=Release -DCOMPILE_TESTS=OFF -DENABLE_PYTHON=OFF \
  >"$BUILD_DIR/cmake.log" 2>&1 || { tail -n 30 "$BUILD_DIR/cmake.log" >&2; exit 1; }
cmake --build "$SRC/build" --target lmplz build_binary -j "$JOBS" >"$BUILD_DIR/build.log" 2>&1 ||
  { tail -n 30 "$BUILD_DIR/build.log" >&2; exit 1; }
install -m 0755 "$SRC/build/bin/lmplz" "$SRC/build/bin/build_binary" "$BIN/"

if works; then
  log "installed $BIN/lmplz and $BIN/build_binary (kenlm $KENLM_VERSION)"
else
  echo "[lmplz] the built binaries do not train a test model:" >&2
  works_log=$(mktemp)
  "$BIN/lmplz" -o 2 -S 100M --discount_fallback <<<"a b c" 2>"$works_log" >/dev/null || true
  tail -n 5 "$works_log" >&2
  rm -f "$works_log"
  exit 1
fi
