#!/usr/bin/env bash
# Create or update .venv/ with the whole environment. Idempotent: a second run installs
# nothing new and rebuilds nothing (mmcv, llama-cpp-python and the MSDA op are built once;
# pip's wheel cache serves a fresh venv).
#   scripts/setup.sh          runtime environment
#   scripts/setup.sh --test   plus what the tests need (pytest, headless Chromium)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3.11}"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
CONSTRAINTS="$ROOT/constraints.txt"
say() { printf '[setup] %s\n' "$*" >&2; }
pip_install() { "$PY" -m pip install --disable-pip-version-check -q -c "$CONSTRAINTS" "$@"; }

if [ ! -x "$PY" ]; then
  say "creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
pip_install "pip" "setuptools<81" wheel

# torch first: mmcv's ops compile against the installed torch, without build isolation.
say "torch"
pip_install torch torchvision

if "$PY" -c "import mmcv, mmcv.ops, sys; sys.exit(mmcv.__version__ != '2.1.0')" 2>/dev/null; then
  say "mmcv 2.1.0 with ops: already built"
else
  say "mmcv 2.1.0 with ops: building (about 6 minutes on 2 cores the first time; cached afterwards)"
  MMCV_WITH_OPS=1 MAX_JOBS=2 pip_install --no-build-isolation mmcv==2.1.0
fi

extras=""
[ "${1:-}" = "--test" ] && extras="[dev]"
say "the project and its dependencies${extras:+ $extras} (llama-cpp-python builds once, about 7 minutes)"
CMAKE_BUILD_PARALLEL_LEVEL=2 pip_install -e ".${extras}"

say "multi-scale deformable attention extension"
"$PY" -m csrc.build

if [ "${1:-}" = "--test" ] && ! command -v chromium >/dev/null 2>&1; then
  say "headless Chromium for the UI tests (Debian's package)"
  if [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || say "could not install chromium: UI tests will skip"
  else
    say "not root: install Debian's chromium yourself for the UI tests"
  fi
fi
say "ready: $VENV/bin/prolab"
