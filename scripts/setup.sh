#!/usr/bin/env bash
# Create or update .venv/ with the whole environment.
#   scripts/setup.sh          runtime environment
#   scripts/setup.sh --test   plus what the tests need (pytest, headless Chromium)
# Prints one line per step on stderr; what the steps print (uv, pip, the compilers) goes to
# .venv/setup.log, and a failing step prints the log's last 40 lines and exits non-zero.
# Wheels are installed with uv (torch's 4 GB of wheels in a quarter of pip's time,
# benchmarks/RESULTS.md "set-up"); the two sdists are built with pip, whose -v log shows the
# compilers. uv reads no pip.conf: a private index is given to it as UV_INDEX_URL or
# UV_EXTRA_INDEX_URL. Idempotent: mmcv, llama-cpp-python and our ops are built once (the wheel
# caches serve a fresh venv), and while constraints.txt, pyproject.toml and this script are
# unchanged a rerun skips the package steps altogether.
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
uv_install() { UV_LINK_MODE=copy "$VENV/bin/uv" pip install --python "$PY" -c "$CONSTRAINTS" "$@"; }

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

create_venv() { [ -x "$PY" ] || "$PYTHON" -m venv "$VENV"; pip_install uv; }

# torch first: mmcv's ops compile against the installed torch, without build isolation.
install_torch() { uv_install "setuptools<81" wheel torch torchvision; }

MMCV_VERSION="$(sed -n 's/^mmcv==//Ip' "$CONSTRAINTS")"
mmcv_with_ops_built() {
  "$PY" -c "import mmcv, mmcv.ops, sys; sys.exit(mmcv.__version__ != sys.argv[1])" "$MMCV_VERSION" 2>/dev/null
}

# The two sdists are built once into a wheel cache of our own, keyed by what went into the
# wheel (pinned versions, build options): pip's wheel cache keys a built sdist by its URL alone,
# so it would hand back a wheel built with other options (a native llama.cpp from an earlier
# set-up) or against another torch.
wheel_cache() {  # NAME KEY-PARTS... -> the cache directory
  local name=$1
  shift
  echo "${XDG_CACHE_HOME:-$HOME/.cache}/prolab/wheels/$name-$(printf '%s\n' "$@" | sha256sum | cut -c1-16)"
}
# build_wheel DIRECTORY PIP-WHEEL-ARGS...: -v, so the compilers' output goes to the log.
build_wheel() {
  local wheels=$1
  shift
  compgen -G "$wheels/*.whl" >/dev/null && return 0
  rm -rf "$wheels.tmp"
  "$PY" -m pip wheel --disable-pip-version-check -v --no-deps --no-cache-dir -c "$CONSTRAINTS" "$@" -w "$wheels.tmp"
  mv "$wheels.tmp" "$wheels"
}

# The design fixes "mmcv full, with ops", but the pipeline calls none of mmcv's compiled ops
# (our own csrc/ serves the model): compile them without debug information and at -O1, not
# Python's default "-g -O3", which halves the build (benchmarks/RESULTS.md, "set-up").
MMCV_CFLAGS="-g0 -O1"

# Most of the compile time of an mmcv op source is parsing torch/types.h (8 of nms.cpp's
# 11 s): precompiled once and put first in every source with -include, it is read in a
# fraction of that. gcc checks a precompiled header against each compile's options and reads
# the plain header where they differ (-Winvalid-pch says so in the log): a mismatch costs time,
# never correctness. The compiler and options are those torch's BuildExtension gives an op source.
precompile_torch_types() {
  mkdir -p "$1"
  printf '#include <torch/types.h>\n' >"$1/torch_types.h"
  "$PY" - "$1/torch_types.h" "${CFLAGS:-} $MMCV_CFLAGS" <<'EOF'
import shlex, subprocess, sys, sysconfig
from torch.utils.cpp_extension import get_cxx_compiler, include_paths
header, cflags = sys.argv[1:]
options = [*shlex.split(sysconfig.get_config_var("CFLAGS")), *shlex.split(cflags),
           *shlex.split(sysconfig.get_config_var("CCSHARED")), *(f"-I{path}" for path in include_paths()),
           f"-I{sysconfig.get_paths()['include']}",
           "-std=c++17", "-DTORCH_API_INCLUDE_EXTENSION_H", "-DTORCH_EXTENSION_NAME=_ext"]
subprocess.run([get_cxx_compiler(), *options, "-x", "c++-header", header, "-o", header + ".gch"], check=True)
EOF
}

install_mmcv() {
  mmcv_with_ops_built && return 0
  local wheels pch="$VENV/torch-pch"
  wheels="$(wheel_cache mmcv "$(grep -i '^mmcv==' "$CONSTRAINTS")" "$(grep -i '^torch==' "$CONSTRAINTS")" \
    "$MMCV_CFLAGS" "${CFLAGS:-}")"
  if ! compgen -G "$wheels/*.whl" >/dev/null; then
    precompile_torch_types "$pch"
    MMCV_WITH_OPS=1 MAX_JOBS="$JOBS" CFLAGS="${CFLAGS:-} $MMCV_CFLAGS -include $pch/torch_types.h -Winvalid-pch" \
      build_wheel "$wheels" --no-build-isolation mmcv
    rm -rf "$pch"
  fi
  uv_install "$wheels"/mmcv-*.whl
}

# Only what the Python package loads: libllama and ggml's CPU backend. Not the multimodal
# library (LLAVA_BUILD), nor llama.cpp's common library and its HTTP client
# (llama_cpp_server_only.cmake); llama.cpp's examples, tests, tools and own server are off
# already in a subproject. Portable x86-64 code (AVX2, FMA, F16C) instead of the default
# -march=native: a native build crashed with SIGILL on a VM whose CPU reports AVX-512 and AMX
# (benchmarks/RESULTS.md, "set-up").
LLAMA_ARGS="-DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF"
install_llama_cpp() {
  local wheels
  wheels="$(wheel_cache llama-cpp-python "$(grep -i '^llama.cpp.python==' "$CONSTRAINTS")" "$LLAMA_ARGS" \
    "${CMAKE_ARGS:-}" "$(cat scripts/llama_cpp_server_only.cmake)")"
  CMAKE_ARGS="$LLAMA_ARGS -DCMAKE_PROJECT_llama.cpp_INCLUDE=$ROOT/scripts/llama_cpp_server_only.cmake ${CMAKE_ARGS:-}" \
    CMAKE_BUILD_PARALLEL_LEVEL="$JOBS" build_wheel "$wheels" llama-cpp-python
  uv_install --find-links "$wheels" "llama-cpp-python[server]"
}

install_project() { uv_install -e ".${TEST:+[dev]}"; }

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
  step "python venv and uv" create_venv
  step "torch, torchvision" install_torch
  step "mmcv $MMCV_VERSION with ops (built once: about 3 min on 2 cores)" install_mmcv
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
