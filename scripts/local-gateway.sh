#!/usr/bin/env bash
# Start/stop a meshops gateway on this machine, for scripts and laptops.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

usage() {
  cat <<'USAGE'
usage: scripts/local-gateway.sh start [--port N] [--env ENV] [--config FILE] [--release]
                                     [--root DIR] [--data DIR] [--timeout S]
       scripts/local-gateway.sh stop  [--port N]
       scripts/local-gateway.sh status [--port N]
       scripts/local-gateway.sh --help

start   starts `meshops serve --listen 127.0.0.1:PORT` in the background,
        waits until grpc.health.v1 reports SERVING (grpcurl when installed,
        else an Ask through `meshops ask`), then prints the URL
        (http://127.0.0.1:PORT) on stdout. --port 0 picks a free port.
stop    sends SIGTERM (graceful drain) and waits for the process to exit.
status  prints whether the gateway on PORT is running and serving.

--env ENV layers config/ENV.toml (MESHOPS_ENV=ENV) but keeps what a
single machine needs: loopback listen address, data under the state dir,
OTLP export off unless OTEL_EXPORTER_OTLP_ENDPOINT is set. --config FILE
layers one more settings file. --release uses the release build.

Defaults: --port 50051, --root the repository, --data a fresh folder under
the state dir, --timeout 180. State (pid, log, data) lives in
$MESHOPS_LOCAL_STATE (default ${TMPDIR:-/tmp}/meshops-local-gateway-PORT).
The binary is $MESHOPS_BIN, else built with cargo (debug, or --release).
USAGE
}

cmd="${1:-}"
case "$cmd" in
  -h|--help) usage; exit 0 ;;
  start|stop|status) shift ;;
  "") usage >&2; exit 2 ;;
  *) echo "unknown command: $cmd" >&2; usage >&2; exit 2 ;;
esac

port=50051 root="$REPO_ROOT" data="" timeout=180 env="" config="" profile=debug
while (( $# )); do
  case "$1" in
    --port) port="${2:?--port needs a value}"; shift 2 ;;
    --root) root="${2:?--root needs a value}"; shift 2 ;;
    --data) data="${2:?--data needs a value}"; shift 2 ;;
    --timeout) timeout="${2:?--timeout needs a value}"; shift 2 ;;
    --env) env="${2:?--env needs a value}"; shift 2 ;;
    --config) config="${2:?--config needs a value}"; shift 2 ;;
    --release) profile=release; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
done
[[ "$port" =~ ^[0-9]+$ ]] || die "--port must be a number, got '$port'"
if [[ -n "$env" && ! -f "$root/config/$env.toml" ]]; then
  die "--env $env: no config/$env.toml under $root"
fi
if [[ -n "$config" && ! -f "$config" ]]; then
  die "--config $config: no such file"
fi
if [[ "$cmd" == start && "$port" == 0 ]]; then
  port="$(free_port)"
fi

state="${MESHOPS_LOCAL_STATE:-${TMPDIR:-/tmp}/meshops-local-gateway-$port}"
pidfile="$state/pid"
logfile="$state/gateway.log"
addr="127.0.0.1:$port"

running() { [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

case "$cmd" in
  start)
    if running; then
      die "a gateway already runs on $addr (pid $(cat "$pidfile")); stop it with: $0 stop --port $port"
    fi
    bin="$(meshops_bin "$profile")"
    mkdir -p "$state"
    data="${data:-$state/data}"
    mkdir -p "$data"
    args=(serve --listen "$addr")
    [[ -n "$config" ]] && args=(--config "$config" "${args[@]}")
    export_otlp=false
    [[ -n "${OTEL_EXPORTER_OTLP_ENDPOINT:-}" ]] && export_otlp=true
    log "starting $bin ${args[*]} (env ${env:-default}, root $root, data $data, log $logfile)"
    MESHOPS_ROOT="$root" MESHOPS_ENV="$env" MESHOPS__RETRIEVAL__DATA_DIR="$data" \
      MESHOPS__TELEMETRY__EXPORT="$export_otlp" \
      nohup "$bin" "${args[@]}" >"$logfile" 2>&1 &
    echo $! >"$pidfile"
    log "waiting up to ${timeout}s for health SERVING on $addr"
    if ! wait_serving "$addr" "$bin" "$timeout"; then
      if running; then kill -TERM "$(cat "$pidfile")" 2>/dev/null || true; fi
      tail -n 20 "$logfile" >&2 || true
      die "the gateway did not become SERVING within ${timeout}s (log: $logfile)"
    fi
    log "gateway SERVING on $addr (pid $(cat "$pidfile")); stop with: $0 stop --port $port"
    echo "http://$addr"
    ;;
  stop)
    if ! running; then
      log "no gateway running on $addr"
      rm -f "$pidfile"
      exit 0
    fi
    stop_pidfile "$pidfile" "gateway on $addr" 30
    ;;
  status)
    if running; then
      if health_ok "$addr" "${MESHOPS_BIN:-meshops}"; then
        echo "running, SERVING: http://$addr (pid $(cat "$pidfile"))"
      else
        echo "running, not SERVING yet: http://$addr (pid $(cat "$pidfile"))"
      fi
    else
      echo "not running on $addr"
      exit 1
    fi
    ;;
esac
