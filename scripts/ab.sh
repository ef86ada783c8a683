#!/usr/bin/env bash
# A/B weights on the meshops GRPCRoute (k8s/ab).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

usage() {
  cat <<'USAGE'
usage: scripts/ab.sh set-weights A B
       scripts/ab.sh show
       scripts/ab.sh --help

set-weights  sets the weights of arm A (meshops-blue) and arm B
             (meshops-green) on GRPCRoute meshops, rule 3 (the weighted
             split; requests with header x-meshops-arm: a|b are forced to
             one arm by rules 1 and 2). Weights are integers 0..1000000,
             not both 0; they are relative (90 10 = 90 % / 10 %).
show         prints the route's rules and weights.

Environment: NAMESPACE (default meshops-prod), KUBECTL (default kubectl),
DRY_RUN=1 prints the patch instead of applying it.
The weights checked into git per environment are in k8s/ab/overlays/<env>.
USAGE
}

NAMESPACE="${NAMESPACE:-meshops-prod}"
KUBECTL="${KUBECTL:-kubectl}"

cmd="${1:-}"
case "$cmd" in
  -h|--help) usage; exit 0 ;;
  set-weights)
    a="${2:-}" b="${3:-}"
    for w in "$a" "$b"; do
      if ! [[ "$w" =~ ^[0-9]+$ ]] || (( w > 1000000 )); then
        die "weights must be integers 0..1000000, got '$w'"
      fi
    done
    (( a + b > 0 )) || die "at least one weight must be positive"
    patch="[{\"op\":\"test\",\"path\":\"/spec/rules/2/backendRefs/0/name\",\"value\":\"meshops-blue\"},\
{\"op\":\"test\",\"path\":\"/spec/rules/2/backendRefs/1/name\",\"value\":\"meshops-green\"},\
{\"op\":\"replace\",\"path\":\"/spec/rules/2/backendRefs/0/weight\",\"value\":$a},\
{\"op\":\"replace\",\"path\":\"/spec/rules/2/backendRefs/1/weight\",\"value\":$b}]"
    if [[ "${DRY_RUN:-0}" == 1 ]]; then
      printf 'DRY_RUN: %s -n %s patch grpcroute meshops --type=json -p %s\n' "$KUBECTL" "$NAMESPACE" "$patch"
      exit 0
    fi
    have "$KUBECTL" || die "$KUBECTL not found (set KUBECTL=...)"
    "$KUBECTL" -n "$NAMESPACE" patch grpcroute meshops --type=json -p "$patch"
    log "weights now A (meshops-blue) $a, B (meshops-green) $b in $NAMESPACE"
    ;;
  show)
    have "$KUBECTL" || die "$KUBECTL not found (set KUBECTL=...)"
    "$KUBECTL" -n "$NAMESPACE" get grpcroute meshops \
      -o jsonpath='{range .spec.rules[*]}{.matches}{" -> "}{range .backendRefs[*]}{.name}={.weight}{" "}{end}{"\n"}{end}'
    ;;
  "") usage >&2; exit 2 ;;
  *) echo "unknown command: $cmd" >&2; usage >&2; exit 2 ;;
esac
