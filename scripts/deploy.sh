#!/usr/bin/env bash
# Deploy meshops to an environment: a Kubernetes overlay, or (--local) the
# release binary on this machine with that environment's config.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

usage() {
  cat <<'USAGE'
usage: scripts/deploy.sh ENV [--image IMAGE]             apply k8s/overlays/ENV, wait for the rollout
       scripts/deploy.sh ENV --local [--port N]          start the release binary here with config/ENV.toml
       scripts/deploy.sh ENV --local --stop [--port N]   stop that local deployment
       scripts/deploy.sh --help

ENV is dev, qa or prod.

Cluster: --image first sets the overlay's image (scripts/set-image.sh ENV
IMAGE: NAME@sha256:DIGEST, or NAME:TAG), then renders k8s/overlays/ENV
(scripts/k8s-render.sh: plain `kubectl kustomize`, after checking that
k8s/base/configmaps matches config/, agents/, prompts/), applies it with
kubectl into NAMESPACE and waits for `rollout status deployment/meshops`. Then validate it with:
  kubectl -n NAMESPACE port-forward svc/meshops 50051:50051 &
  scripts/validate-deployment.sh http://127.0.0.1:50051
prod is deployed with blue/green instead: scripts/promote.sh.

--local: the "environment" a laptop or a CI machine can have. Starts
`meshops serve` from the release build (or $MESHOPS_BIN) on 127.0.0.1:PORT
with MESHOPS_ENV=ENV (scripts/local-gateway.sh --env), waits until health
is SERVING and prints the URL on stdout. --port 0 (the default) picks a free
port; the URL is also written to ${TMPDIR:-/tmp}/meshops-deploy-ENV.url.

Environment: KUBECTL (default kubectl), NAMESPACE (default meshops-ENV),
ROLLOUT_TIMEOUT (default 300s), DRY_RUN=1 prints the manifests instead of
applying them (--image still sets the overlay's image: that is a file
change, not a cluster change).
USAGE
}

env="${1:-}"
case "$env" in
  -h|--help) usage; exit 0 ;;
  dev|qa|prod) shift ;;
  "") usage >&2; exit 2 ;;
  *) echo "unknown environment: $env (dev, qa or prod)" >&2; usage >&2; exit 2 ;;
esac
local_mode=0 stop=0 port=0 image=""
while (( $# )); do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --local) local_mode=1; shift ;;
    --stop) stop=1; shift ;;
    --port) port="${2:?--port needs a value}"; shift 2 ;;
    --image) image="${2:?--image needs a value}"; shift 2 ;;
    *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
done
[[ "$port" =~ ^[0-9]+$ ]] || die "--port must be a number, got '$port'"
urlfile="${TMPDIR:-/tmp}/meshops-deploy-$env.url"

if (( local_mode )); then
  [[ -z "$image" ]] || die "--image is for cluster deployments; --local runs the binary"
  if (( stop )); then
    [[ -f "$urlfile" ]] || { log "no local $env deployment recorded ($urlfile)"; exit 0; }
    url="$(cat "$urlfile")"
    "$REPO_ROOT/scripts/local-gateway.sh" stop --port "${url##*:}"
    rm -f "$urlfile"
    exit 0
  fi
  if [[ -f "$urlfile" ]]; then
    old="$(cat "$urlfile")"
    if "$REPO_ROOT/scripts/local-gateway.sh" status --port "${old##*:}" >/dev/null 2>&1; then
      die "a local $env deployment already runs at $old; stop it with: $0 $env --local --stop"
    fi
  fi
  (( port != 0 )) || port="$(free_port)"
  log "deploying $env locally on 127.0.0.1:$port (config/$env.toml; binary: $MESHOPS_BIN, else the release build)"
  url="$("$REPO_ROOT/scripts/local-gateway.sh" start --release --env "$env" --port "$port")"
  printf '%s\n' "$url" >"$urlfile"
  log "deployed $env at $url; validate with: scripts/validate-deployment.sh $url"
  log "stop with: $0 $env --local --stop"
  printf '%s\n' "$url"
  exit 0
fi

(( ! stop )) || die "--stop is for --local deployments; use kubectl to delete cluster resources"
if [[ "$env" == prod ]]; then
  die "prod is released with blue/green: scripts/promote.sh IMAGE (validates the idle slot, switches, rolls back on failure)"
fi
KUBECTL="${KUBECTL:-kubectl}"
NAMESPACE="${NAMESPACE:-meshops-$env}"
have "$KUBECTL" || die "$KUBECTL not found (set KUBECTL=..., or use --local)"
if [[ -n "$image" ]]; then
  "$REPO_ROOT/scripts/set-image.sh" "$env" "$image" >/dev/null
fi
rendered="$("$REPO_ROOT/scripts/k8s-render.sh" "$env")"
if [[ "${DRY_RUN:-0}" == 1 ]]; then
  log "DRY_RUN: would apply these manifests to namespace $NAMESPACE"
  printf '%s\n' "$rendered"
  exit 0
fi
log "applying k8s/overlays/$env to namespace $NAMESPACE${image:+ with image $image}"
"$KUBECTL" -n "$NAMESPACE" apply -f - <<<"$rendered"
log "waiting for the rollout (timeout ${ROLLOUT_TIMEOUT:-300s})"
"$KUBECTL" -n "$NAMESPACE" rollout status deployment/meshops --timeout "${ROLLOUT_TIMEOUT:-300s}"
log "deployed $env; validate with: $KUBECTL -n $NAMESPACE port-forward svc/meshops 50051:50051 & scripts/validate-deployment.sh http://127.0.0.1:50051"
