#!/usr/bin/env bash
# The CI build (main branch): full eval, release build, artifact tarball with
# SHA-256 sums, SBOM.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

usage() {
  cat <<'USAGE'
usage: scripts/ci-build.sh [--dist DIR] [--results DIR] [--skip-eval]
       scripts/ci-build.sh --help

Steps, from the repository root; exits non-zero on the first failure:
  1. cargo build --release --locked
  2. meshops validate
  3. full eval: meshops eval run --dataset eval/datasets/sample.jsonl
     --out RESULTS/run, then eval compare against eval/baselines/sample
     under eval/gates.toml when that baseline exists
  4. DIST/meshops-VERSION-ARCH-linux.tar.gz holding bin/meshops, config/,
     agents/, prompts/, corpus/ and SHA256SUMS; DIST/SHA256SUMS for the
     tarball and the SBOM
  5. SBOM of the Rust dependencies, CycloneDX JSON: `cargo cyclonedx` when
     installed, else generated from `cargo metadata` (DIST/meshops.cdx.json)

Defaults: DIST dist/, RESULTS eval/results/ci-<short sha>.
Image build and signing are workflow steps (docker, cosign), not here.
USAGE
}

dist="" results="" eval=1
while (( $# )); do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --dist) dist="${2:?--dist needs a value}"; shift 2 ;;
    --results) results="${2:?--results needs a value}"; shift 2 ;;
    --skip-eval) eval=0; shift ;;
    *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
done
cd "$REPO_ROOT"
sha="$(git rev-parse --short HEAD 2>/dev/null || echo local)"
dist="${dist:-$REPO_ROOT/dist}"
results="${results:-$REPO_ROOT/eval/results/ci-$sha}"
mkdir -p "$dist" "$results"

log "cargo build --release --locked"
bin="$(meshops_bin release)"
log "meshops validate"
"$bin" --root "$REPO_ROOT" validate

if (( eval )); then
  log "full eval: eval/datasets/sample.jsonl -> $results/run"
  "$bin" --root "$REPO_ROOT" eval run --dataset eval/datasets/sample.jsonl --out "$results/run"
  if [[ -e eval/baselines/sample && -f eval/gates.toml ]]; then
    "$bin" eval compare eval/baselines/sample "$results/run" --gates eval/gates.toml --out "$results/compare.md"
  else
    log "SKIP: eval compare (no eval/baselines/sample or no eval/gates.toml)"
  fi
else
  log "SKIP: eval (--skip-eval)"
fi

version="$("$bin" --version | awk '{print $2}')"
name="meshops-${version}-$(uname -m)-linux"
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/$name/bin"
cp "$bin" "$stage/$name/bin/meshops"
cp -R config agents prompts corpus "$stage/$name/"
(cd "$stage/$name" && find . -type f -print0 | sort -z | xargs -0 sha256sum >"$stage/sums")
mv "$stage/sums" "$stage/$name/SHA256SUMS"
tarball="$dist/$name.tar.gz"
log "artifact $tarball"
tar -C "$stage" --sort=name --owner=0 --group=0 --numeric-owner -czf "$tarball" "$name"

sbom="$dist/meshops.cdx.json"
if cargo cyclonedx --help >/dev/null 2>&1; then
  log "SBOM with cargo cyclonedx"
  cargo cyclonedx --format json --override-filename meshops.cdx
  mv meshops.cdx.json "$sbom"
else
  log "SBOM from cargo metadata (cargo-cyclonedx not installed)"
  cargo metadata --format-version 1 --locked | python3 "$REPO_ROOT/scripts/sbom-from-metadata.py" >"$sbom"
fi
(cd "$dist" && sha256sum "$(basename "$tarball")" "$(basename "$sbom")" >SHA256SUMS)
log "CI build done: $tarball, $sbom, $dist/SHA256SUMS"
cat "$dist/SHA256SUMS"
