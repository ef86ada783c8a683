#!/usr/bin/env bash
# Builds, and optionally pushes and signs, the container image.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

usage() {
  cat <<'USAGE'
usage: scripts/image.sh build IMAGE     docker build -t IMAGE .
       scripts/image.sh push IMAGE      build, push, sign (cosign, keyless in
                                        GitHub Actions) and print IMAGE@DIGEST
       scripts/image.sh --help

Needs a Docker engine with BuildKit (the Dockerfile uses cache mounts).
In GitHub Actions, `push` also writes image=IMAGE@DIGEST to $GITHUB_OUTPUT.
Signing is skipped with a warning when cosign is not installed.
USAGE
}
cmd="${1:-}" image="${2:-}"
case "$cmd" in
  -h|--help) usage; exit 0 ;;
  build|push) [[ -n "$image" ]] || { usage >&2; exit 2; } ;;
  *) usage >&2; exit 2 ;;
esac
have docker || die "docker not found"
docker info >/dev/null 2>&1 || die "no Docker engine reachable (docker info failed)"
log "docker build -t $image"
DOCKER_BUILDKIT=1 docker build -t "$image" "$REPO_ROOT"
if [[ "$cmd" == push ]]; then
  docker push "$image"
  ref="$(docker inspect --format '{{index .RepoDigests 0}}' "$image")"
  if have cosign; then
    cosign sign --yes "$ref"
  else
    warn "cosign not installed: $ref is not signed"
  fi
  if [[ -n "${GITHUB_OUTPUT:-}" ]]; then echo "image=$ref" >>"$GITHUB_OUTPUT"; fi
  echo "$ref"
fi
