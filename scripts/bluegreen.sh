#!/usr/bin/env bash
# Blue/green releases of meshops on Kubernetes (k8s/bluegreen).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

usage() {
  cat <<'USAGE'
usage: scripts/bluegreen.sh status
       scripts/bluegreen.sh live-slot
       scripts/bluegreen.sh deploy SLOT IMAGE
       scripts/bluegreen.sh validate SLOT|live
       scripts/bluegreen.sh switch SLOT
       scripts/bluegreen.sh rollback
       scripts/bluegreen.sh --help

SLOT is blue or green. The live Services (meshops, meshops-headless) select
one slot with the label slot=SLOT; each slot also has its own Service
(meshops-SLOT) that reaches it alone.

status    live slot, previous slot, image and ready replicas of each slot
live-slot prints the live slot (empty when no live Service exists yet)
deploy    refuses the live slot; pins IMAGE (NAME@sha256:DIGEST) in the prod
          overlay (scripts/set-image.sh prod IMAGE), applies
          k8s/bluegreen/SLOT, waits for the rollout, then validates the slot
          (see validate)
validate  port-forwards svc/meshops-SLOT (or, for `validate live`, the
          live svc/meshops) to a local port and runs
          scripts/validate-deployment.sh against it (health, reflection,
          cited answers, p95 latency; VALIDATE_QUESTIONS, VALIDATE_P95_MS)
switch    validates SLOT, then points the live Services at it and records the
          slot it replaced in the annotation meshops.dev/previous-slot
rollback  switches back to the recorded previous slot (validated first)

Environment: NAMESPACE (default meshops-prod), KUBECTL (default kubectl),
MESHOPS_BIN (the client; default: built with cargo), ROLLOUT_TIMEOUT
(default 300s), DRY_RUN=1 prints kubectl commands that change the cluster
instead of running them.
USAGE
}

NAMESPACE="${NAMESPACE:-meshops-prod}"
KUBECTL="${KUBECTL:-kubectl}"
ROLLOUT_TIMEOUT="${ROLLOUT_TIMEOUT:-300s}"

k() { "$KUBECTL" -n "$NAMESPACE" "$@"; }
# Cluster-changing commands go through this, so DRY_RUN=1 shows them.
kchange() {
  if [[ "${DRY_RUN:-0}" == 1 ]]; then
    printf 'DRY_RUN: %s -n %s %s\n' "$KUBECTL" "$NAMESPACE" "$*" >&2
  else
    k "$@"
  fi
}

check_slot() {
  case "${1:-}" in
    blue|green) ;;
    *) die "SLOT must be blue or green, got '${1:-}'" ;;
  esac
}
other() { [[ "$1" == blue ]] && echo green || echo blue; }

live_slot() { k get service meshops -o jsonpath='{.spec.selector.slot}' 2>/dev/null || true; }
previous_slot() {
  k get service meshops -o jsonpath='{.metadata.annotations.meshops\.dev/previous-slot}' 2>/dev/null || true
}

ensure_live_services() {
  if ! k get service meshops >/dev/null 2>&1; then
    log "live Services missing in $NAMESPACE: creating them (live slot: blue)"
    rendered="$("$REPO_ROOT/scripts/k8s-render.sh" bluegreen/live)"
    kchange apply -f - <<<"$rendered"
  fi
}

# Port-forwards started by validate; stopped on return and on exit.
PF_PIDS=()
stop_port_forwards() {
  local p
  for p in "${PF_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  PF_PIDS=()
}
trap stop_port_forwards EXIT

validate() {
  local slot="$1" port bin svc ok=0
  case "$slot" in
    live) svc=meshops ;;
    *) check_slot "$slot"; svc="meshops-$slot" ;;
  esac
  bin="$(meshops_bin debug)"
  port="$(free_port)"
  log "validating $slot: port-forward svc/$svc to 127.0.0.1:$port"
  # Run kubectl itself in the background (not a function), so $! is its pid.
  "$KUBECTL" -n "$NAMESPACE" port-forward "svc/$svc" "$port:50051" >/dev/null 2>&1 &
  PF_PIDS+=("$!")
  # A TLS gateway (the prod overlay) is reached as localhost, the name its
  # certificate carries, with the CA in MESHOPS_CA_CERT.
  local target="http://127.0.0.1:$port"
  [[ -z "${MESHOPS_CA_CERT:-}" ]] || target="https://localhost:$port"
  if wait_serving "127.0.0.1:$port" "$bin" 60; then
    MESHOPS_BIN="$bin" "$REPO_ROOT/scripts/validate-deployment.sh" "$target" \
      --questions "${VALIDATE_QUESTIONS:-3}" --p95-ms "${VALIDATE_P95_MS:-2000}" >&2 && ok=1
  else
    warn "svc/$svc did not report SERVING through the port-forward within 60s"
  fi
  stop_port_forwards
  (( ok == 1 )) || die "$slot failed validation (scripts/validate-deployment.sh through svc/$svc)"
  if [[ "$slot" == live ]]; then log "live service validated"; else log "slot $slot validated"; fi
}

switch_to() {
  local slot="$1" live
  check_slot "$slot"
  live="$(live_slot)"
  [[ -n "$live" ]] || die "no live Service meshops in $NAMESPACE; deploy a slot first"
  if [[ "$live" == "$slot" ]]; then
    log "slot $slot is already live; nothing to do"
    return
  fi
  validate "$slot"
  local patch
  patch="{\"metadata\":{\"annotations\":{\"meshops.dev/previous-slot\":\"$live\"}},\"spec\":{\"selector\":{\"slot\":\"$slot\"}}}"
  kchange patch service meshops --type=merge -p "$patch"
  kchange patch service meshops-headless --type=merge -p "{\"spec\":{\"selector\":{\"slot\":\"$slot\"}}}"
  log "live slot: $live -> $slot (rollback with: $0 rollback)"
}

cmd="${1:-}"
case "$cmd" in
  -h|--help) usage; exit 0 ;;
  "") usage >&2; exit 2 ;;
esac
have "$KUBECTL" || die "$KUBECTL not found (set KUBECTL=...)"

case "$cmd" in
  status)
    echo "namespace:     $NAMESPACE"
    echo "live slot:     $(live_slot || echo '?')"
    echo "previous slot: $(previous_slot)"
    for s in blue green; do
      img="$(k get deployment "meshops-$s" -o jsonpath='{.spec.template.spec.containers[0].image}' 2>/dev/null || echo '-')"
      ready="$(k get deployment "meshops-$s" -o jsonpath='{.status.readyReplicas}/{.spec.replicas}' 2>/dev/null || echo '-')"
      echo "slot $s: image ${img:--} ready ${ready:--}"
    done
    ;;
  deploy)
    slot="${2:-}" image="${3:-}"
    check_slot "$slot"
    [[ -n "$image" ]] || die "usage: $0 deploy SLOT IMAGE"
    ensure_live_services
    if [[ "$(live_slot)" == "$slot" && "${FORCE:-0}" != 1 ]]; then
      die "slot $slot is live; deploy to $(other "$slot") and switch (FORCE=1 overrides)"
    fi
    log "deploying $image to slot $slot in $NAMESPACE"
    # Both slots build on k8s/overlays/prod; only this slot's manifests are
    # applied, so the live slot keeps its image until the switch.
    "$REPO_ROOT/scripts/set-image.sh" prod "$image" >/dev/null
    rendered="$("$REPO_ROOT/scripts/k8s-render.sh" "bluegreen/$slot")"
    kchange apply -f - <<<"$rendered"
    kchange rollout status "deployment/meshops-$slot" --timeout "$ROLLOUT_TIMEOUT"
    if [[ "${DRY_RUN:-0}" != 1 ]]; then validate "$slot"; fi
    log "slot $slot runs $image and is validated; make it live with: $0 switch $slot"
    ;;
  live-slot) live_slot ;;
  validate) validate "${2:-}" ;;
  switch) switch_to "${2:-}" ;;
  rollback)
    prev="$(previous_slot)"
    [[ -n "$prev" ]] || die "no previous slot recorded on service meshops; nothing to roll back to"
    log "rolling back to slot $prev"
    switch_to "$prev"
    ;;
  *) echo "unknown command: $cmd" >&2; usage >&2; exit 2 ;;
esac
