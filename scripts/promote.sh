#!/usr/bin/env bash
# The CD step for production: blue/green with validation on both sides of
# the switch and an automatic rollback.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

usage() {
  cat <<'USAGE'
usage: scripts/promote.sh IMAGE
       scripts/promote.sh --help

IMAGE is pinned by digest (NAME@sha256:DIGEST, as scripts/verify-image.sh
prints it): a tag is refused.

1. finds the live slot (blue or green) and takes the other one as idle
2. pins IMAGE in k8s/overlays/prod (scripts/set-image.sh), deploys it to
   the idle slot and validates it there (scripts/bluegreen.sh deploy: rollout, then scripts/validate-deployment.sh
   through svc/meshops-IDLE); on failure stops here, live traffic untouched
3. switches the live Services to the idle slot (validated once more first)
4. validates the live Service (svc/meshops) after the switch
5. if that fails, rolls back to the previous slot and exits non-zero

Environment: NAMESPACE (default meshops-prod), KUBECTL (default kubectl),
MESHOPS_BIN (the client), ROLLOUT_TIMEOUT, VALIDATE_QUESTIONS,
VALIDATE_P95_MS (see scripts/bluegreen.sh --help).
USAGE
}

image=""
while (( $# )); do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    -*) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
    *) [[ -z "$image" ]] || { echo "one IMAGE only" >&2; exit 2; }; image="$1"; shift ;;
  esac
done
[[ -n "$image" ]] || { usage >&2; exit 2; }
[[ "$image" =~ @sha256:[0-9a-f]{64}$ ]] \
  || die "prod takes an image pinned by digest (NAME@sha256:DIGEST), not '$image' (scripts/verify-image.sh prints it)"
bg="$REPO_ROOT/scripts/bluegreen.sh"

live="$("$bg" live-slot)"
idle=green
[[ "$live" == green ]] && idle=blue
log "promote $image: live slot '${live:-none}', idle slot $idle"

if ! "$bg" deploy "$idle" "$image"; then
  die "promotion stopped: slot $idle failed its rollout or validation; live slot '${live:-none}' keeps serving"
fi
"$bg" switch "$idle" || die "promotion stopped: the switch to $idle failed; live slot '${live:-none}' keeps serving"
if ! "$bg" validate live; then
  warn "the live Service failed validation after switching to $idle; rolling back"
  if "$bg" rollback; then
    die "promotion failed and was rolled back: live slot is '$("$bg" live-slot)' again"
  fi
  die "promotion failed AND the rollback failed: check with scripts/bluegreen.sh status"
fi
log "promoted $image: live slot is $idle (previous: ${live:-none}; undo with scripts/bluegreen.sh rollback)"
