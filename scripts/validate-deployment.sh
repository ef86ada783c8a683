#!/usr/bin/env bash
# Validate a running meshops gateway from the outside, the way a client sees
# it. Exit code 0 means every check passed; 1 means at least one failed.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

usage() {
  cat <<'USAGE'
usage: scripts/validate-deployment.sh TARGET [--questions N] [--p95-ms MS]
                                      [--dataset FILE] [--out DIR]
       scripts/validate-deployment.sh --help

TARGET is the gateway URL (http:// or https://HOST:PORT) or HOST:PORT
(https when MESHOPS_CA_CERT names the CA file of a TLS gateway, as the prod
overlay's; MESHOPS_API_KEY is sent when set). Checks, in order:
  1. health    grpc.health.v1 reports SERVING for meshops.v1.Gateway
  2. api       server reflection lists meshops.v1.Gateway      (meshops probe)
  3. answers   N questions from the dataset (rows with relevant_doc_ids),
               each answered with at least one citation or refused by the
               critic (no citations, a rejecting verdict), at least half
               cited                                      (meshops ask --target)
  4. latency   p95 of those calls, measured at the client, is at most MS
Every check runs and prints PASS or FAIL; the exit code is 1 when any failed.

Defaults: N 5, MS 2000, FILE eval/datasets/toy.jsonl, DIR none (with --out,
each answer is kept as DIR/answer-ID.json and the verdict as DIR/validation.txt).
The client is $MESHOPS_BIN, else built with cargo (debug profile).
For a cluster, port-forward first:
  kubectl -n meshops-dev port-forward svc/meshops 50051:50051 &
  scripts/validate-deployment.sh http://127.0.0.1:50051
USAGE
}

target="" questions=5 p95_ms=2000 dataset="$REPO_ROOT/eval/datasets/toy.jsonl" out=""
while (( $# )); do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --questions) questions="${2:?--questions needs a value}"; shift 2 ;;
    --p95-ms) p95_ms="${2:?--p95-ms needs a value}"; shift 2 ;;
    --dataset) dataset="${2:?--dataset needs a value}"; shift 2 ;;
    --out) out="${2:?--out needs a value}"; shift 2 ;;
    -*) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
    *) [[ -z "$target" ]] || { echo "one TARGET only" >&2; exit 2; }; target="$1"; shift ;;
  esac
done
[[ -n "$target" ]] || { usage >&2; exit 2; }
[[ "$questions" =~ ^[1-9][0-9]*$ ]] || die "--questions must be a positive number, got '$questions'"
[[ "$p95_ms" =~ ^[0-9]+$ ]] || die "--p95-ms must be a number of milliseconds, got '$p95_ms'"
[[ -f "$dataset" ]] || die "--dataset $dataset: no such file"
if [[ "$target" != *://* ]]; then
  if [[ -n "${MESHOPS_CA_CERT:-}" ]]; then target="https://$target"; else target="http://$target"; fi
fi
[[ -n "$out" ]] && mkdir -p "$out"

bin="$(meshops_bin debug)"
failures=0
report=()
result() { # NAME PASS|FAIL DETAIL
  local line
  line="$(printf '%-8s %s  %s' "$1" "$2" "$3")"
  report+=("$line")
  printf '%s\n' "$line"
  [[ "$2" == PASS ]] || failures=$((failures + 1))
}

echo "validating $target"

# 1-2. Health and reflection, over the wire (meshops probe exits non-zero
# unless SERVING and the Gateway is listed; its output says which).
probe_out="$("$bin" probe --target "$target" --timeout 5 2>&1)" && probe_rc=0 || probe_rc=$?
health="$(sed -n 's/^health: *//p' <<<"$probe_out")"
services="$(sed -n 's/^services: *//p' <<<"$probe_out")"
if [[ "$health" == "SERVING (meshops.v1.Gateway)" ]]; then
  result health PASS "$health"
else
  result health FAIL "${health:-no answer: $(tail -n 1 <<<"$probe_out")}"
fi
if grep -qw 'meshops\.v1\.Gateway' <<<"$services"; then
  result api PASS "reflection lists: $services"
else
  result api FAIL "reflection does not list meshops.v1.Gateway (exit $probe_rc): ${services:-$(tail -n 1 <<<"$probe_out")}"
fi

# 3. Questions with an expected source: each must come back with citations,
# or as the question flow's honest refusal (the critic rejected every
# revision: a rejecting verdict and no citations); at least half cited.
mapfile -t rows < <(python3 - "$dataset" "$questions" <<'PY'
import json, sys
path, n = sys.argv[1], int(sys.argv[2])
picked = 0
with open(path, encoding="utf-8") as f:
    for line in f:
        line = line.strip()
        if not line:
            continue
        row = json.loads(line)
        if row.get("relevant_doc_ids") and row.get("query"):
            # One line per row: id, a tab, the question (tabs/newlines flattened).
            print(f"{row.get('id', picked)}\t{' '.join(str(row['query']).split())}")
            picked += 1
            if picked == n:
                break
PY
)
(( ${#rows[@]} > 0 )) || die "no rows with relevant_doc_ids in $dataset"

latencies=()
answered=0
refused=0
for row in "${rows[@]}"; do
  id="${row%%$'\t'*}" query="${row#*$'\t'}"
  start=$(date +%s%N)
  if json="$("$bin" ask --target "$target" --json "$query" 2>&1)"; then
    end=$(date +%s%N)
    latencies+=("$(( (end - start) / 1000000 ))")
    [[ -n "$out" ]] && printf '%s\n' "$json" >"$out/answer-$id.json"
    cites="$(python3 -c 'import json,sys; print(len(json.load(sys.stdin).get("citations") or []))' <<<"$json" 2>/dev/null || echo 0)"
    rejected="$(python3 -c 'import json,sys; v=json.load(sys.stdin).get("verdict") or {}; print("yes" if v.get("accepted") is False else "no")' <<<"$json" 2>/dev/null || echo no)"
    if (( cites > 0 )); then
      answered=$((answered + 1))
      printf '  %-6s %5d ms  %d citation(s)  %s\n' "$id" "${latencies[-1]}" "$cites" "$query"
    elif [[ "$rejected" == yes ]]; then
      refused=$((refused + 1))
      printf '  %-6s %5d ms  REFUSED (critic rejected every draft)  %s\n' "$id" "${latencies[-1]}" "$query"
    else
      printf '  %-6s %5d ms  NO CITATIONS  %s\n' "$id" "${latencies[-1]}" "$query"
    fi
  else
    printf '  %-6s error: %s\n' "$id" "$(tail -n 1 <<<"$json")"
  fi
done
summary="$answered/${#rows[@]} questions answered with citations, $refused refused by the critic"
if (( answered + refused == ${#rows[@]} && answered * 2 >= ${#rows[@]} )); then
  result answers PASS "$summary"
else
  result answers FAIL "$summary (each must be cited or refused, at least half cited)"
fi

# 4. p95 client latency (nearest rank) over the calls that returned.
if (( ${#latencies[@]} == 0 )); then
  result latency FAIL "no call returned"
else
  p95="$(printf '%s\n' "${latencies[@]}" | sort -n | awk '{v[NR]=$1} END {r=int(0.95*NR); if (r<0.95*NR) r++; if (r<1) r=1; print v[r]}')"
  if (( p95 <= p95_ms )); then
    result latency PASS "p95 ${p95} ms <= ${p95_ms} ms over ${#latencies[@]} calls"
  else
    result latency FAIL "p95 ${p95} ms > ${p95_ms} ms over ${#latencies[@]} calls"
  fi
fi

verdict=PASSED
(( failures == 0 )) || verdict="FAILED ($failures check(s))"
echo "validation of $target: $verdict"
if [[ -n "$out" ]]; then
  { echo "target: $target"; printf '%s\n' "${report[@]}"; echo "verdict: $verdict"; } >"$out/validation.txt"
fi
(( failures == 0 ))
