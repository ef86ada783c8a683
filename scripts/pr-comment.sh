#!/usr/bin/env bash
# Posts (or updates) the eval comparison as a comment on a pull request.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

usage() {
  cat <<'USAGE'
usage: scripts/pr-comment.sh FILE
       scripts/pr-comment.sh --help

Posts FILE (the markdown of `meshops eval compare --out`) on pull request
$PR_NUMBER with the GitHub CLI, editing this workflow's previous comment
when there is one so a pull request carries one up-to-date comparison.
Needs GH_TOKEN (pull-requests: write) and PR_NUMBER. When FILE does not
exist (the build failed before the comparison) it says so and exits 0.
USAGE
}

case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  "") usage >&2; exit 2 ;;
esac
file="$1"
[[ -n "${PR_NUMBER:-}" ]] || die "PR_NUMBER is not set"
if [[ ! -f "$file" ]]; then
  log "no comparison at $file (the build stopped before it); nothing to post"
  exit 0
fi
have gh || die "the GitHub CLI (gh) is not installed"
body="$(mktemp)"
trap 'rm -f "$body"' EXIT
{ echo "### meshops eval: this pull request vs the baseline"; echo; cat "$file"; } >"$body"
if gh pr comment "$PR_NUMBER" --edit-last --body-file "$body" 2>/dev/null; then
  log "updated the comparison comment on #$PR_NUMBER"
else
  gh pr comment "$PR_NUMBER" --body-file "$body"
  log "posted the comparison on #$PR_NUMBER"
fi
