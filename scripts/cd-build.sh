#!/usr/bin/env bash
# The CD build: deploy an image to an environment and validate it with the
# project's own client; production goes through blue/green (promote.sh).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

usage() {
  cat <<'USAGE'
usage: scripts/cd-build.sh dev|qa IMAGE     set the overlay's image and deploy it (deploy.sh
                                            --image), validate through a port-forward to
                                            svc/meshops
       scripts/cd-build.sh prod IMAGE       scripts/promote.sh: pin IMAGE (by digest only) in
                                            k8s/overlays/prod, validate the idle slot, switch,
                                            validate live, roll back on failure
       scripts/cd-build.sh local [ENV]      no cluster: deploy.sh ENV --local (default dev),
                                            validate it the same way, stop it
       scripts/cd-build.sh --help

Validation (dev, qa, local): scripts/validate-deployment.sh (health SERVING,
reflection lists the Gateway, toy-dataset questions answered with
citations, p95 latency), then `meshops eval run --target` on the toy
dataset, results in RESULTS.

IMAGE is the reference scripts/verify-image.sh printed after `cosign verify`
(NAME@sha256:DIGEST); the CD workflow never deploys an unverified image.

Environment: KUBECTL (default kubectl), NAMESPACE (default meshops-ENV),
RESULTS (default eval/results/cd-ENV), MESHOPS_BIN (the client).
USAGE
}

env="${1:-}" arg="${2:-}"
case "$env" in
  -h|--help) usage; exit 0 ;;
  dev|qa|prod) [[ -n "$arg" ]] || { echo "IMAGE is required for $env" >&2; usage >&2; exit 2; } ;;
  local) ;;
  "") usage >&2; exit 2 ;;
  *) echo "unknown environment: $env" >&2; usage >&2; exit 2 ;;
esac
KUBECTL="${KUBECTL:-kubectl}"
export NAMESPACE="${NAMESPACE:-meshops-$env}"
results="${RESULTS:-$REPO_ROOT/eval/results/cd-$env}"
# The client (and, for local, the server): one build, shared with the scripts.
if [[ "$env" == local ]]; then bin="$(meshops_bin release)"; else bin="$(meshops_bin debug)"; fi
export MESHOPS_BIN="$bin"

case "$env" in
  local)
    target_env="${arg:-dev}"
    url="$("$REPO_ROOT/scripts/deploy.sh" "$target_env" --local)"
    trap '"$REPO_ROOT/scripts/deploy.sh" "$target_env" --local --stop' EXIT
    validate_gateway "$url" "$bin" "$results"
    ;;
  dev|qa)
    "$REPO_ROOT/scripts/deploy.sh" "$env" --image "$arg"
    port="$(free_port)"
    "$KUBECTL" -n "$NAMESPACE" port-forward svc/meshops "$port:50051" >/dev/null 2>&1 &
    pf=$!
    trap 'kill "$pf" 2>/dev/null || true' EXIT
    wait_serving "127.0.0.1:$port" "$bin" 60 || die "svc/meshops in $NAMESPACE is not SERVING through the port-forward"
    validate_gateway "http://127.0.0.1:$port" "$bin" "$results"
    ;;
  prod)
    "$REPO_ROOT/scripts/promote.sh" "$arg"
    ;;
esac
log "CD $env done"
