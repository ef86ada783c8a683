#!/usr/bin/env bash
# Signs the release artifacts keylessly with cosign (Sigstore).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

usage() {
  cat <<'USAGE'
usage: scripts/sign-artifacts.sh DIST
       scripts/sign-artifacts.sh --help

Signs every *.tar.gz, the SBOM (*.cdx.json) and SHA256SUMS in DIST with
`cosign sign-blob --yes --bundle FILE.sigstore.json FILE`. In GitHub
Actions the signature is keyless (the workflow's OIDC identity, needs
`id-token: write`). Verify with:
  cosign verify-blob --bundle FILE.sigstore.json \
    --certificate-identity-regexp 'https://github.com/OWNER/meshops/' \
    --certificate-oidc-issuer https://token.actions.githubusercontent.com FILE
USAGE
}

case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  "") usage >&2; exit 2 ;;
esac
dist="$1"
[[ -d "$dist" ]] || die "$dist is not a folder (run scripts/ci-build.sh first)"
have cosign || die "cosign is not installed"
shopt -s nullglob
files=("$dist"/*.tar.gz "$dist"/*.cdx.json "$dist"/SHA256SUMS)
(( ${#files[@]} > 0 )) || die "nothing to sign in $dist"
for f in "${files[@]}"; do
  log "cosign sign-blob $f"
  cosign sign-blob --yes --bundle "$f.sigstore.json" "$f" >/dev/null
done
log "signed ${#files[@]} files; bundles beside them (*.sigstore.json)"
