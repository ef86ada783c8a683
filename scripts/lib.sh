#!/usr/bin/env bash
# Helpers shared by the delivery scripts. Sourced, not run:
#   source "$(dirname "$0")/lib.sh"
# shellcheck shell=bash

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export REPO_ROOT

log() { printf '== %s\n' "$*" >&2; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }

# The cargo target dir (shared across worktrees when CARGO_TARGET_DIR is set).
target_dir() { printf '%s\n' "${CARGO_TARGET_DIR:-$REPO_ROOT/target}"; }

# Prints the path of a meshops binary: $MESHOPS_BIN if set, else builds the
# given profile (debug|release, default debug) with cargo.
meshops_bin() {
  local profile="${1:-debug}"
  if [[ -n "${MESHOPS_BIN:-}" ]]; then
    [[ -x "$MESHOPS_BIN" ]] || die "MESHOPS_BIN=$MESHOPS_BIN is not an executable"
    printf '%s\n' "$MESHOPS_BIN"
    return
  fi
  have cargo || die "cargo not found; install Rust (https://rustup.rs) or set MESHOPS_BIN"
  if [[ "$profile" == release ]]; then
    (cd "$REPO_ROOT" && cargo build --quiet --release --locked --bin meshops) >&2
  else
    (cd "$REPO_ROOT" && cargo build --quiet --locked --bin meshops) >&2
  fi
  printf '%s/%s/meshops\n' "$(target_dir)" "$profile"
}

# Stops the process whose pid is in PIDFILE: SIGTERM, then waits up to
# SECONDS for it to exit and removes the pid file; fails if it does not
# exit. $1 = pid file, $2 = what it is (for messages), $3 = seconds.
stop_pidfile() {
  local pidfile="$1" what="$2" seconds="${3:-30}" pid
  pid="$(cat "$pidfile")"
  log "stopping $what pid $pid (SIGTERM)"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 $((seconds * 2))); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; log "stopped"; return 0; }
    sleep 0.5
  done
  die "$what pid $pid did not exit within ${seconds}s after SIGTERM"
}

# A free TCP port on 127.0.0.1.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Waits until the gateway at HOST:PORT reports SERVING (grpcurl when
# installed, else an Ask through the project's client). $1 = host:port,
# $2 = meshops binary, $3 = timeout seconds.
wait_serving() {
  local addr="$1" bin="$2" timeout="${3:-120}" deadline
  deadline=$(( $(date +%s) + timeout ))
  while (( $(date +%s) < deadline )); do
    if health_ok "$addr" "$bin"; then
      return 0
    fi
    sleep 0.5
  done
  return 1
}

# One health check of HOST:PORT; true when SERVING. With MESHOPS_CA_CERT
# set (a TLS gateway), `meshops probe` over https to localhost.
health_ok() {
  local addr="$1" bin="$2" out
  if [[ -n "${MESHOPS_CA_CERT:-}" ]]; then
    "$bin" probe --target "https://localhost:${addr##*:}" --timeout 3 >/dev/null 2>&1
  elif have grpcurl; then
    out="$(grpcurl -plaintext -max-time 3 -d '{"service":"meshops.v1.Gateway"}' "$addr" grpc.health.v1.Health/Check 2>/dev/null)" || return 1
    grep -q '"SERVING"' <<<"$out"
  else
    "$bin" ask --target "http://$addr" "What is meshops?" >/dev/null 2>&1
  fi
}

# Validates a running gateway: scripts/validate-deployment.sh (health,
# reflection, cited answers, p95 latency), then the toy dataset through
# `meshops eval run --target`. $1 = URL (http://host:port), $2 = meshops
# binary, $3 = results folder.
validate_gateway() {
  local url="$1" bin="$2" results="$3"
  mkdir -p "$results"
  log "validate $url: scripts/validate-deployment.sh"
  MESHOPS_BIN="$bin" "$REPO_ROOT/scripts/validate-deployment.sh" "$url" --out "$results/validation" \
    || die "$url failed validation (details above and in $results/validation)"
  log "validate $url: eval on eval/datasets/toy.jsonl through the gateway"
  "$bin" --root "$REPO_ROOT" eval run --dataset "$REPO_ROOT/eval/datasets/toy.jsonl" --target "$url" \
    --out "$results/eval-toy"
}
