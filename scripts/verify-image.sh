#!/usr/bin/env bash
# Checks an image's keyless signature with `cosign verify` and prints the
# image pinned by the digest that was verified: the CD build deploys that
# reference, never a tag that could have moved since.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

usage() {
  cat <<'USAGE'
usage: scripts/verify-image.sh IMAGE
       scripts/verify-image.sh --help

IMAGE is NAME:TAG or NAME@sha256:DIGEST. Runs
  cosign verify --certificate-identity-regexp ID --certificate-oidc-issuer ISSUER IMAGE
which resolves a tag once, then checks that the manifest carries a keyless
signature (Sigstore) made by the CI workflow that built it. Prints
NAME@sha256:DIGEST, the digest named in the verified signature (every
signature must name the same one; for IMAGE given by digest, that digest).
In GitHub Actions it also writes image=NAME@sha256:DIGEST to $GITHUB_OUTPUT.

Environment:
  COSIGN_IDENTITY_REGEXP  signer identity (default: the ci.yml workflow of
                          $GITHUB_REPOSITORY on main, as scripts/image.sh
                          signs it:
                          ^https://github.com/OWNER/REPO/.github/workflows/ci.yml@refs/heads/main$)
  COSIGN_OIDC_ISSUER      default https://token.actions.githubusercontent.com
  COSIGN                  the cosign binary (default cosign)
USAGE
}

case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  -*) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
  "") usage >&2; exit 2 ;;
esac
(( $# == 1 )) || { usage >&2; exit 2; }
image="$1"
COSIGN="${COSIGN:-cosign}"
have "$COSIGN" || die "$COSIGN not found: install cosign (sigstore/cosign-installer in GitHub Actions)"
have python3 || die "python3 is required to read cosign's output"

identity="${COSIGN_IDENTITY_REGEXP:-}"
if [[ -z "$identity" ]]; then
  [[ -n "${GITHUB_REPOSITORY:-}" ]] || die "set COSIGN_IDENTITY_REGEXP (or GITHUB_REPOSITORY) to name the expected signer"
  repo_re="${GITHUB_REPOSITORY//./\\.}"
  identity="^https://github\\.com/${repo_re}/\\.github/workflows/ci\\.yml@refs/heads/main\$"
fi
issuer="${COSIGN_OIDC_ISSUER:-https://token.actions.githubusercontent.com}"

# NAME without tag or digest (a ':' after the last '/' starts a tag).
name="${image%@*}"
last="${name##*/}"
[[ "$last" == *:* ]] && name="${name%:*}"
wanted=""
if [[ "$image" == *@* ]]; then
  wanted="${image##*@}"
  [[ "$wanted" =~ ^sha256:[0-9a-f]{64}$ ]] || die "'$wanted' is not a sha256 digest"
fi

log "cosign verify $image (signer $identity, issuer $issuer)"
payload="$("$COSIGN" verify --certificate-identity-regexp "$identity" \
  --certificate-oidc-issuer "$issuer" --output json "$image")" \
  || die "cosign verify failed for $image: not signed by $identity; nothing is deployed"

# The digest every verified signature names (simple signing payload:
# critical.image.docker-manifest-digest); cosign prints a JSON array, or
# one JSON document per line.
digest="$(python3 -c '
import json, sys
text = sys.stdin.read().strip()
try:
    docs = json.loads(text)
except ValueError:
    docs = [json.loads(line) for line in text.splitlines() if line.strip()]
if isinstance(docs, dict):
    docs = [docs]
digests = {d["critical"]["image"]["docker-manifest-digest"] for d in docs}
if len(digests) != 1:
    sys.exit("signatures name %d digests: %s" % (len(digests), sorted(digests)))
print(digests.pop())
' <<<"$payload")" || die "cannot read the verified digest from cosign's output"
[[ "$digest" =~ ^sha256:[0-9a-f]{64}$ ]] || die "cosign reported '$digest', not a sha256 digest"
if [[ -n "$wanted" && "$digest" != "$wanted" ]]; then
  die "the signature is for $digest, not the requested $wanted"
fi
pinned="$name@$digest"
log "verified: $pinned"
if [[ -n "${GITHUB_OUTPUT:-}" ]]; then echo "image=$pinned" >>"$GITHUB_OUTPUT"; fi
printf '%s\n' "$pinned"
