#!/usr/bin/env bash
# Installs, or checks, every tool the builds and the tests need beyond a
# Rust toolchain: rustfmt, clippy, the pinned validators of
# scripts/validators.txt, buf, kubectl and the system tools the tests call.
# Idempotent. Under CI=true a test whose tool is missing fails (tests/common
# `require_tool`), so this script is the place that makes them present.
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

Checks what no package registry here can install: kubectl (its built-in
kustomize renders k8s/; at least the pinned minimum version below) and the
system tools the tests run (bash, sh, python3, tar, sha256sum, diff, kill,
jq: the README's commands, which tests/readme.rs runs, use it).
Installs PostgreSQL, Redis, Chromium and h2load (nghttp2-client) from Debian's packages when they are missing
and it runs as root (their services are not started: tests/replicas.rs
starts its own servers on loopback). Fails with how to install whatever is
missing. Prints every tool's version
at the end.
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
python3 -c 'import openai' || die "the openai Python SDK did not install (tests/openai_api.rs drives the HTTP API with it)"
python3 -c 'import mcp' || die "the mcp Python SDK did not install (tests/mcp_server.rs drives the MCP server with it)"
have mlflow || die "mlflow did not install (tests/mlflow.rs publishes an evaluation run to a real MLflow server)"

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

# The reference MCP server the tool tests start over stdio (tests/tools.rs,
# src/tools/mcp/tests.rs), pinned, in its own folder the tests look in.
EVERYTHING_VERSION=2026.8.31
mcp_dir="$HOME/.cache/meshops-npm"
everything="$mcp_dir/node_modules/@modelcontextprotocol/server-everything"
have node || die "node is required: tests/tools.rs runs the MCP reference server (@modelcontextprotocol/server-everything)"
if [[ -f "$everything/package.json" ]] \
  && grep -q "\"version\": \"$EVERYTHING_VERSION\"" "$everything/package.json"; then
  log "@modelcontextprotocol/server-everything $EVERYTHING_VERSION already in $mcp_dir"
else
  have npm || die "npm is required to install @modelcontextprotocol/server-everything"
  log "npm install @modelcontextprotocol/server-everything@$EVERYTHING_VERSION into $mcp_dir"
  mkdir -p "$mcp_dir"
  npm install --silent --no-audit --no-fund --prefix "$mcp_dir" \
    "@modelcontextprotocol/server-everything@$EVERYTHING_VERSION" >&2
fi
[[ -f "$everything/dist/index.js" ]] || die "@modelcontextprotocol/server-everything did not install into $mcp_dir"

# kubectl: not on any package registry these builds use, so it is checked,
# never downloaded. 1.27 is the first kubectl with kustomize v5, which the
# manifests are written and tested for.
KUBECTL_MIN_VERSION=1.27
have kubectl || die "kubectl is not installed; tests/delivery.rs renders k8s/ with it. \
Install kubectl $KUBECTL_MIN_VERSION or newer from your system's packages or \
https://kubernetes.io/docs/tasks/tools/ (GitHub's ubuntu runners have it), then run this again"
kubectl_version="$(kubectl version --client -o json 2>/dev/null \
  | python3 -c 'import json, sys; v = json.load(sys.stdin)["clientVersion"]; print(v["major"].rstrip("+") + "." + v["minor"].rstrip("+"))')" \
  || die "cannot read kubectl's client version (kubectl version --client -o json)"
min_minor="${KUBECTL_MIN_VERSION#*.}"
[[ "${kubectl_version%%.*}" == 1 && "${kubectl_version#*.}" -ge "$min_minor" ]] \
  || die "kubectl $kubectl_version is older than $KUBECTL_MIN_VERSION (kustomize v5); upgrade it"

# System tools the tests run directly.
for tool in bash sh python3 tar sha256sum diff kill jq; do
  # type -P: an executable on PATH (the tests cannot use bash's builtin kill).
  [[ -n "$(type -P "$tool")" ]] || die "$tool is not installed; the tests run it (install it with the system's packages)"
done

# PostgreSQL and Redis, for tests/replicas.rs (the tests start their own
# servers on loopback in temp dirs; the packages' own services are never
# started: policy-rc.d refuses them while installing), and Chromium, the
# headless browser tests/report_html.rs loads the report pages in.
pg_bin() { local d; for d in /usr/lib/postgresql/*/bin; do [[ -x "$d/$1" ]] && { echo "$d/$1"; return; }; done; type -P "$1"; }
missing=()
[[ -n "$(pg_bin initdb)" && -n "$(pg_bin postgres)" ]] || missing+=(postgresql)
have redis-server || missing+=(redis-server)
have chromium || missing+=(chromium)
have h2load || missing+=(nghttp2-client)
if (( ${#missing[@]} )); then
  if have apt-get && [[ "$(id -u)" == 0 ]]; then
    log "apt-get install ${missing[*]} (services not started)"
    policy=/usr/sbin/policy-rc.d
    had_policy=0; [[ -e "$policy" ]] && had_policy=1
    (( had_policy )) || { printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; }
    apt_install() { DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; }
    apt_install || { apt-get update -q >/dev/null && apt_install; } || warn "apt-get could not install ${missing[*]}"
    (( had_policy )) || rm -f "$policy"
  fi
  [[ -n "$(pg_bin initdb)" ]] || die "PostgreSQL is not installed; tests/replicas.rs starts its own server (Debian: apt-get install postgresql)"
  have redis-server || die "redis-server is not installed; tests/replicas.rs starts its own (Debian: apt-get install redis-server)"
  have chromium || die "chromium is not installed; tests/report_html.rs loads the report pages in it (Debian: apt-get install chromium)"
  have h2load || die "h2load is not installed; \`meshops bench external\` (tests/bench.rs) loads the gateway with it (Debian: apt-get install nghttp2-client)"
fi
# PostgreSQL refuses to run as root: as root, the tests run it as the
# `postgres` user the package creates, through setpriv.
if [[ "$(id -u)" == 0 ]]; then
  id postgres >/dev/null 2>&1 || die "running as root, the tests run PostgreSQL as the user postgres, which does not exist"
  have setpriv || die "setpriv (util-linux) is needed to run PostgreSQL as the user postgres"
fi

log "tool versions"
version() { printf '  %-20s %s\n' "$1" "$(head -n 1 <<<"$2")"; }
version rustfmt "$(cargo fmt --version)"
version clippy "$(cargo clippy --version)"
version kubectl "$kubectl_version ($(kubectl version --client 2>/dev/null | head -n 1))"
version kubernetes-validate "$(python3 -m pip show kubernetes-validate 2>/dev/null | sed -n 's/^Version: //p')"
version check-jsonschema "$(check-jsonschema --version)"
version actionlint "$(actionlint -version)"
version hadolint "$(hadolint --version)"
version shellcheck "$(shellcheck --version | sed -n 's/^version: //p')"
version buf "$("$buf" --version)"
version node "$(node --version)"
version server-everything "$EVERYTHING_VERSION"
version python3 "$(python3 --version 2>&1)"
version openai "$(python3 -c 'import openai; print(openai.__version__)')"
version mcp "$(python3 -c 'import importlib.metadata as m; print(m.version("mcp"))')"
version mlflow "$(mlflow --version 2>/dev/null)"
version bash "$BASH_VERSION"
version tar "$(tar --version)"
version sha256sum "$(sha256sum --version)"
version diff "$(diff --version)"
version jq "$(jq --version)"
version postgres "$("$(pg_bin postgres)" --version)"
version redis-server "$(redis-server --version)"
version chromium "$(chromium --version 2>/dev/null)"
version h2load "$(h2load --version 2>/dev/null | head -1)"
log "tools ready"
