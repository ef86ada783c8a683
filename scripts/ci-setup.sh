#!/usr/bin/env bash
# Installs what the builds need beyond a Rust toolchain: rustfmt, clippy and
# the pinned validators of scripts/validators.txt. Idempotent.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

usage() {
  cat <<'USAGE'
usage: scripts/ci-setup.sh [--help]

Adds the rustfmt and clippy components (rustup) and pip-installs the pinned
validators listed in scripts/validators.txt (check-jsonschema,
kubernetes-validate, hadolint, shellcheck). Safe to run again.
USAGE
}
case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  "") ;;
  *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
esac
if have rustup; then
  rustup component add rustfmt clippy >/dev/null
else
  warn "rustup not found; assuming rustfmt and clippy are installed"
fi
have python3 || die "python3 is required for the validators"
log "pip install -r scripts/validators.txt"
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -r "$REPO_ROOT/scripts/validators.txt"
for tool in check-jsonschema kubernetes-validate hadolint shellcheck; do
  have "$tool" || die "$tool is not on PATH after installing (is pip's bin dir on PATH?)"
done
log "validators ready"
