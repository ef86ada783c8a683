#!/usr/bin/env bash
# Render a Kustomize folder of k8s/ to stdout, after checking that the
# base's copies of config/, agents/ and prompts/ are up to date.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

usage() {
  cat <<'USAGE'
usage: scripts/k8s-render.sh TARGET
       scripts/k8s-render.sh --help

TARGET is an environment (dev, qa, prod), or a folder under k8s/
(e.g. bluegreen/green, ab/overlays/prod). Prints the manifests on stdout:
  scripts/k8s-render.sh dev | kubectl apply -f -
the same as `kubectl kustomize k8s/overlays/dev` (no flags needed), but
first it refuses a stale k8s/base/configmaps (scripts/sync-k8s-config.sh
--check), so what is deployed is what config/, agents/ and prompts/ say.
The image is the overlay's: set it with scripts/set-image.sh ENV IMAGE.
Needs kubectl (its built-in kustomize) or kustomize.
USAGE
}

target=""
while (( $# )); do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    -*) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
    *) [[ -z "$target" ]] || { echo "one TARGET only" >&2; exit 2; }; target="$1"; shift ;;
  esac
done
[[ -n "$target" ]] || { usage >&2; exit 2; }
case "$target" in
  dev|qa|prod) dir="$REPO_ROOT/k8s/overlays/$target" ;;
  *) dir="$REPO_ROOT/k8s/$target" ;;
esac
[[ -f "$dir/kustomization.yaml" ]] || die "no kustomization.yaml in $dir"
# Prints the differences and the fix when the copies are stale.
"$REPO_ROOT/scripts/sync-k8s-config.sh" --check || exit 1

if have kubectl; then
  kubectl kustomize "$dir"
elif have kustomize; then
  kustomize build "$dir"
else
  die "neither kubectl nor kustomize is installed"
fi
