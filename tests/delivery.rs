//! Delivery: the Dockerfile, the Kustomize manifests, the GitHub workflows
//! and the scripts, checked by real validators that run offline
//! (hadolint, kubernetes-validate, check-jsonschema, shellcheck, kubectl's
//! built-in kustomize) plus structural checks of the properties that matter.
//! A validator that is not installed fails the test under `CI=true` and is
//! skipped with a printed SKIP line elsewhere (`common::require::require_tool`);
//! `.ci/run` installs or checks them all (`scripts/ci-setup.sh`).

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_yaml_ng::Value;

fn root() -> PathBuf {
    common::root()
}

/// The tool `name` for `check`: a failure under CI=true, a printed SKIP
/// (and `None`) elsewhere; see tests/common/require.rs.
#[track_caller]
fn require(name: &str, check: &str) -> Option<PathBuf> {
    common::require::require_tool(name, check)
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn files_in(dir: &str, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    v.sort();
    v
}

fn yaml_docs(s: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(s)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect()
}

fn get<'a>(v: &'a Value, path: &str) -> &'a Value {
    let mut cur = v;
    for key in path.split('.') {
        cur = match key.parse::<usize>() {
            Ok(i) => cur.get(i),
            Err(_) => cur.get(key),
        }
        .unwrap_or_else(|| panic!("missing `{path}` (at `{key}`) in {v:?}"));
    }
    cur
}

fn s<'a>(v: &'a Value, path: &str) -> &'a str {
    get(v, path).as_str().unwrap_or_else(|| panic!("`{path}` is not a string"))
}

fn kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d.get("kind").and_then(Value::as_str) == Some(kind)).collect()
}

fn named<'a>(docs: &'a [Value], k: &str, name: &str) -> &'a Value {
    kind(docs, k)
        .into_iter()
        .find(|d| s(d, "metadata.name") == name)
        .unwrap_or_else(|| panic!("no {k} {name}"))
}

/// Renders a folder of k8s/ with kubectl's built-in kustomize and no flags,
/// as Argo CD, Flux and `kubectl apply -k` build it.
#[track_caller]
fn render(rel: &str) -> Option<String> {
    render_in(&root().join("k8s"), rel)
}

/// `render` for the k8s/ folder `k8s` (a project copy's).
#[track_caller]
fn render_in(k8s: &std::path::Path, rel: &str) -> Option<String> {
    let kubectl = require("kubectl", &format!("kubectl kustomize k8s/{rel}"))?;
    let out = run(Command::new(kubectl).arg("kustomize").arg(k8s.join(rel)));
    assert!(out.status.success(), "kubectl kustomize k8s/{rel} failed:\n{}", text(&out));
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

const TARGETS: &[&str] = &[
    "base",
    "overlays/dev",
    "overlays/qa",
    "overlays/prod",
    "bluegreen",
    "bluegreen/blue",
    "bluegreen/green",
    "bluegreen/live",
    "ab/overlays/dev",
    "ab/overlays/qa",
    "ab/overlays/prod",
];

// ---------------------------------------------------------------- Dockerfile

#[test]
fn dockerfile_passes_hadolint_and_has_the_required_properties() {
    let df = read("Dockerfile");
    if let Some(hadolint) = require("hadolint", "hadolint Dockerfile") {
        let out = run(Command::new(hadolint).arg("Dockerfile").current_dir(root()));
        assert!(out.status.success(), "hadolint:\n{}", text(&out));
    }
    let lines: Vec<&str> = df.lines().map(str::trim).filter(|l| !l.starts_with('#')).collect();
    let froms: Vec<&&str> = lines.iter().filter(|l| l.starts_with("FROM ")).collect();
    assert!(froms.len() >= 2, "multi-stage: {froms:?}");
    assert!(df.contains("ARG RUST_IMAGE=rust:1.95"), "builder is rust:1.95");
    assert!(froms[0].contains("AS builder"), "{froms:?}");
    let has = |l: &str| lines.contains(&l);
    for required in [
        "USER 10001:10001",
        "EXPOSE 50051",
        "STOPSIGNAL SIGTERM",
        "ENTRYPOINT [\"meshops\"]",
        "CMD [\"serve\"]",
        "COPY config /opt/meshops/config",
        "COPY agents /opt/meshops/agents",
        "COPY prompts /opt/meshops/prompts",
        "COPY corpus /opt/meshops/corpus",
        "VOLUME [\"/var/lib/meshops\"]",
    ] {
        assert!(has(required), "Dockerfile lacks `{required}`");
    }
    for env in [
        "MESHOPS_ROOT=/opt/meshops",
        "MESHOPS__GATEWAY__LISTEN=0.0.0.0:50051",
        "MESHOPS__RETRIEVAL__DATA_DIR=/var/lib/meshops",
    ] {
        assert!(df.contains(env), "Dockerfile lacks ENV {env}");
    }
    // The last USER wins and must not be root.
    let user = lines.iter().rev().find(|l| l.starts_with("USER ")).unwrap();
    assert!(!user.contains("root") && !user.contains(" 0"), "{user}");
    // Dependencies are built before the sources are copied (layer cache).
    let deps = df.find("COPY Cargo.toml Cargo.lock").unwrap();
    let src = df.find("COPY src ./src").unwrap();
    assert!(deps < src);
    assert!(df.contains("--locked"));

    // .dockerignore: allow-list; nothing secret or large in the context.
    let ignore = read(".dockerignore");
    let rules: Vec<&str> =
        ignore.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    assert_eq!(rules.first(), Some(&"*"), "deny everything first");
    for dir in ["src/", "proto/", "config/", "agents/", "prompts/", "corpus/"] {
        assert!(rules.contains(&format!("!{dir}").as_str()), ".dockerignore must allow {dir}");
    }
    for never in ["!target", "!data", "!.git", "!eval/results"] {
        assert!(!rules.iter().any(|r| r.starts_with(never)), ".dockerignore lets {never} in");
    }
}

// ------------------------------------------------------------------- scripts

fn scripts() -> Vec<PathBuf> {
    files_in("scripts", "sh")
}

#[test]
fn every_script_parses_passes_shellcheck_and_answers_help() {
    let scripts = scripts();
    for required in [
        "pr-build.sh",
        "ci-build.sh",
        "cd-build.sh",
        "local-gateway.sh",
        "bluegreen.sh",
        "ab.sh",
        "k8s-render.sh",
        "check.sh",
        "sync-k8s-config.sh",
        "set-image.sh",
        "verify-image.sh",
    ] {
        assert!(scripts.iter().any(|p| p.ends_with(required)), "scripts/{required} is missing");
    }
    for script in &scripts {
        let name = script.file_name().unwrap().to_string_lossy().into_owned();
        let body = std::fs::read_to_string(script).unwrap();
        let out = run(Command::new("bash").arg("-n").arg(script));
        assert!(out.status.success(), "bash -n {name}:\n{}", text(&out));
        if name == "lib.sh" {
            continue; // sourced, not run
        }
        assert!(body.starts_with("#!/usr/bin/env bash\n"), "{name}: shebang");
        assert!(body.contains("set -euo pipefail"), "{name}: set -euo pipefail");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(script).unwrap().permissions().mode();
            assert!(mode & 0o111 != 0, "{name} is not executable");
        }
        let out = run(Command::new(script).arg("--help").current_dir(root()));
        assert!(out.status.success(), "{name} --help exited {:?}:\n{}", out.status, text(&out));
        assert!(text(&out).contains("usage:"), "{name} --help prints no usage:\n{}", text(&out));
        let out = run(Command::new(script).arg("--no-such-flag").current_dir(root()));
        assert!(!out.status.success(), "{name} accepts an unknown flag");
    }
    if let Some(shellcheck) = require("shellcheck", "shellcheck scripts/*.sh") {
        let out = run(Command::new(shellcheck).arg("-x").args(&scripts).arg(".ci/run").current_dir(root()));
        assert!(out.status.success(), "shellcheck:\n{}", text(&out));
    }
}

#[test]
fn ab_weights_are_checked_before_anything_is_patched() {
    let ab = root().join("scripts/ab.sh");
    let ok = run(Command::new(&ab).args(["set-weights", "90", "10"]).env("DRY_RUN", "1"));
    assert!(ok.status.success(), "{}", text(&ok));
    let t = text(&ok);
    assert!(t.contains("\"value\":90") && t.contains("\"value\":10") && t.contains("meshops-green"), "{t}");
    for bad in [["x", "1"], ["0", "0"], ["1000001", "1"], ["-1", "5"]] {
        let out = run(Command::new(&ab).arg("set-weights").args(bad).env("DRY_RUN", "1"));
        assert!(!out.status.success(), "set-weights {bad:?} was accepted");
    }
}

#[test]
fn sbom_generator_writes_cyclonedx_from_cargo_metadata() {
    let Some(python) = require("python3", "scripts/sbom-from-metadata.py") else { return };
    let metadata = serde_json::json!({
        "packages": [
            {"id": "meshops 0.1.0", "name": "meshops", "version": "0.1.0", "license": "Apache-2.0"},
            {"id": "serde 1.0.0", "name": "serde", "version": "1.0.0", "license": "MIT OR Apache-2.0"},
        ],
        "workspace_members": ["meshops 0.1.0"],
        "resolve": {"nodes": [{"id": "meshops 0.1.0", "deps": [{"pkg": "serde 1.0.0"}]}]},
    });
    let mut child = Command::new(python)
        .arg(root().join("scripts/sbom-from-metadata.py"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), metadata.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let bom: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(bom["bomFormat"], "CycloneDX");
    assert_eq!(bom["metadata"]["component"]["name"], "meshops");
    assert_eq!(bom["components"][0]["purl"], "pkg:cargo/serde@1.0.0");
    assert_eq!(bom["dependencies"][0]["dependsOn"][0], "serde 1.0.0");
}

// ----------------------------------------------------------------- workflows

#[test]
fn workflows_validate_against_the_github_schema_and_only_call_scripts() {
    let workflows = files_in(".github/workflows", "yml");
    let names: Vec<String> =
        workflows.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["cd.yml", "ci.yml", "pr.yml"]);
    if let Some(cj) = require("check-jsonschema", "GitHub workflow schema") {
        let out =
            run(Command::new(cj).args(["--builtin-schema", "vendor.github-workflows"]).args(&workflows));
        assert!(out.status.success(), "check-jsonschema (github-workflows):\n{}", text(&out));
    }
    for wf in &workflows {
        let name = wf.file_name().unwrap().to_string_lossy().into_owned();
        let doc: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(wf).unwrap()).unwrap();
        let jobs = get(&doc, "jobs").as_mapping().unwrap();
        assert!(!jobs.is_empty(), "{name}: no jobs");
        for (job, spec) in jobs {
            for step in get(spec, "steps").as_sequence().unwrap() {
                if step.get("uses").is_some() {
                    continue;
                }
                let cmd = s(step, "run").trim();
                assert!(cmd.starts_with("scripts/"), "{name} {job:?}: step runs `{cmd}`, not a script");
                assert!(!cmd.contains('\n'), "{name} {job:?}: one script per step: `{cmd}`");
                assert!(!cmd.contains("${{"), "{name} {job:?}: pass expressions through env: `{cmd}`");
                let script = cmd.split_whitespace().next().unwrap();
                assert!(root().join(script).is_file(), "{name} {job:?}: {script} does not exist");
            }
        }
    }
    let pr = read(".github/workflows/pr.yml");
    assert!(pr.contains("scripts/pr-build.sh") && pr.contains("pull_request"));
    let ci = read(".github/workflows/ci.yml");
    assert!(ci.contains("scripts/ci-build.sh") && ci.contains("scripts/cd-build.sh dev"));
    let cd = read(".github/workflows/cd.yml");
    assert!(cd.contains("scripts/cd-build.sh qa") && cd.contains("scripts/cd-build.sh prod"));
}

/// actionlint (expressions, shell in `run:`, action inputs, deprecated
/// runtimes) on every workflow, and the supply-chain rules: every action
/// pinned to a full commit SHA, empty workflow-level permissions with each
/// job asking for its own, a concurrency group, cargo cached where it builds.
#[test]
fn workflows_pass_actionlint_pin_actions_and_limit_permissions() {
    if let Some(actionlint) = require("actionlint", "workflow lint") {
        let out = run(Command::new(actionlint).arg("-no-color").current_dir(root()));
        assert!(out.status.success(), "actionlint:\n{}", text(&out));
    }
    for wf in files_in(".github/workflows", "yml") {
        let name = wf.file_name().unwrap().to_string_lossy().into_owned();
        let doc: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(&wf).unwrap()).unwrap();
        let top = get(&doc, "permissions");
        assert!(
            top.as_mapping().is_some_and(|m| m.is_empty()),
            "{name}: workflow-level permissions must be {{}}, jobs ask for their own"
        );
        assert!(get(&doc, "concurrency").get("group").is_some(), "{name}: no concurrency group");
        for (job, spec) in get(&doc, "jobs").as_mapping().unwrap() {
            assert!(spec.get("permissions").is_some(), "{name} {job:?}: no job-level permissions");
            let steps = get(spec, "steps").as_sequence().unwrap();
            for step in steps {
                let Some(uses) = step.get("uses").and_then(Value::as_str) else { continue };
                let (action, rev) = uses.split_once('@').unwrap_or((uses, ""));
                assert!(
                    rev.len() == 40 && rev.chars().all(|c| c.is_ascii_hexdigit()),
                    "{name} {job:?}: {action} must be pinned to a full commit SHA, not `{rev}`"
                );
            }
            let builds = steps.iter().any(|st| {
                st.get("run").and_then(Value::as_str).is_some_and(|r| {
                    r.contains("check.sh") || r.contains("pr-build.sh") || r.contains("ci-build.sh")
                })
            });
            if builds {
                let cached = steps.iter().any(|st| {
                    st.get("uses").and_then(Value::as_str).is_some_and(|u| u.starts_with("actions/cache@"))
                        && s(st, "with.path").contains(".cargo/registry")
                });
                assert!(cached, "{name} {job:?}: builds with cargo but does not cache it");
            }
        }
    }
    let pr = read(".github/workflows/pr.yml");
    assert!(pr.contains("scripts/pr-comment.sh") && pr.contains("pull-requests: write"), "{pr}");
    let cd = read(".github/workflows/cd.yml");
    assert!(cd.contains("release:") && cd.contains("environment: prod"), "{cd}");
}

/// In cd.yml every job that deploys first installs cosign, then runs
/// scripts/verify-image.sh (`cosign verify`), and deploys the digest that
/// step printed, never the tag; prod verifies the digest QA validated.
#[test]
fn cd_workflow_verifies_the_image_signature_before_every_deploy() {
    let doc: Value = serde_yaml_ng::from_str(&read(".github/workflows/cd.yml")).unwrap();
    let jobs = get(&doc, "jobs").as_mapping().unwrap();
    let mut deploying = 0;
    for (job, spec) in jobs {
        let steps = get(spec, "steps").as_sequence().unwrap();
        let position = |pred: &dyn Fn(&Value) -> bool| steps.iter().position(pred);
        let runs = |needle: &'static str| {
            move |st: &Value| st.get("run").and_then(Value::as_str).is_some_and(|r| r.contains(needle))
        };
        let Some(deploy) = position(&runs("scripts/cd-build.sh")) else { continue };
        deploying += 1;
        let verify = position(&runs("scripts/verify-image.sh"))
            .unwrap_or_else(|| panic!("cd.yml {job:?} deploys without scripts/verify-image.sh"));
        let cosign = position(&|st: &Value| {
            st.get("uses")
                .and_then(Value::as_str)
                .is_some_and(|u| u.starts_with("sigstore/cosign-installer@"))
        })
        .unwrap_or_else(|| panic!("cd.yml {job:?} does not install cosign"));
        assert!(cosign < verify && verify < deploy, "cd.yml {job:?}: install cosign, verify, then deploy");
        let id = s(&steps[verify], "id");
        let image = steps[deploy]
            .get("env")
            .and_then(|e| e.as_mapping())
            .map(|m| m.values().filter_map(Value::as_str).collect::<Vec<_>>().join(" "))
            .unwrap_or_default();
        assert!(
            image.contains(&format!("steps.{id}.outputs.image")),
            "cd.yml {job:?}: deploy the verified digest (steps.{id}.outputs.image), not `{image}`"
        );
        assert!(!s(&steps[deploy], "run").contains("RELEASE_IMAGE"), "cd.yml {job:?} deploys the tag");
    }
    assert_eq!(deploying, 2, "cd.yml: the qa and prod jobs deploy");
    let prod = get(get(&doc, "jobs"), "prod");
    let verify = get(prod, "steps")
        .as_sequence()
        .unwrap()
        .iter()
        .find(|st| st.get("run").and_then(Value::as_str).is_some_and(|r| r.contains("verify-image.sh")))
        .unwrap();
    assert!(
        s(verify, "env.QA_IMAGE").contains("needs.qa.outputs.image"),
        "prod verifies and deploys the digest QA validated"
    );
}

/// A stand-in for cosign: logs its arguments, fails when FAKE_COSIGN_FAIL
/// is set, else prints the simple-signing payloads of FAKE_DIGESTS (one
/// signature per digest, as `cosign verify --output json` does).
const FAKE_COSIGN: &str = r#"#!/usr/bin/env bash
set -euo pipefail
printf '%s\n' "$@" >"$FAKE_STATE/cosign-args"
[[ -z "${FAKE_COSIGN_FAIL:-}" ]] || { echo "Error: no matching signatures" >&2; exit 1; }
sep="" out="["
for d in $FAKE_DIGESTS; do
  out+="$sep{\"critical\":{\"identity\":{\"docker-reference\":\"x\"},\"image\":{\"docker-manifest-digest\":\"$d\"},\"type\":\"cosign container image signature\"},\"optional\":null}"
  sep=","
done
echo "$out]"
"#;

/// scripts/verify-image.sh with a stand-in cosign: a tag is verified once
/// and pinned by the digest the signature names (printed and written to
/// $GITHUB_OUTPUT), with this repository's ci.yml as the required signer;
/// a failed verification, a digest other than the one asked for, and
/// signatures naming two digests are all refused.
#[test]
fn verify_image_pins_the_digest_cosign_verified() {
    if require("python3", "scripts/verify-image.sh reads cosign's JSON").is_none() {
        return;
    }
    let state = tempfile::tempdir().unwrap();
    let cosign = state.path().join("cosign");
    std::fs::write(&cosign, FAKE_COSIGN).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&cosign, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let output = state.path().join("github-output");
    let verify = |image: &str, envs: &[(&str, &str)]| {
        let mut cmd = Command::new(root().join("scripts/verify-image.sh"));
        cmd.arg(image)
            .env("COSIGN", &cosign)
            .env("FAKE_STATE", state.path())
            .env("FAKE_DIGESTS", digest('b'))
            .env("GITHUB_REPOSITORY", "acme/meshops")
            .env("GITHUB_OUTPUT", &output)
            .env_remove("COSIGN_IDENTITY_REGEXP")
            .env_remove("FAKE_COSIGN_FAIL");
        for (k, v) in envs {
            cmd.env(k, v);
        }
        run(&mut cmd)
    };
    let pinned = format!("ghcr.io/acme/meshops@{}", digest('b'));

    let out = verify("ghcr.io/acme/meshops:0123abc", &[]);
    assert!(out.status.success(), "verify-image:\n{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), pinned);
    assert_eq!(std::fs::read_to_string(&output).unwrap(), format!("image={pinned}\n"));
    let args = std::fs::read_to_string(state.path().join("cosign-args")).unwrap();
    let args: Vec<&str> = args.lines().collect();
    assert_eq!(args[0], "verify", "{args:?}");
    let flag = |f: &str| args.iter().position(|a| *a == f).map(|i| args[i + 1]);
    assert_eq!(
        flag("--certificate-identity-regexp"),
        Some(r"^https://github\.com/acme/meshops/\.github/workflows/ci\.yml@refs/heads/main$")
    );
    assert_eq!(flag("--certificate-oidc-issuer"), Some("https://token.actions.githubusercontent.com"));
    assert_eq!(args.last(), Some(&"ghcr.io/acme/meshops:0123abc"), "cosign resolves the tag once");

    let out = verify(&pinned, &[]);
    assert!(out.status.success(), "verify-image by digest:\n{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), pinned);

    std::fs::remove_file(&output).unwrap();
    for (image, envs, why) in [
        ("ghcr.io/acme/meshops:0123abc", vec![("FAKE_COSIGN_FAIL", "1")], "cosign verify failed"),
        (&*format!("ghcr.io/acme/meshops@{}", digest('c')), vec![], "not the requested"),
        (
            "ghcr.io/acme/meshops:0123abc",
            vec![("FAKE_DIGESTS", &*format!("{} {}", digest('b'), digest('d')))],
            "2 digests",
        ),
    ] {
        let out = verify(image, &envs);
        let t = text(&out);
        assert!(!out.status.success(), "verify-image {image} {envs:?} passed:\n{t}");
        assert!(t.contains(why), "expected `{why}`:\n{t}");
        assert!(out.stdout.is_empty(), "a refused image was printed:\n{t}");
        assert!(!output.exists(), "a refused image reached $GITHUB_OUTPUT");
    }
}

// --------------------------------------------------------------------- API

/// `buf lint` with the rules buf.yaml states, and `buf breaking` against
/// the last released API; a copy of the proto with a renumbered field must
/// fail `buf breaking` (the check can fail).
#[test]
fn proto_passes_buf_lint_and_buf_breaking_against_the_released_api() {
    let Some(buf) = require("buf", "buf lint / buf breaking") else { return };
    let lint = run(Command::new(&buf).arg("lint").current_dir(root()));
    assert!(lint.status.success(), "buf lint:\n{}", text(&lint));
    let breaking =
        run(Command::new(&buf).args(["breaking", "--against", "proto-released"]).current_dir(root()));
    assert!(breaking.status.success(), "buf breaking against proto-released:\n{}", text(&breaking));

    let copy = tempfile::tempdir().unwrap();
    let proto_dir = copy.path().join("proto/meshops/v1");
    let released_dir = copy.path().join("proto-released/meshops/v1");
    std::fs::create_dir_all(&proto_dir).unwrap();
    std::fs::create_dir_all(&released_dir).unwrap();
    std::fs::copy(root().join("buf.yaml"), copy.path().join("buf.yaml")).unwrap();
    let released = read("proto-released/meshops/v1/gateway.proto");
    std::fs::write(released_dir.join("gateway.proto"), &released).unwrap();
    let current = read("proto/meshops/v1/gateway.proto");
    assert!(current.contains("string query = 1;"), "the test edits AskRequest.query");
    let broken = current.replacen("string query = 1;", "string query = 99;", 1);
    std::fs::write(proto_dir.join("gateway.proto"), broken).unwrap();
    let out =
        run(Command::new(&buf).args(["breaking", "--against", "proto-released"]).current_dir(copy.path()));
    assert!(!out.status.success(), "buf breaking accepted a renumbered field:\n{}", text(&out));
    assert!(text(&out).contains("query"), "{}", text(&out));
}

// --------------------------------------------------------------- kubernetes

/// The ConfigMaps' sources: (ConfigMap, source folder), in generator order.
/// The copy of a folder sits at the same path under k8s/base/configmaps,
/// and the Deployment mounts its ConfigMap at /opt/meshops/<folder>.
const CONFIG_MAPS: [(&str, &str); 4] = [
    ("meshops-config", "config"),
    ("meshops-agents", "agents"),
    ("meshops-prompts", "prompts"),
    ("meshops-eval-prompts", "prompts/eval"),
];

/// The files of `dir` (under `base`) that go into its ConfigMap, sorted.
/// The folders are flat (a ConfigMap cannot hold sub-folders); the judges'
/// prompts (`prompts/eval/`, read by `meshops eval` and by the gateway's
/// `[online_eval]`) are not part of `prompts`: they have their own ConfigMap.
fn config_map_sources(base: &std::path::Path, dir: &str) -> Vec<String> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(base.join(dir)).unwrap() {
        let p = entry.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if p.is_dir() {
            assert_eq!(
                format!("{dir}/{name}"),
                "prompts/eval",
                "a folder: a ConfigMap is flat; give it its own configMapGenerator and volume"
            );
            continue;
        }
        files.push(name);
    }
    files.sort();
    files
}

/// The copy of config/, agents/, prompts/ and prompts/eval/ under
/// k8s/base/configmaps (what plain `kubectl kustomize` may read) is byte for
/// byte the sources, with nothing more, and its generator lists every file:
/// a change to a source without `scripts/sync-k8s-config.sh` fails here, and
/// the script's own `--check` agrees.
#[test]
fn k8s_config_copy_is_up_to_date_with_config_agents_and_prompts() {
    let copy = root().join("k8s/base/configmaps");
    let k: Value = serde_yaml_ng::from_str(&read("k8s/base/configmaps/kustomization.yaml")).unwrap();
    let generators = get(&k, "configMapGenerator").as_sequence().unwrap();
    assert_eq!(generators.len(), CONFIG_MAPS.len(), "{generators:?}");
    let stale = "k8s/base/configmaps is stale: run scripts/sync-k8s-config.sh and commit the result";
    for (generator, (map, dir)) in generators.iter().zip(CONFIG_MAPS) {
        assert_eq!(s(generator, "name"), map);
        let sources = config_map_sources(&root(), dir);
        let listed: Vec<String> = get(generator, "files")
            .as_sequence()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap().to_string())
            .collect();
        let wanted: Vec<String> = sources.iter().map(|f| format!("{dir}/{f}")).collect();
        assert_eq!(listed, wanted, "{map} must list every file of {dir}/: {stale}");
        let mut copied: Vec<String> = std::fs::read_dir(copy.join(dir))
            .unwrap_or_else(|e| panic!("k8s/base/configmaps/{dir}: {e}: {stale}"))
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|f| format!("{dir}/{f}") != "prompts/eval")
            .collect();
        copied.sort();
        assert_eq!(copied, sources, "k8s/base/configmaps/{dir} holds other files than {dir}/: {stale}");
        for f in &sources {
            let source = std::fs::read(root().join(dir).join(f)).unwrap();
            let copied = std::fs::read(copy.join(dir).join(f)).unwrap();
            assert!(source == copied, "k8s/base/configmaps/{dir}/{f} differs from {dir}/{f}: {stale}");
        }
    }
    let base: Value = serde_yaml_ng::from_str(&read("k8s/base/kustomization.yaml")).unwrap();
    let resources = get(&base, "resources").as_sequence().unwrap();
    assert!(resources.iter().any(|r| r.as_str() == Some("configmaps")), "the base must include configmaps");
    let out = run(Command::new(root().join("scripts/sync-k8s-config.sh")).arg("--check"));
    assert!(out.status.success(), "scripts/sync-k8s-config.sh --check:\n{}", text(&out));
}

/// No kustomization reads a file outside its own tree and nothing asks for
/// `--load-restrictor`: plain `kubectl kustomize` (Argo CD, Flux) must do.
#[test]
fn kustomizations_read_nothing_outside_k8s() {
    let mut stack = vec![root().join("k8s")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n == "kustomization.yaml") {
                let body = std::fs::read_to_string(&p).unwrap();
                assert!(!body.contains("../../config/"), "{} reads config/ in place", p.display());
                assert!(!body.contains("../../agents/"), "{} reads agents/ in place", p.display());
                assert!(!body.contains("../../prompts/"), "{} reads prompts/ in place", p.display());
            }
        }
    }
    for f in files_in("scripts", "sh").iter().chain(files_in(".github/workflows", "yml").iter()) {
        let body = std::fs::read_to_string(f).unwrap();
        assert!(!body.contains("load-restrictor"), "{} still passes --load-restrictor", f.display());
    }
}

/// scripts/sync-k8s-config.sh on a project copy: `--check` passes on the
/// committed state, fails naming the files once a prompt is edited and one
/// is added (and `k8s-render.sh` then refuses to render); the sync brings the
/// copy up to date, a second run changes nothing, and the rendered
/// ConfigMap carries the new content. A sub-folder is refused.
#[test]
fn sync_k8s_config_detects_a_stale_copy_and_brings_it_up_to_date() {
    let project = common::project_copy(&["scripts", "config", "agents", "prompts", "k8s"]);
    let p = project.path();
    let sync = |args: &[&str]| run(Command::new(p.join("scripts/sync-k8s-config.sh")).args(args));
    let check = sync(&["--check"]);
    assert!(check.status.success(), "--check on the committed state:\n{}", text(&check));

    let edited = "\n{# a researcher's edit #}\n";
    let critic = p.join("prompts/critic.prompty");
    let mut body = std::fs::read_to_string(&critic).unwrap();
    body.push_str(edited);
    std::fs::write(&critic, &body).unwrap();
    std::fs::copy(p.join("prompts/router.prompty"), p.join("prompts/router_v2.prompty")).unwrap();
    let check = sync(&["--check"]);
    let t = text(&check);
    assert_eq!(check.status.code(), Some(1), "--check passed a stale copy:\n{t}");
    assert!(t.contains("critic.prompty") && t.contains("router_v2.prompty") && t.contains("stale"), "{t}");
    let render = run(Command::new(p.join("scripts/k8s-render.sh")).arg("dev"));
    assert!(!render.status.success(), "k8s-render.sh rendered a stale copy:\n{}", text(&render));

    let first = sync(&[]);
    assert!(first.status.success(), "sync:\n{}", text(&first));
    let kustomization = p.join("k8s/base/configmaps/kustomization.yaml");
    let after_first = std::fs::read_to_string(&kustomization).unwrap();
    assert!(after_first.contains("prompts/router_v2.prompty"), "{after_first}");
    let second = sync(&[]);
    assert!(second.status.success() && text(&second).contains("up to date"), "{}", text(&second));
    assert_eq!(std::fs::read_to_string(&kustomization).unwrap(), after_first);
    let check = sync(&["--check"]);
    assert!(check.status.success(), "--check after the sync:\n{}", text(&check));

    if let Some(yaml) = render_in(&p.join("k8s"), "overlays/dev") {
        let docs = yaml_docs(&yaml);
        let prompts = kind(&docs, "ConfigMap")
            .into_iter()
            .find(|d| s(d, "metadata.name").starts_with("meshops-prompts-"))
            .expect("the prompts ConfigMap");
        let data = get(prompts, "data");
        let critic = data.get("critic.prompty").and_then(Value::as_str);
        assert_eq!(critic, Some(body.as_str()), "the edit reached the ConfigMap");
        assert!(data.get("router_v2.prompty").is_some(), "the new prompt is in the ConfigMap");
    }

    std::fs::create_dir(p.join("agents/extra")).unwrap();
    let out = sync(&[]);
    assert!(!out.status.success() && text(&out).contains("is a folder"), "{}", text(&out));
}

/// A made-up digest: 64 hex digits of `c`.
fn digest(c: char) -> String {
    format!("sha256:{}", c.to_string().repeat(64))
}

/// scripts/set-image.sh on a project copy: prod takes an image pinned by
/// digest (a tag on the same reference is dropped) and renders it as
/// NAME@DIGEST in both blue/green slots; the same call again changes no
/// byte; a tag or a malformed digest for prod is refused and leaves the
/// overlay alone; dev takes a tag.
#[test]
fn set_image_pins_the_prod_overlay_by_digest() {
    let project = common::project_copy(&["scripts", "config", "agents", "prompts", "k8s"]);
    let p = project.path();
    let set = |env: &str, image: &str| run(Command::new(p.join("scripts/set-image.sh")).args([env, image]));
    let overlay = p.join("k8s/overlays/prod/kustomization.yaml");
    let pinned = format!("ghcr.io/acme/meshops@{}", digest('a'));

    let out = set("prod", &format!("ghcr.io/acme/meshops:1.2.0@{}", digest('a')));
    assert!(out.status.success(), "set-image prod:\n{}", text(&out));
    let once = std::fs::read_to_string(&overlay).unwrap();
    let k: Value = serde_yaml_ng::from_str(&once).unwrap();
    let images = get(&k, "images").as_sequence().unwrap();
    assert_eq!(images.len(), 1, "{images:?}");
    assert_eq!(s(&images[0], "name"), "ghcr.io/meshops/meshops");
    assert_eq!(s(&images[0], "newName"), "ghcr.io/acme/meshops");
    assert_eq!(s(&images[0], "digest"), digest('a'));
    assert!(images[0].get("newTag").is_none(), "a tag beside the digest: {images:?}");
    let out = set("prod", &pinned);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(std::fs::read_to_string(&overlay).unwrap(), once, "a second run changed the overlay");
    // Everything else in the overlay is as it was.
    let committed: Value = serde_yaml_ng::from_str(&read("k8s/overlays/prod/kustomization.yaml")).unwrap();
    for key in ["namespace", "resources", "labels", "replicas", "patches"] {
        assert_eq!(get(&k, key), get(&committed, key), "set-image.sh changed `{key}`");
    }

    for (target, deployment) in [
        ("overlays/prod", "meshops"),
        ("bluegreen/blue", "meshops-blue"),
        ("bluegreen/green", "meshops-green"),
    ] {
        let Some(yaml) = render_in(&p.join("k8s"), target) else { return };
        let docs = yaml_docs(&yaml);
        let dep = named(&docs, "Deployment", deployment);
        assert_eq!(s(dep, "spec.template.spec.containers.0.image"), pinned, "k8s/{target}");
    }

    for refused in [
        "ghcr.io/acme/meshops:1.2.0".to_string(),
        "ghcr.io/acme/meshops".to_string(),
        "ghcr.io/acme/meshops@sha256:abc".to_string(),
        format!("ghcr.io/acme/meshops@{}", digest('A')),
    ] {
        let out = set("prod", &refused);
        assert!(!out.status.success(), "set-image prod {refused} was accepted");
        assert_eq!(std::fs::read_to_string(&overlay).unwrap(), once, "a refused image changed the overlay");
    }
    let out = set("dev", "registry.example:5000/team/meshops:dev-42");
    assert!(out.status.success(), "set-image dev with a tag:\n{}", text(&out));
    if let Some(yaml) = render_in(&p.join("k8s"), "overlays/dev") {
        let docs = yaml_docs(&yaml);
        let dep = named(&docs, "Deployment", "meshops");
        assert_eq!(
            s(dep, "spec.template.spec.containers.0.image"),
            "registry.example:5000/team/meshops:dev-42"
        );
    }
}

#[test]
fn every_kustomization_renders_and_passes_kubernetes_validate_strict() {
    let validator = require("kubernetes-validate", "kubernetes-validate --strict");
    let dir = tempfile::tempdir().unwrap();
    for target in TARGETS {
        let Some(yaml) = render(target) else { return };
        let docs = yaml_docs(&yaml);
        assert!(!docs.is_empty(), "k8s/{target} renders nothing");
        // GRPCRoute has no bundled schema; it has its own test below.
        let core: Vec<&Value> = docs.iter().filter(|d| s(d, "kind") != "GRPCRoute").collect();
        if core.is_empty() {
            continue;
        }
        let file = dir.path().join(format!("{}.yaml", target.replace('/', "-")));
        let body: Vec<String> = core.iter().map(|d| serde_yaml_ng::to_string(d).unwrap()).collect();
        std::fs::write(&file, body.join("---\n")).unwrap();
        if let Some(v) = &validator {
            let out = run(Command::new(v).args(["--strict", "--kubernetes-version", "1.33.0"]).arg(&file));
            assert!(out.status.success(), "kubernetes-validate k8s/{target}:\n{}", text(&out));
            assert!(!text(&out).contains("WARN"), "kubernetes-validate k8s/{target}:\n{}", text(&out));
        }
    }
}

#[test]
fn grpcroutes_pass_the_gateway_api_schema_and_split_by_weight() {
    let schema = root().join("k8s/schemas/grpcroute-v1.json");
    let expected = [("dev", 50, 50), ("qa", 80, 20), ("prod", 95, 5)];
    let dir = tempfile::tempdir().unwrap();
    for (env, a, b) in expected {
        let Some(yaml) = render(&format!("ab/overlays/{env}")) else { return };
        let docs = yaml_docs(&yaml);
        let route = named(&docs, "GRPCRoute", "meshops");
        assert_eq!(s(route, "metadata.namespace"), format!("meshops-{env}"));
        if let Some(cj) = require("check-jsonschema", "GRPCRoute schema") {
            let file = dir.path().join(format!("route-{env}.yaml"));
            std::fs::write(&file, serde_yaml_ng::to_string(route).unwrap()).unwrap();
            let out = run(Command::new(cj).arg("--schemafile").arg(&schema).arg(&file));
            assert!(out.status.success(), "GRPCRoute {env}:\n{}", text(&out));
        }
        let rules = get(route, "spec.rules").as_sequence().unwrap();
        // Forced routing by header, then the weighted split.
        for (i, (arm, backend)) in [("a", "meshops-blue"), ("b", "meshops-green")].into_iter().enumerate() {
            let header = get(&rules[i], "matches.0.headers.0");
            assert_eq!((s(header, "name"), s(header, "value")), ("x-meshops-arm", arm));
            assert_eq!(s(&rules[i], "backendRefs.0.name"), backend);
            assert_eq!(get(&rules[i], "backendRefs").as_sequence().unwrap().len(), 1);
        }
        let split = get(&rules[2], "backendRefs").as_sequence().unwrap();
        let weights: Vec<(&str, u64)> =
            split.iter().map(|r| (s(r, "name"), get(r, "weight").as_u64().unwrap())).collect();
        assert_eq!(weights, [("meshops-blue", a), ("meshops-green", b)], "{env}");
        for r in split {
            assert_eq!(get(r, "port").as_u64(), Some(50051));
        }
    }
    // The schema catches what the API server would reject.
    if let Some(cj) = require("check-jsonschema", "GRPCRoute schema rejects a negative weight") {
        let bad = dir.path().join("bad.yaml");
        std::fs::write(
            &bad,
            "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {name: x}\n\
             spec:\n  rules:\n    - backendRefs:\n        - {name: a, port: 50051, weight: -1}\n",
        )
        .unwrap();
        let out = run(Command::new(cj).arg("--schemafile").arg(&schema).arg(&bad));
        assert!(!out.status.success(), "a negative weight passed the schema");
    }
}

/// The longest request any environment allows, in seconds.
fn longest_request_s(env: &str) -> u64 {
    let ms = |file: &str| -> Option<u64> {
        let t: toml::Value = toml::from_str(&read(file)).unwrap();
        t.get("gateway")?.get("request_timeout_ms")?.as_integer().map(|v| v as u64)
    };
    let ms = ms(&format!("config/{env}.toml")).or_else(|| ms("config/meshops.toml")).unwrap();
    ms.div_ceil(1000)
}

fn check_gateway_deployment(dep: &Value, env: &str) {
    let pod = get(dep, "spec.template.spec");
    let c = get(pod, "containers.0");
    let name = s(dep, "metadata.name");
    // Probes: native gRPC health on 50051; where the environment's config
    // turns TLS on (kubelet's gRPC probe speaks plaintext only), `meshops
    // probe` over https with the mounted CA.
    let tls = {
        let t: toml::Value = toml::from_str(&read(&format!("config/{env}.toml"))).unwrap();
        t.get("gateway").and_then(|g| g.get("tls")).is_some()
    };
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        let p = get(c, probe);
        assert!(p.get("httpGet").is_none() && p.get("tcpSocket").is_none(), "{name} {probe}");
        if tls {
            assert!(p.get("grpc").is_none(), "{name} {probe}: a plaintext gRPC probe on a TLS port");
            let command: Vec<&str> =
                get(p, "exec.command").as_sequence().unwrap().iter().filter_map(Value::as_str).collect();
            let line = command.join(" ");
            assert!(
                line.contains("meshops probe --target https://localhost:50051")
                    && line.contains("--ca-cert /etc/meshops/tls/"),
                "{name} {probe}: {line}"
            );
            continue;
        }
        assert_eq!(get(p, "grpc.port").as_u64(), Some(50051), "{name} {probe}");
        let service = p.get("grpc").and_then(|g| g.get("service")).and_then(Value::as_str).unwrap_or("");
        assert!(["", "meshops.v1.Gateway"].contains(&service), "{name} {probe} service {service}");
        assert!(p.get("exec").is_none(), "{name} {probe}");
    }
    if tls {
        // The certificate comes from a Secret mounted where the config
        // reads it; the keys from a Secret that must exist (no `optional`).
        let mounts = get(c, "volumeMounts").as_sequence().unwrap();
        let m = mounts.iter().find(|m| s(m, "mountPath") == "/etc/meshops/tls").expect("TLS mount");
        let vol = get(pod, "volumes").as_sequence().unwrap().iter().find(|v| s(v, "name") == s(m, "name"));
        assert_eq!(s(vol.expect("TLS volume"), "secret.secretName"), "meshops-tls", "{name}");
        let envs = get(c, "env").as_sequence().unwrap();
        let keys = envs.iter().find(|e| s(e, "name") == "MESHOPS_API_KEYS").expect("MESHOPS_API_KEYS");
        assert_eq!(s(keys, "valueFrom.secretKeyRef.name"), "meshops-api-keys", "{name}");
        assert_ne!(get(keys, "valueFrom.secretKeyRef").get("optional").and_then(Value::as_bool), Some(true));
    }
    // Non-root, read-only root filesystem, no capabilities.
    assert_eq!(get(pod, "securityContext.runAsNonRoot").as_bool(), Some(true), "{name}");
    assert_ne!(get(pod, "securityContext.runAsUser").as_u64(), Some(0), "{name}");
    let sc = get(c, "securityContext");
    assert_eq!(get(sc, "runAsNonRoot").as_bool(), Some(true), "{name}");
    assert_eq!(get(sc, "readOnlyRootFilesystem").as_bool(), Some(true), "{name}");
    assert_eq!(get(sc, "allowPrivilegeEscalation").as_bool(), Some(false), "{name}");
    assert_eq!(s(sc, "capabilities.drop.0"), "ALL", "{name}");
    // The data dir is a volume (writable with a read-only root).
    let mounts = get(c, "volumeMounts").as_sequence().unwrap();
    let data = mounts.iter().find(|m| s(m, "mountPath") == "/var/lib/meshops").expect("data mount");
    let vol = get(pod, "volumes")
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| s(v, "name") == s(data, "name"))
        .expect("data volume");
    assert!(vol.get("emptyDir").is_some() || vol.get("persistentVolumeClaim").is_some());
    // Each ConfigMap read-only where its folder sits (the judges' prompts
    // inside the prompts mount, for [online_eval]).
    let volumes = get(pod, "volumes").as_sequence().unwrap();
    for (map, dir) in CONFIG_MAPS {
        let m = mounts.iter().find(|m| s(m, "mountPath") == format!("/opt/meshops/{dir}")).expect(dir);
        assert_eq!(get(m, "readOnly").as_bool(), Some(true), "{name} {dir}");
        let vol = volumes.iter().find(|v| s(v, "name") == s(m, "name")).expect(dir);
        assert!(s(vol, "configMap.name").starts_with(&format!("{map}-")), "{name} {dir}: {vol:?}");
    }
    // Resources set.
    for r in ["requests.cpu", "requests.memory", "limits.cpu", "limits.memory"] {
        get(c, &format!("resources.{r}"));
    }
    // Env: MESHOPS_ENV matches an overlay file; keys only from Secrets.
    let envs = get(c, "env").as_sequence().unwrap();
    let value_of = |n: &str| envs.iter().find(|e| s(e, "name") == n).and_then(|e| e.get("value"));
    assert_eq!(value_of("MESHOPS_ENV").and_then(Value::as_str), Some(env), "{name}");
    assert!(root().join(format!("config/{env}.toml")).is_file());
    assert_eq!(value_of("MESHOPS__GATEWAY__LISTEN").and_then(Value::as_str), Some("0.0.0.0:50051"));
    for e in envs {
        let n = s(e, "name").to_ascii_uppercase();
        if ["KEY", "TOKEN", "SECRET", "PASSWORD"].iter().any(|w| n.contains(w)) {
            assert!(e.get("value").is_none(), "{name}: {n} has a literal value");
            get(e, "valueFrom.secretKeyRef.name");
        }
    }
    // Drain: preStop sleep + the longest request fit in the grace period.
    let grace = get(pod, "terminationGracePeriodSeconds").as_u64().unwrap();
    let pre_stop = get(c, "lifecycle.preStop.sleep.seconds").as_u64().unwrap();
    let longest = longest_request_s(env);
    assert!(grace >= pre_stop + longest, "{name}: grace {grace}s < preStop {pre_stop}s + request {longest}s");
    assert_eq!(s(pod, "serviceAccountName"), name, "each Deployment runs as its own ServiceAccount");
}

#[test]
fn rendered_overlays_have_grpc_probes_non_root_and_no_secret_values() {
    let expected = [("dev", 1), ("qa", 2), ("prod", 3)];
    for (env, replicas) in expected {
        let Some(yaml) = render(&format!("overlays/{env}")) else { return };
        let docs = yaml_docs(&yaml);
        assert!(kind(&docs, "Secret").is_empty(), "{env}: a Secret in the manifests");
        for d in &docs {
            assert_eq!(s(d, "metadata.namespace"), format!("meshops-{env}"), "{env}: {d:?}");
        }
        let dep = named(&docs, "Deployment", "meshops");
        assert_eq!(get(dep, "spec.replicas").as_u64(), Some(replicas), "{env}");
        let image = s(dep, "spec.template.spec.containers.0.image");
        assert!(
            image.starts_with("ghcr.io/meshops/meshops:") && !image.ends_with(":latest"),
            "{env}: {image}"
        );
        check_gateway_deployment(dep, env);
        // ConfigMaps are generated (hashed names) and mounted.
        let maps: Vec<&str> = kind(&docs, "ConfigMap").iter().map(|d| s(d, "metadata.name")).collect();
        assert_eq!(maps.len(), CONFIG_MAPS.len(), "{maps:?}");
        let cfg = kind(&docs, "ConfigMap")
            .into_iter()
            .find(|d| s(d, "metadata.name").starts_with("meshops-config-"));
        assert!(get(cfg.unwrap(), "data").get(format!("{env}.toml").as_str()).is_some());
        let judges = kind(&docs, "ConfigMap")
            .into_iter()
            .find(|d| s(d, "metadata.name").starts_with("meshops-eval-prompts-"))
            .expect("the eval prompts ConfigMap");
        for judge in config_map_sources(&root(), "prompts/eval") {
            assert!(get(judges, "data").get(judge.as_str()).is_some(), "{env}: {judge} not in {maps:?}");
        }
        // The two Services: ClusterIP and headless, both on grpc 50051.
        let svc = named(&docs, "Service", "meshops");
        assert_eq!(s(svc, "spec.type"), "ClusterIP");
        let headless = named(&docs, "Service", "meshops-headless");
        assert_eq!(s(headless, "spec.clusterIP"), "None");
        for sv in [svc, headless] {
            assert_eq!(get(sv, "spec.ports.0.port").as_u64(), Some(50051));
            assert_eq!(get(sv, "spec.selector"), get(dep, "spec.selector.matchLabels"));
        }
        // HPA, PDB, NetworkPolicy, ServiceAccount are there and aimed right.
        let hpa = named(&docs, "HorizontalPodAutoscaler", "meshops");
        assert_eq!(s(hpa, "spec.scaleTargetRef.name"), "meshops");
        assert!(
            get(hpa, "spec.minReplicas").as_u64().unwrap() <= get(hpa, "spec.maxReplicas").as_u64().unwrap()
        );
        let pdb = named(&docs, "PodDisruptionBudget", "meshops");
        assert_eq!(get(pdb, "spec.selector.matchLabels"), get(dep, "spec.selector.matchLabels"));
        let np = named(&docs, "NetworkPolicy", "meshops");
        assert_eq!(get(np, "spec.ingress.0.ports.0.port").as_u64(), Some(50051));
        named(&docs, "ServiceAccount", "meshops");
    }
}

#[test]
fn no_secret_values_in_any_manifest() {
    let mut stack = vec![root().join("k8s")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if p.extension().is_none_or(|x| x != "yaml") {
                continue;
            }
            for doc in yaml_docs(&std::fs::read_to_string(&p).unwrap()) {
                let k = doc.get("kind").and_then(Value::as_str).unwrap_or("");
                assert_ne!(k, "Secret", "{}: Secrets are created out of band, never committed", p.display());
                let generator = doc.get("secretGenerator");
                assert!(generator.is_none(), "{}: secretGenerator", p.display());
            }
        }
    }
}

#[test]
fn blue_green_slots_are_separate_and_the_live_service_picks_one() {
    let Some(yaml) = render("bluegreen") else { return };
    let docs = yaml_docs(&yaml);
    for slot in ["blue", "green"] {
        let dep = named(&docs, "Deployment", &format!("meshops-{slot}"));
        assert_eq!(s(dep, "spec.selector.matchLabels.slot"), slot);
        assert_eq!(s(dep, "spec.template.metadata.labels.slot"), slot);
        check_gateway_deployment(dep, "prod");
        let own = named(&docs, "Service", &format!("meshops-{slot}"));
        assert_eq!(s(own, "spec.selector.slot"), slot);
        let hpa = named(&docs, "HorizontalPodAutoscaler", &format!("meshops-{slot}"));
        assert_eq!(s(hpa, "spec.scaleTargetRef.name"), format!("meshops-{slot}"));
        // Each slot mounts its own ConfigMaps.
        let vols = get(dep, "spec.template.spec.volumes").as_sequence().unwrap();
        let cfg = vols.iter().find(|v| s(v, "name") == "config").unwrap();
        assert!(s(cfg, "configMap.name").starts_with(&format!("meshops-config-{slot}-")));
    }
    for live in ["meshops", "meshops-headless"] {
        let svc = named(&docs, "Service", live);
        assert_eq!(s(svc, "metadata.namespace"), "meshops-prod");
        assert_eq!(s(svc, "spec.selector.slot"), "blue", "{live}: the bootstrap live slot");
        assert_eq!(label(svc, "spec.selector", "app.kubernetes.io/name"), "meshops");
    }
    let script = read("scripts/bluegreen.sh");
    assert!(script.contains("validate \"$slot\"") && script.contains("previous-slot"));
}

/// `get` splits on dots; label keys contain dots, so look them up directly.
fn label<'a>(v: &'a Value, map_path: &str, key: &str) -> &'a str {
    get(v, map_path).get(key).and_then(Value::as_str).unwrap_or_else(|| panic!("no {key} in {map_path}"))
}

#[test]
fn live_services_select_by_app_label() {
    let Some(yaml) = render("bluegreen/live") else { return };
    let docs = yaml_docs(&yaml);
    for svc in kind(&docs, "Service") {
        assert_eq!(label(svc, "spec.selector", "app.kubernetes.io/name"), "meshops");
        assert_eq!(label(svc, "spec.selector", "app.kubernetes.io/component"), "gateway");
    }
}

// ------------------------------------------------------------- end to end

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_meshops")
}

/// scripts/local-gateway.sh starts the real binary, waits for SERVING,
/// prints the URL; `meshops ask --target` gets a cited answer; `stop`
/// drains on SIGTERM.
#[test]
fn local_gateway_script_serves_ask_and_stops_on_sigterm() {
    let state = tempfile::tempdir().unwrap();
    let script = root().join("scripts/local-gateway.sh");
    let start = run(Command::new(&script)
        .args(["start", "--port", "0", "--timeout", "240"])
        .env("MESHOPS_BIN", bin())
        .env("MESHOPS_LOCAL_STATE", state.path())
        .env_remove("MESHOPS_ENV"));
    assert!(start.status.success(), "local-gateway start:\n{}", text(&start));
    let url = String::from_utf8_lossy(&start.stdout).trim().to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let port = url.rsplit(':').next().unwrap().to_string();

    let ask = run(Command::new(bin()).args([
        "ask",
        "--target",
        &url,
        "--json",
        "What does the retriever agent do?",
    ]));
    let stop =
        run(Command::new(&script).args(["stop", "--port", &port]).env("MESHOPS_LOCAL_STATE", state.path()));
    assert!(ask.status.success(), "ask:\n{}", text(&ask));
    let answer: serde_json::Value = serde_json::from_slice(&ask.stdout).unwrap();
    assert!(!answer["answer"].as_str().unwrap().is_empty());
    assert!(!answer["citations"].as_array().unwrap().is_empty(), "{answer}");
    assert!(stop.status.success(), "local-gateway stop:\n{}", text(&stop));
    let log = std::fs::read_to_string(state.path().join("gateway.log")).unwrap();
    assert!(log.contains("SIGTERM: shutting down"), "no graceful SIGTERM shutdown in the log:\n{log}");
}

/// scripts/cd-build.sh local: deploy.sh dev --local, the same validation a
/// cluster deployment gets (validate-deployment.sh, eval through the
/// gateway), then the local deployment is stopped.
#[test]
fn cd_build_validates_a_locally_started_gateway() {
    let state = tempfile::tempdir().unwrap();
    let results = state.path().join("results");
    let out = run(Command::new(root().join("scripts/cd-build.sh"))
        .arg("local")
        .env("MESHOPS_BIN", bin())
        .env("RESULTS", &results)
        .env("TMPDIR", state.path())
        .env_remove("MESHOPS_ENV"));
    let t = text(&out);
    assert!(out.status.success(), "cd-build.sh local:\n{t}");
    assert!(t.contains("CD local done"), "{t}");
    let verdict = std::fs::read_to_string(results.join("validation/validation.txt")).unwrap();
    assert!(verdict.contains("verdict: PASSED"), "{verdict}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(results.join("eval-toy/summary.json")).unwrap())
            .unwrap();
    assert!(summary.is_object(), "{summary}");
    assert!(!state.path().join("meshops-deploy-dev.url").exists(), "the local deployment was not stopped");
}

/// scripts/deploy.sh dev --local, then scripts/validate-deployment.sh: it
/// passes against that deployment, and fails (exit 1, naming the check)
/// against a gateway whose answers carry no citations and against a port
/// where nothing listens.
#[test]
fn validate_deployment_passes_on_a_local_deployment_and_can_fail() {
    let state = tempfile::tempdir().unwrap();
    let script = |name: &str| root().join("scripts").join(name);
    let deploy = run(Command::new(script("deploy.sh"))
        .args(["dev", "--local"])
        .env("MESHOPS_BIN", bin())
        .env("TMPDIR", state.path())
        .env_remove("MESHOPS_ENV"));
    assert!(deploy.status.success(), "deploy.sh dev --local:\n{}", text(&deploy));
    let url = String::from_utf8_lossy(&deploy.stdout).trim().to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let validate = |target: &str| {
        run(Command::new(script("validate-deployment.sh"))
            .args([target, "--questions", "3"])
            .env("MESHOPS_BIN", bin())
            .env("TMPDIR", state.path()))
    };
    let good = validate(&url);

    // A gateway that answers questions without retrieving: no citations.
    let no_cite = state.path().join("no-citations.toml");
    std::fs::write(&no_cite, "[flows.question]\nsteps = [\"summarizer\"]\nmax_revisions = 0\n").unwrap();
    let other = run(Command::new(script("local-gateway.sh"))
        .args(["start", "--port", "0", "--config"])
        .arg(&no_cite)
        .env("MESHOPS_BIN", bin())
        .env("TMPDIR", state.path())
        .env_remove("MESHOPS_ENV"));
    let other_url = String::from_utf8_lossy(&other.stdout).trim().to_string();
    let uncited = validate(&other_url);
    let other_port = other_url.rsplit(':').next().unwrap_or_default().to_string();
    run(Command::new(script("local-gateway.sh"))
        .args(["stop", "--port", &other_port])
        .env("TMPDIR", state.path()));

    let stop =
        run(Command::new(script("deploy.sh")).args(["dev", "--local", "--stop"]).env("TMPDIR", state.path()));
    let down = validate(&url);

    let t = text(&good);
    assert!(good.status.success(), "validate-deployment against the local deployment:\n{t}");
    for check in [
        "health   PASS",
        "api      PASS",
        "answers  PASS  2/3 questions answered with citations, 1 refused by the critic",
        "latency  PASS",
        "PASSED",
    ] {
        assert!(t.contains(check), "missing `{check}`:\n{t}");
    }
    assert!(other.status.success(), "second gateway:\n{}", text(&other));
    let t = text(&uncited);
    assert_eq!(uncited.status.code(), Some(1), "a gateway without citations must fail validation:\n{t}");
    assert!(t.contains("answers  FAIL  0/3") && t.contains("health   PASS"), "{t}");
    assert!(stop.status.success(), "deploy.sh --stop:\n{}", text(&stop));
    let t = text(&down);
    assert_eq!(down.status.code(), Some(1), "a stopped gateway must fail validation:\n{t}");
    assert!(t.contains("health   FAIL") && t.contains("FAILED"), "{t}");
}

#[test]
fn docs_cover_deployment() {
    let d = read("docs/deployment.md");
    for topic in [
        "docker build",
        "scripts/k8s-render.sh",
        "bluegreen.sh",
        "ab.sh",
        "headless",
        "round_robin",
        "scripts/pr-build.sh",
        "scripts/ci-build.sh",
        "scripts/deploy.sh",
        "scripts/validate-deployment.sh",
        "scripts/promote.sh",
        "buf breaking",
        "scripts/sync-k8s-config.sh",
        "scripts/set-image.sh",
        "scripts/verify-image.sh",
        "cosign verify",
        "kubectl apply -k",
        "kind: Application",
        "kind: Kustomization",
        "Argo CD",
        "Flux",
    ] {
        assert!(d.contains(topic), "docs/deployment.md does not mention {topic}");
    }
}

/// A stand-in for kubectl, enough for scripts/bluegreen.sh and
/// scripts/promote.sh: it keeps the live Service's slot and previous-slot
/// annotation in files, logs every call, accepts `apply` and `rollout
/// status`, and serves `port-forward svc/meshops[-SLOT] LOCAL:50051` by
/// starting a real local gateway on LOCAL (so validation uses the real
/// client and the real validator).
const FAKE_KUBECTL: &str = r#"#!/usr/bin/env bash
set -euo pipefail
state="$FAKE_STATE"
echo "$*" >>"$state/calls"
args=("$@")
[[ "${args[0]}" == -n ]] && args=("${args[@]:2}")
case "${args[0]} ${args[1]:-}" in
  "get service")
    [[ -f "$state/live" ]] || exit 1
    case "$*" in
      *previous-slot*) cat "$state/prev" 2>/dev/null || true ;;
      *selector.slot*) cat "$state/live" ;;
      *) echo "service/${args[2]}" ;;
    esac ;;
  "get deployment") echo "-" ;;
  "patch service")
    json="${args[*]: -1}"
    slot="$(sed -E 's/.*"slot":"([a-z]+)".*/\1/' <<<"$json")"
    if [[ "${args[2]}" == meshops ]]; then
      prev="$(sed -E 's/.*previous-slot":"([a-z]*)".*/\1/' <<<"$json")"
      echo "$prev" >"$state/prev"
      echo "$slot" >"$state/live"
    fi ;;
  "apply -f") cat >>"$state/applied" ;;
  "rollout status") echo "deployment successfully rolled out" ;;
  "port-forward "*)
    local_port="${args[2]%%:*}"
    svc="${args[1]#svc/}"
    slot="${svc#meshops-}"
    [[ "$svc" == meshops ]] && slot="$(cat "$state/live")"
    # A slot named in FAKE_BAD_SLOTS (or, with FAKE_BAD_LIVE=1, whatever the
    # live Service reaches) serves answers without citations.
    extra=()
    if [[ " ${FAKE_BAD_SLOTS:-} " == *" $slot "* ]] || [[ "$svc" == meshops && "${FAKE_BAD_LIVE:-0}" == 1 ]]; then
      extra=(--config "$state/no-citations.toml")
    fi
    exec env MESHOPS__RETRIEVAL__DATA_DIR="$state/data-$local_port" "$MESHOPS_BIN" "${extra[@]}" serve --listen "127.0.0.1:$local_port" ;;
  *) echo "fake kubectl: unsupported: $*" >&2; exit 3 ;;
esac
"#;

/// A temp dir holding the stand-in kubectl, with `live` as the live slot.
fn fake_cluster(live: &str) -> (tempfile::TempDir, PathBuf) {
    let state = tempfile::tempdir().unwrap();
    let kubectl = state.path().join("kubectl");
    std::fs::write(&kubectl, FAKE_KUBECTL).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&kubectl, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::write(state.path().join("live"), format!("{live}\n")).unwrap();
    std::fs::write(
        state.path().join("no-citations.toml"),
        "[flows.question]\nsteps = [\"summarizer\"]\nmax_revisions = 0\n",
    )
    .unwrap();
    (state, kubectl)
}

#[test]
fn bluegreen_switch_validates_through_the_client_then_moves_the_live_selector() {
    let (state, kubectl) = fake_cluster("blue");
    let bg = |args: &[&str]| {
        run(Command::new(root().join("scripts/bluegreen.sh"))
            .args(args)
            .env("KUBECTL", &kubectl)
            .env("FAKE_STATE", state.path())
            .env("MESHOPS_BIN", bin())
            .env_remove("MESHOPS_ENV")
            .current_dir(root()))
    };
    let live = || std::fs::read_to_string(state.path().join("live")).unwrap().trim().to_string();

    let out = bg(&["rollback"]);
    assert!(!out.status.success() && text(&out).contains("no previous slot"), "{}", text(&out));
    let out = bg(&["deploy", "blue", "img:1"]);
    assert!(!out.status.success() && text(&out).contains("slot blue is live"), "{}", text(&out));
    let out = bg(&["switch", "purple"]);
    assert!(!out.status.success() && text(&out).contains("blue or green"), "{}", text(&out));

    let out = bg(&["switch", "green"]);
    assert!(out.status.success(), "switch green:\n{}", text(&out));
    assert!(text(&out).contains("slot green validated"), "{}", text(&out));
    assert_eq!(live(), "green");
    let calls = std::fs::read_to_string(state.path().join("calls")).unwrap();
    let forward = calls.find("port-forward svc/meshops-green").expect("validated through svc/meshops-green");
    let patch = calls.find("patch service meshops ").expect("patched the live Service");
    assert!(forward < patch, "validation must come before the switch:\n{calls}");
    assert!(calls.contains("patch service meshops-headless"), "{calls}");

    let out = bg(&["rollback"]);
    assert!(out.status.success(), "rollback:\n{}", text(&out));
    assert_eq!(live(), "blue");
    let status = bg(&["status"]);
    assert!(text(&status).contains("live slot:     blue"), "{}", text(&status));
    assert!(text(&status).contains("previous slot: green"), "{}", text(&status));
}

/// scripts/promote.sh against the stand-in cluster: a good release goes
/// live after validation; a release whose slot answers without citations
/// never goes live; a failure after the switch rolls back.
#[test]
fn promote_validates_both_sides_of_the_switch_and_rolls_back() {
    // promote.sh pins the image in k8s/overlays/prod: run a project copy's
    // scripts so the checkout stays as it is.
    let image = format!("ghcr.io/acme/meshops@{}", digest('e'));
    let promote = |state: &std::path::Path, kubectl: &std::path::Path, envs: &[(&str, &str)]| {
        let project =
            common::project_copy(&["scripts", "config", "agents", "prompts", "k8s", "eval/datasets"]);
        let mut cmd = Command::new(project.path().join("scripts/promote.sh"));
        cmd.arg(&image)
            .env("KUBECTL", kubectl)
            .env("FAKE_STATE", state)
            .env("MESHOPS_BIN", bin())
            .env("VALIDATE_QUESTIONS", "2")
            .env_remove("MESHOPS_ENV")
            .current_dir(root());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let out = run(&mut cmd);
        let overlay = std::fs::read_to_string(project.path().join("k8s/overlays/prod/kustomization.yaml"));
        (out, overlay.unwrap())
    };
    let live =
        |state: &std::path::Path| std::fs::read_to_string(state.join("live")).unwrap().trim().to_string();

    // Good release: pinned by digest in the prod overlay, green validated,
    // switched, live validated.
    let (state, kubectl) = fake_cluster("blue");
    let (out, overlay) = promote(state.path(), &kubectl, &[]);
    let t = text(&out);
    assert!(out.status.success(), "promote:\n{t}");
    assert_eq!(live(state.path()), "green");
    assert!(t.contains("live service validated") && t.contains(&format!("promoted {image}")), "{t}");
    assert!(
        overlay.contains(&format!("digest: {}", digest('e'))),
        "the prod overlay is not pinned:\n{overlay}"
    );
    let applied = std::fs::read_to_string(state.path().join("applied")).unwrap();
    let deployments: Vec<Value> =
        yaml_docs(&applied).into_iter().filter(|d| s(d, "kind") == "Deployment").collect();
    assert_eq!(deployments.len(), 1, "only the idle slot is applied");
    assert_eq!(s(&deployments[0], "metadata.name"), "meshops-green");
    assert_eq!(s(&deployments[0], "spec.template.spec.containers.0.image"), image);
    let calls = std::fs::read_to_string(state.path().join("calls")).unwrap();
    let idle = calls.find("port-forward svc/meshops-green").expect("idle slot validated");
    let patch = calls.find("patch service meshops ").expect("switched");
    let after = calls.rfind("port-forward svc/meshops ").expect("live validated");
    assert!(idle < patch && patch < after, "order must be validate idle, switch, validate live:\n{calls}");

    // A tag is refused before anything touches the cluster.
    let (state, kubectl) = fake_cluster("blue");
    let project = common::project_copy(&["scripts", "config", "agents", "prompts", "k8s"]);
    let out = run(Command::new(project.path().join("scripts/promote.sh"))
        .arg("ghcr.io/acme/meshops:1.2.0")
        .env("KUBECTL", &kubectl)
        .env("FAKE_STATE", state.path()));
    assert!(!out.status.success() && text(&out).contains("pinned by digest"), "{}", text(&out));
    assert!(!state.path().join("calls").exists(), "a tag reached the cluster");

    // The new slot answers without citations: it never goes live.
    let (state, kubectl) = fake_cluster("blue");
    let (out, _) = promote(state.path(), &kubectl, &[("FAKE_BAD_SLOTS", "green")]);
    let t = text(&out);
    assert!(!out.status.success(), "a bad slot was promoted:\n{t}");
    assert!(t.contains("answers  FAIL") && t.contains("live slot 'blue' keeps serving"), "{t}");
    assert_eq!(live(state.path()), "blue");
    let calls = std::fs::read_to_string(state.path().join("calls")).unwrap();
    assert!(!calls.contains("patch service"), "the live Service was touched:\n{calls}");

    // The switch happens, then the live Service fails: automatic rollback.
    let (state, kubectl) = fake_cluster("blue");
    let (out, _) = promote(state.path(), &kubectl, &[("FAKE_BAD_LIVE", "1")]);
    let t = text(&out);
    assert!(!out.status.success(), "a failing live Service was accepted:\n{t}");
    assert!(t.contains("rolled back"), "{t}");
    assert_eq!(live(state.path()), "blue");
}

/// scripts/ci-build.sh (with the test binary, eval skipped): a tarball
/// whose inner SHA256SUMS verify, outer sums, and a CycloneDX SBOM.
#[test]
fn ci_build_packs_a_verifiable_tarball_and_an_sbom() {
    if require("python3", "ci-build SBOM").is_none() || require("sha256sum", "ci-build sums").is_none() {
        return;
    }
    let dist = tempfile::tempdir().unwrap();
    let out = run(Command::new(root().join("scripts/ci-build.sh"))
        .args(["--skip-eval", "--dist"])
        .arg(dist.path())
        .arg("--results")
        .arg(dist.path().join("results"))
        .env("MESHOPS_BIN", bin())
        .env_remove("MESHOPS_ENV"));
    assert!(out.status.success(), "ci-build.sh:\n{}", text(&out));
    let sums = run(Command::new("sha256sum").args(["-c", "SHA256SUMS"]).current_dir(dist.path()));
    assert!(sums.status.success(), "{}", text(&sums));
    let tarball = std::fs::read_dir(dist.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".tar.gz"))
        .expect("a tarball");
    let unpack = tempfile::tempdir().unwrap();
    let tar = run(Command::new("tar").arg("xzf").arg(&tarball).arg("-C").arg(unpack.path()));
    assert!(tar.status.success(), "{}", text(&tar));
    let top = std::fs::read_dir(unpack.path()).unwrap().next().unwrap().unwrap().path();
    for part in
        ["bin/meshops", "config/meshops.toml", "agents/router.toml", "prompts/critic.prompty", "corpus"]
    {
        assert!(top.join(part).exists(), "tarball lacks {part}");
    }
    let inner = run(Command::new("sha256sum").args(["-c", "--quiet", "SHA256SUMS"]).current_dir(&top));
    assert!(inner.status.success(), "{}", text(&inner));
    let bom: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dist.path().join("meshops.cdx.json")).unwrap())
            .unwrap();
    assert_eq!(bom["bomFormat"], "CycloneDX");
    let names: Vec<&str> =
        bom["components"].as_array().unwrap().iter().filter_map(|c| c["name"].as_str()).collect();
    assert!(names.contains(&"tonic") && names.contains(&"actix"), "SBOM lacks the main dependencies");
}

/// The ServiceMonitor example scrapes a port the rendered gateway really
/// serves metrics on: its selector matches the Service's labels, its port
/// is a named Service port whose target is a container port, and the
/// container's `MESHOPS__TELEMETRY__PROMETHEUS_LISTEN` listens there.
#[test]
fn the_service_monitor_scrapes_the_port_the_gateway_serves_metrics_on() {
    let monitor = std::fs::read_to_string(root().join("k8s/observability/servicemonitor.yaml")).unwrap();
    let monitor = &yaml_docs(&monitor)[0];
    assert_eq!(s(monitor, "kind"), "ServiceMonitor");
    let endpoint = get(monitor, "spec.endpoints.0");
    assert_eq!((s(endpoint, "port"), s(endpoint, "path")), ("metrics", "/metrics"));
    let Some(yaml) = render("overlays/prod") else { return };
    let docs = yaml_docs(&yaml);
    let service = docs
        .iter()
        .find(|d| s(d, "kind") == "Service" && s(d, "metadata.name").ends_with("meshops"))
        .expect("the gateway's Service");
    for (key, want) in get(monitor, "spec.selector.matchLabels").as_mapping().unwrap() {
        let have = get(service, "metadata.labels").get(key.as_str().unwrap());
        assert_eq!(have, Some(want), "the Service lacks the monitor's label {key:?}");
    }
    let port = get(service, "spec.ports")
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| s(p, "name") == "metrics")
        .expect("a Service port named metrics");
    let deployment = docs.iter().find(|d| s(d, "kind") == "Deployment").unwrap();
    let container = get(deployment, "spec.template.spec.containers.0");
    let container_port = get(container, "ports")
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| s(p, "name") == s(port, "targetPort"))
        .expect("the targetPort names a container port");
    let number = get(container_port, "containerPort").as_u64().unwrap();
    let listen = get(container, "env")
        .as_sequence()
        .unwrap()
        .iter()
        .find(|e| s(e, "name") == "MESHOPS__TELEMETRY__PROMETHEUS_LISTEN")
        .map(|e| s(e, "value").to_string())
        .expect("the container turns the scrape endpoint on");
    assert_eq!(listen, format!("0.0.0.0:{number}"));
    let allowed: Vec<u64> = docs
        .iter()
        .filter(|d| s(d, "kind") == "NetworkPolicy")
        .flat_map(|d| get(d, "spec.ingress").as_sequence().unwrap().iter())
        .flat_map(|rule| rule.get("ports").and_then(Value::as_sequence).into_iter().flatten())
        .filter_map(|p| p.get("port").and_then(Value::as_u64))
        .collect();
    assert!(allowed.contains(&number), "the NetworkPolicy admits scrapes on {number}: {allowed:?}");
}
