#!/usr/bin/env bash
# The project's checks, shared by .ci/run and the GitHub workflows:
# generated copies, formatting, lints, then the README's test command.
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: scripts/check.sh [--help]

Runs, from the repository root:
  scripts/sync-k8s-config.sh --check   (k8s/base/configmaps matches config/, agents/, prompts/)
  cargo fmt --check
  cargo clippy --all-targets -- -D warnings
  cargo test
Exits non-zero on the first failure.
USAGE
}

case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  "") ;;
  *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
esac

cd "$(dirname "$0")/.."
echo "== scripts/sync-k8s-config.sh --check"
scripts/sync-k8s-config.sh --check
echo "== cargo fmt --check"
cargo fmt --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings
echo "== cargo test"
cargo test
