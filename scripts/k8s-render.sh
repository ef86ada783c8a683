#!/usr/bin/env bash
# Render a Kustomize folder of k8s/ to stdout (the ConfigMaps read config/,
# agents/ and prompts/ in place, which needs LoadRestrictionsNone).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

usage() {
  cat <<'USAGE'
usage: scripts/k8s-render.sh TARGET [--image IMAGE]
       scripts/k8s-render.sh --help

TARGET is an environment (dev, qa, prod), or a folder under k8s/
(e.g. bluegreen/green, ab/overlays/prod). Prints the manifests on stdout:
  scripts/k8s-render.sh dev | kubectl apply -f -
--image IMAGE replaces the image of every meshops container.
Needs kubectl (its built-in kustomize) or kustomize.
USAGE
}

target="" image=""
while (( $# )); do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --image) image="${2:?--image needs a value}"; shift 2 ;;
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

if have kubectl; then
  rendered="$(kubectl kustomize --load-restrictor LoadRestrictionsNone "$dir")"
elif have kustomize; then
  rendered="$(kustomize build --load-restrictor LoadRestrictionsNone "$dir")"
else
  die "neither kubectl nor kustomize is installed"
fi
if [[ -n "$image" ]]; then
  # Only the meshops container's image line (image: <registry>/meshops:<tag>).
  rendered="$(sed -E "s#^([[:space:]]*image:[[:space:]]*)[^[:space:]]*meshops(:[^[:space:]]*)?\$#\1${image}#" <<<"$rendered")"
fi
printf '%s\n' "$rendered"
