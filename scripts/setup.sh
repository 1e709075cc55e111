#!/usr/bin/env bash
# Create or update .venv/ with the whole environment.
#   scripts/setup.sh          runtime environment
#   scripts/setup.sh --test   plus what the tests need (pytest, headless Chromium)
# Prints one line per step on stderr; what the steps print (pip, the compilers) goes to
# .venv/setup.log, and a failing step prints the log's last 40 lines and exits non-zero.
# Idempotent: mmcv, llama-cpp-python and our ops are built once (pip's wheel cache serves a
# fresh venv), and while constraints.txt, pyproject.toml and this script are unchanged a
# rerun skips the package steps altogether.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3.11}"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
LOG="$VENV/setup.log"
CONSTRAINTS="$ROOT/constraints.txt"
INSTALLED="$VENV/.installed"  # the digest of the inputs of the last complete install
JOBS="${MAX_JOBS:-$(nproc)}"
TEST=""
[ "${1:-}" = "--test" ] && TEST=1

say() { printf '[setup] %s\n' "$*" >&2; }
pip_install() { "$PY" -m pip install --disable-pip-version-check -c "$CONSTRAINTS" "$@"; }

# step [--optional] DESCRIPTION COMMAND...: run COMMAND with its output appended to $LOG and
# print one line with the time it took. When it fails, print the last 40 lines it wrote and
# exit with its status; an --optional step only says so and the set-up goes on.
step() {
  local optional="" started=$SECONDS status first_line
  [ "$1" = "--optional" ] && { optional=1; shift; }
  local description=$1
  shift
  printf '\n=== %s  %s\n' "$(date '+%F %T')" "$description" >>"$LOG"
  first_line=$(($(wc -l <"$LOG") + 1))
  printf '[setup] %s ... ' "$description" >&2
  set +e
  (set -e; "$@") >>"$LOG" 2>&1
  status=$?
  set -e
  if [ "$status" -eq 0 ]; then
    printf '%ss\n' "$((SECONDS - started))" >&2
  elif [ -n "$optional" ]; then
    printf 'failed, going on without it (%s)\n' "${LOG#"$ROOT/"}" >&2
  else
    printf 'failed (exit %s); the end of its output in %s:\n' "$status" "$LOG" >&2
    tail -n "+$first_line" "$LOG" | tail -n 40 >&2
    exit "$status"
  fi
}

create_venv() { [ -x "$PY" ] || "$PYTHON" -m venv "$VENV"; }

# torch first: mmcv's ops compile against the installed torch, without build isolation.
install_torch() { pip_install "setuptools<81" wheel torch torchvision; }

mmcv_with_ops_built() {
  "$PY" -c "import mmcv, mmcv.ops, sys; sys.exit(mmcv.__version__ != '2.1.0')" 2>/dev/null
}

# The design fixes "mmcv full, with ops", but the pipeline calls none of mmcv's compiled ops
# (our own csrc/ serves the model): compile them without debug information and at -O1, not
# Python's default "-g -O3", which halves the build (benchmarks/RESULTS.md, "set-up").
# -v: the compiler's output goes to the log.
install_mmcv() {
  mmcv_with_ops_built && return 0
  MMCV_WITH_OPS=1 MAX_JOBS="$JOBS" CFLAGS="${CFLAGS:-} -g0 -O1" \
    pip_install -v --no-build-isolation mmcv==2.1.0
}

# Only what the Python package loads: libllama and ggml's CPU backend. Not the multimodal
# library (LLAVA_BUILD), nor llama.cpp's common library and its HTTP client
# (llama_cpp_server_only.cmake); llama.cpp's examples, tests, tools and own server are off
# already in a subproject. Portable x86-64 code (AVX2, FMA, F16C) instead of the default
# -march=native: a native build crashed with SIGILL on a VM whose CPU reports AVX-512 and AMX
# (benchmarks/RESULTS.md, "set-up").
# pip's wheel cache keys a built sdist by its URL alone, so it would hand back a wheel built
# with other options (a native one, from an earlier set-up). The wheel is therefore built
# into a cache of our own, keyed by the version and the build options, and installed from it.
LLAMA_ARGS="-DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF"
llama_wheels() {
  local key
  key="$(printf '%s\n' "$(grep -i '^llama.cpp.python==' "$CONSTRAINTS")" "$LLAMA_ARGS" "${CMAKE_ARGS:-}" \
    | cat - scripts/llama_cpp_server_only.cmake | sha256sum | cut -c1-16)"
  echo "${XDG_CACHE_HOME:-$HOME/.cache}/prolab/wheels/llama-cpp-python-$key"
}
install_llama_cpp() {
  local wheels
  wheels="$(llama_wheels)"
  if ! compgen -G "$wheels/llama_cpp_python-*.whl" >/dev/null; then
    rm -rf "$wheels.tmp"
    CMAKE_ARGS="$LLAMA_ARGS -DCMAKE_PROJECT_llama.cpp_INCLUDE=$ROOT/scripts/llama_cpp_server_only.cmake ${CMAKE_ARGS:-}" \
      CMAKE_BUILD_PARALLEL_LEVEL="$JOBS" \
      "$PY" -m pip wheel --disable-pip-version-check -v --no-deps --no-cache-dir -c "$CONSTRAINTS" \
      llama-cpp-python -w "$wheels.tmp"
    mv "$wheels.tmp" "$wheels"
  fi
  pip_install --find-links "$wheels" "llama-cpp-python[server]"
}

install_project() { pip_install -e ".${TEST:+[dev]}"; }

build_ops() { "$PY" -m csrc.build; }

install_chromium() {
  command -v chromium >/dev/null 2>&1 && return 0
  if [ "$(id -u)" != 0 ]; then
    echo "not root: install Debian's chromium package yourself for the UI tests" >&2
    return 1
  fi
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
}

# The package steps' inputs; a test install ("+test") covers the runtime one too.
wanted="$(cat "$CONSTRAINTS" pyproject.toml scripts/setup.sh scripts/llama_cpp_server_only.cmake \
  | sha256sum | cut -d' ' -f1)${TEST:+ +test}"
installed="$(cat "$INSTALLED" 2>/dev/null || true)"

mkdir -p "$VENV"
printf '\n##### %s  scripts/setup.sh %s\n' "$(date '+%F %T')" "$*" >>"$LOG"
if [ -x "$PY" ] && { [ "$installed" = "$wanted" ] || [ "$installed" = "$wanted +test" ]; }; then
  say "packages: up to date with constraints.txt and pyproject.toml"
else
  say "setting up .venv/ (the builds' output: ${LOG#"$ROOT/"})"
  rm -f "$INSTALLED"
  step "python venv" create_venv
  step "torch, torchvision" install_torch
  step "mmcv 2.1.0 with ops (built once: about 6 min on 2 cores)" install_mmcv
  step "llama-cpp-python (built once: about 3 min on 2 cores)" install_llama_cpp
  step "prolab and its dependencies${TEST:+, with test tools}" install_project
  echo "$wanted" >"$INSTALLED"
fi
step "our ops extension (csrc)" build_ops
if [ -n "$TEST" ]; then
  # The UI tests skip without Chromium, so a machine without it still runs the rest.
  step --optional "headless Chromium for the UI tests (Debian's package)" install_chromium
fi
say "ready: .venv/bin/prolab (${SECONDS}s)"
