#!/usr/bin/env bash
# llama_server_build.sh - build llama.cpp's own C++ OpenAI server (`llama-server`) once per machine.
#
#   bash scripts/llama_server_build.sh          # prints the binary path on the last stdout line
#
# Why: PyPI has no llama-server binary, and this project may only reach PyPI. The llama-cpp-python
# sdist (which `make install-llm` already compiles) vendors the full llama.cpp tree, so we build
# the server target from exactly the llama.cpp that the Python binding pins: same model support,
# same GGUF reader, no second source of truth.
#
# Idempotent: the binary is cached in ${OPENTELA_CACHE:-~/.cache/opentela}/llama-server-<ver>/bin
# and a second run only checks that it starts (well under a second). The build tree is removed
# after a successful build (KEEP_BUILD=1 keeps it) so the cache holds one static binary (~10 MB).
# A lock (flock) makes concurrent callers (parallel test workers, two terminals) build only once.
#
# Flags: GGML_NATIVE=OFF for a binary that runs on any x86-64 (a cache copied between machines,
# CI images); static linking so the one file can be moved; no curl/OpenSSL (no network at run
# time: models are local files); no web UI (it would try an npm build or a download).
#
# Environment: LLAMA_CPP_PYTHON_VERSION (0.3.36), LLAMA_CPP_PYTHON_SDIST (a local .tar.gz to use
# instead of `pip download`), PYTHON (python3, whose pip downloads the sdist), JOBS (2),
# OPENTELA_CACHE, KEEP_BUILD.
set -euo pipefail

VERSION=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
CACHE_ROOT=${OPENTELA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/opentela}
DEST=$CACHE_ROOT/llama-server-$VERSION
BIN=$DEST/bin/llama-server
PY=${PYTHON:-python3}
JOBS=${JOBS:-2}

log() { echo "[llama-server-build] $*" >&2; }

# The cached binary counts only if it actually runs (a truncated copy or a binary built for
# another CPU must not be reused silently).
usable() { [ -x "$BIN" ] && "$BIN" --version >/dev/null 2>&1; }

if usable; then
  echo "$BIN"
  exit 0
fi

mkdir -p "$DEST/dl" "$DEST/bin"
exec 9>"$DEST/.lock"
if ! flock -w 3600 9; then
  log "could not take $DEST/.lock within an hour"
  exit 1
fi
if usable; then  # another caller built it while we waited for the lock
  echo "$BIN"
  exit 0
fi

t0=$(date +%s)
SDIST=${LLAMA_CPP_PYTHON_SDIST:-$DEST/dl/llama_cpp_python-$VERSION.tar.gz}
if [ ! -f "$SDIST" ]; then
  log "downloading the llama-cpp-python $VERSION sdist (~75 MB) with pip"
  "$PY" -m pip download --quiet --no-deps --no-binary :all: -d "$DEST/dl" \
    "llama-cpp-python==$VERSION" >&2
fi
[ -f "$SDIST" ] || { log "no sdist at $SDIST"; exit 1; }

WORK=$DEST/work
rm -rf "$WORK"
mkdir -p "$WORK"
log "extracting vendor/llama.cpp from $(basename "$SDIST")"
tar xzf "$SDIST" -C "$WORK" "llama_cpp_python-$VERSION/vendor/llama.cpp"
SRC=$WORK/llama_cpp_python-$VERSION/vendor/llama.cpp
[ -f "$SRC/CMakeLists.txt" ] || { log "the sdist has no vendor/llama.cpp"; exit 1; }
t1=$(date +%s)

log "configuring (GGML_NATIVE=OFF, static, no curl/openssl/UI)"
cmake -S "$SRC" -B "$WORK/build" -DCMAKE_BUILD_TYPE=Release \
  -DGGML_NATIVE=OFF -DBUILD_SHARED_LIBS=OFF \
  -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
  -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF >"$WORK/configure.log" 2>&1 ||
  { tail -40 "$WORK/configure.log" >&2; exit 1; }
log "building target llama-server with -j$JOBS (a few minutes on 2 cores)"
cmake --build "$WORK/build" --target llama-server -j"$JOBS" >"$WORK/build.log" 2>&1 ||
  { tail -40 "$WORK/build.log" >&2; exit 1; }
t2=$(date +%s)

# Atomic install: a reader never sees a half-copied binary.
cp "$WORK/build/bin/llama-server" "$BIN.tmp"
mv -f "$BIN.tmp" "$BIN"
"$BIN" --version >"$DEST/version.txt" 2>&1 || true
[ "${KEEP_BUILD:-0}" = 1 ] || rm -rf "$WORK"
usable || { log "built $BIN but it does not run"; exit 1; }
log "done: download+extract $((t1 - t0))s, build $((t2 - t1))s, $(du -h "$BIN" | cut -f1)"
echo "$BIN"
