#!/usr/bin/env bash
# The pull-request build: lint, tests, eval on the toy dataset, quality gate.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

usage() {
  cat <<'USAGE'
usage: scripts/pr-build.sh [--results DIR] [--baseline PATH] [--gates FILE] [--skip-lint] [--skip-tests]
       scripts/pr-build.sh --help

Steps, from the repository root; exits non-zero on the first failure:
  1. cargo fmt --check
  2. cargo clippy --all-targets -- -D warnings
  3. cargo test
  4. meshops validate (config/, agents/, prompts/)
  5. meshops eval run --dataset eval/datasets/toy.jsonl --out RESULTS/run
  6. meshops eval compare BASELINE RESULTS/run --gates GATES --out RESULTS/compare.md
     (fails when a gate fails)
  7. publishes RESULTS: the folder is printed, and compare.md is appended to
     $GITHUB_STEP_SUMMARY when set (the workflow uploads the folder)

Defaults: RESULTS eval/results/pr-<short sha>, BASELINE eval/baselines/toy,
GATES eval/gates.toml. Step 6 fails when the baseline or the gates file
does not exist.
USAGE
}

results="" baseline="$REPO_ROOT/eval/baselines/toy" gates="$REPO_ROOT/eval/gates.toml" lint=1 tests=1
while (( $# )); do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --results) results="${2:?--results needs a value}"; shift 2 ;;
    --baseline) baseline="${2:?--baseline needs a value}"; shift 2 ;;
    --gates) gates="${2:?--gates needs a value}"; shift 2 ;;
    --skip-lint) lint=0; shift ;;
    --skip-tests) tests=0; shift ;;
    *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
done
cd "$REPO_ROOT"
sha="$(git rev-parse --short HEAD 2>/dev/null || echo local)"
results="${results:-$REPO_ROOT/eval/results/pr-$sha}"
mkdir -p "$results"

if (( lint )); then
  log "cargo fmt --check"; cargo fmt --check
  log "cargo clippy --all-targets -- -D warnings"; cargo clippy --all-targets --locked -- -D warnings
else
  log "SKIP: lint (--skip-lint)"
fi
if (( tests )); then
  log "cargo test"; cargo test --locked
else
  log "SKIP: tests (--skip-tests)"
fi

bin="$(meshops_bin debug)"
log "meshops validate"
"$bin" --root "$REPO_ROOT" validate

log "eval on eval/datasets/toy.jsonl -> $results/run"
"$bin" --root "$REPO_ROOT" eval run --dataset eval/datasets/toy.jsonl --out "$results/run"
[[ -e "$baseline" ]] || die "no baseline at $baseline (commit one from a trusted run)"
[[ -f "$gates" ]] || die "no gates file at $gates"
log "eval compare $baseline vs $results/run under $gates"
gate_rc=0
"$bin" eval compare "$baseline" "$results/run" --gates "$gates" --out "$results/compare.md" || gate_rc=$?
if [[ -n "${GITHUB_STEP_SUMMARY:-}" && -f "$results/compare.md" ]]; then
  cat "$results/compare.md" >>"$GITHUB_STEP_SUMMARY"
fi
(( gate_rc == 0 )) || die "quality gate failed (see $results/compare.md)"
{
  echo "pr-build $sha $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "lint: $([[ $lint == 1 ]] && echo ok || echo skipped)"
  echo "tests: $([[ $tests == 1 ]] && echo ok || echo skipped)"
  echo "eval: ok (gates passed)"
} >"$results/pr-build.txt"
log "PR build passed; results in $results"
echo "$results"
