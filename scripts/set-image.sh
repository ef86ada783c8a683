#!/usr/bin/env bash
# Sets the meshops image of an environment's overlay (k8s/overlays/ENV), as
# `kustomize edit set image` would: what the cluster runs is then what the
# overlay says, whether kubectl, Argo CD or Flux applies it.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

usage() {
  cat <<'USAGE'
usage: scripts/set-image.sh ENV IMAGE
       scripts/set-image.sh --help

ENV is dev, qa or prod. IMAGE is REGISTRY/NAME@sha256:DIGEST (pinned) or,
for dev and qa only, REGISTRY/NAME:TAG. prod takes a digest only: a tag can
be moved to other bytes after they were verified, a digest cannot (get it
verified with scripts/verify-image.sh).

Rewrites the `images:` list of k8s/overlays/ENV/kustomization.yaml with one
entry mapping ghcr.io/meshops/meshops (the base's name) to IMAGE (newName,
and digest or newTag). Running it again with the same IMAGE changes nothing.
Prints the overlay's path. In a GitOps set-up commit that change: Argo CD or
Flux then rolls it out.
USAGE
}

case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  dev|qa|prod) ;;
  "") usage >&2; exit 2 ;;
  *) echo "unknown environment: $1 (dev, qa or prod)" >&2; usage >&2; exit 2 ;;
esac
(( $# == 2 )) || { usage >&2; exit 2; }
env="$1" image="$2"

# The name the base maps `meshops` to; every overlay's images entry matches it.
BASE_NAME=ghcr.io/meshops/meshops
overlay="$REPO_ROOT/k8s/overlays/$env/kustomization.yaml"
[[ -f "$overlay" ]] || die "no overlay $overlay"

digest="" tag=""
if [[ "$image" == *@* ]]; then
  digest="${image##*@}"
  name="${image%@*}"
  [[ "$digest" =~ ^sha256:[0-9a-f]{64}$ ]] || die "'$digest' is not a sha256 digest (sha256: and 64 hex digits)"
  # NAME:TAG@DIGEST: the digest decides; drop the tag (a ':' after the last '/').
  last="${name##*/}"
  [[ "$last" == *:* ]] && name="${name%:*}"
else
  last="${image##*/}"
  [[ "$last" == *:* ]] || die "'$image' has neither a digest nor a tag"
  tag="${last##*:}"
  name="${image%:*}"
  [[ "$env" != prod ]] || die "prod takes an image pinned by digest (NAME@sha256:...), not the tag '$tag'"
fi
[[ "$name" =~ ^[a-z0-9]([a-z0-9._/:-]*[a-z0-9])?$ ]] || die "'$name' is not an image name"
[[ -z "$tag" || "$tag" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || die "'$tag' is not an image tag"

block="images:
  # Set by scripts/set-image.sh; the base maps \`meshops\` to $BASE_NAME.
  - name: $BASE_NAME
    newName: $name"
if [[ -n "$digest" ]]; then
  block+="
    digest: $digest"
else
  block+="
    newTag: \"$tag\""
fi

# Replace the top-level `images:` block (up to the next top-level key or
# comment), or add one at the end.
tmp="$(mktemp "${TMPDIR:-/tmp}/meshops-overlay.XXXXXX")"
trap 'rm -f "$tmp"' EXIT
BLOCK="$block" awk '
  /^images:/ { print ENVIRON["BLOCK"]; skipping = 1; done = 1; next }
  skipping && /^[A-Za-z_#]/ { skipping = 0 }
  !skipping { print }
  END { if (!done) print ENVIRON["BLOCK"] }
' "$overlay" >"$tmp"
if cmp -s "$tmp" "$overlay"; then
  log "k8s/overlays/$env already runs $image"
else
  cat "$tmp" >"$overlay"
  log "k8s/overlays/$env now runs $name${digest:+@$digest}${tag:+:$tag}"
fi
printf '%s\n' "$overlay"
