#!/usr/bin/env bash
# Writes the cluster credentials a deploy job needs and points kubectl at them.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

usage() {
  cat <<'USAGE'
usage: scripts/ci-kubeconfig.sh [--help]

Reads a kubeconfig from $KUBECONFIG_DATA (base64 or plain YAML; in GitHub
Actions an environment secret), writes it to $RUNNER_TEMP/kubeconfig (or a
temp file), mode 0600, and exports KUBECONFIG through $GITHUB_ENV for the
following steps. On a laptop you do not need it: kubectl uses your own
context. Prints the current context, never the credentials.
USAGE
}
case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  "") ;;
  *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
esac
[[ -n "${KUBECONFIG_DATA:-}" ]] || die "KUBECONFIG_DATA is empty (set the environment secret KUBECONFIG)"
dir="${RUNNER_TEMP:-$(mktemp -d)}"
file="$dir/kubeconfig"
umask 077
if base64 -d <<<"$KUBECONFIG_DATA" >"$file" 2>/dev/null && grep -q '^apiVersion:' "$file"; then
  :
else
  printf '%s\n' "$KUBECONFIG_DATA" >"$file"
fi
grep -q '^apiVersion:' "$file" || die "KUBECONFIG_DATA is not a kubeconfig"
if [[ -n "${GITHUB_ENV:-}" ]]; then
  echo "KUBECONFIG=$file" >>"$GITHUB_ENV"
fi
log "kubeconfig written to $file; context: $(KUBECONFIG="$file" kubectl config current-context 2>/dev/null || echo '?')"
