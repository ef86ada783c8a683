//! The local commands that look at files, and the probe of a running
//! gateway: `validate`, `keys hash`, `probe` (`ingest` is in
//! [`super::ingest`]).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use meshops::config::{LoadOptions, MeshSpec, PromptFile};

use super::connect::{ConnectArgs, connect};

/// `meshops validate`: the loaded configuration, one line per part, the
/// judges' prompts (loading them checks them), a warning line for each
/// prompt that uses features meshops does not support (they load, and are
/// ignored or approximated as the line says), and every overlay in
/// `config/` layered over `meshops.toml` on its own (an overlay is checked
/// even when `MESHOPS_ENV` does not name it).
pub fn validate(spec: &MeshSpec, opts: &LoadOptions) -> Result<()> {
    print_spec(spec)?;
    let mut failed = Vec::new();
    for name in MeshSpec::overlays(&opts.root) {
        let overlay = LoadOptions { env: Some(name.clone()), ..LoadOptions::files_only(opts.root.clone()) };
        match MeshSpec::load(&overlay) {
            Ok(_) => println!("  overlay {name}: OK"),
            // Its files are right; it needs a secret this machine lacks.
            Err(e) if e.0.iter().all(|e| e.missing_variable().is_some()) => {
                let vars: Vec<&str> = e.0.iter().filter_map(|e| e.missing_variable()).collect();
                println!("  overlay {name}: OK (needs {} where it runs)", vars.join(", "));
            }
            Err(e) => {
                println!("  overlay {name}: INVALID");
                failed.push(format!("overlay `{name}`:\n{e}"));
            }
        }
    }
    if !failed.is_empty() {
        bail!("invalid configuration:\n{}", failed.join("\n"));
    }
    Ok(())
}

/// The loaded configuration, one line per part, and the judges' prompts.
fn print_spec(spec: &MeshSpec) -> Result<()> {
    println!("configuration OK");
    for layer in &spec.layers {
        println!("  settings: {}", layer.display());
    }
    for a in spec.agents.values() {
        let prompt = a.base.prompt_file.as_ref().map(|p| p.strip_prefix(&spec.root).unwrap_or(p).display());
        let flows = spec.flows_using(&a.name);
        println!(
            "  agent {:<12} {:<10} prompt={} model={} replicas={} flows={}",
            a.name,
            a.kind.as_str(),
            prompt.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            a.base.model.as_deref().unwrap_or("-"),
            spec.running_replicas(a),
            if flows.is_empty() { "(none)".to_string() } else { flows.join(",") }
        );
    }
    for a in spec.agents.values() {
        let meshops::config::KindSettings::Llm(settings) = &a.base.settings else { continue };
        let is_agent = |name: &str| spec.agents.contains_key(name);
        let (tools, unbound) =
            meshops::config::profile_tools(settings, a.base.prompt.as_deref(), &is_agent, &spec.settings.mcp);
        if !tools.is_empty() {
            let labels: Vec<String> = tools.iter().map(meshops::config::ToolRef::label).collect();
            println!("  tools {:<12} {}", a.name, labels.join(", "));
        }
        for t in unbound {
            println!("  warning: agent {}: its prompt's {t} is not offered to the model", a.name);
        }
        for t in &tools {
            if let meshops::config::ToolRef::Mcp { server, .. } = t
                && !spec.settings.mcp.contains_key(server)
            {
                println!(
                    "  warning: agent {}: `{}` names no configured server; no flow runs the agent, which starts without it",
                    a.name,
                    t.label()
                );
            }
        }
    }
    for (name, server) in &spec.settings.mcp {
        match (&server.command, &server.url) {
            (Some(c), _) => println!("  mcp   {name:<12} stdio: {c} {}", server.args.join(" ")),
            (None, Some(u)) => println!("  mcp   {name:<12} streamable HTTP: {u}"),
            (None, None) => {}
        }
    }
    for (intent, f) in &spec.settings.flows {
        let steps: Vec<String> = f.steps.iter().map(ToString::to_string).collect();
        println!("  flow  {intent:<12} {}", steps.join(" -> "));
    }
    for (v, settings) in &spec.settings.variants {
        for (intent, f) in &settings.flows {
            let steps: Vec<String> = f.steps.iter().map(ToString::to_string).collect();
            println!("  flow  {:<12} {}", format!("{v}:{intent}"), steps.join(" -> "));
        }
    }
    for name in spec.settings.variants.keys() {
        println!("  variant {name}");
    }
    let judges = meshops::eval::judge::load_prompts(spec)?;
    println!(
        "  judges  {} ({}), model profile {}",
        judges.keys().cloned().collect::<Vec<_>>().join(", "),
        meshops::eval::judge::prompts_dir(spec).display(),
        spec.settings.eval.judge_model
    );
    let mut prompts: BTreeMap<&Path, &PromptFile> = BTreeMap::new();
    for a in spec.agents.values() {
        for profile in std::iter::once(&a.base).chain(a.variants.values()) {
            if let Some(p) = &profile.prompt {
                prompts.insert(&p.path, p);
            }
        }
    }
    for judge in judges.values() {
        prompts.insert(&judge.path, judge.file());
    }
    for p in prompts.values().filter(|p| !p.unsupported.is_empty()) {
        // A note says in parentheses what meshops does instead; one that
        // does not is a field meshops has no use for.
        let notes: Vec<String> =
            p.unsupported
                .iter()
                .map(|note| {
                    if note.ends_with(')') {
                        note.clone()
                    } else {
                        format!("{note} (not supported; ignored)")
                    }
                })
                .collect();
        println!("  warning: prompt {} ({}) uses {}", p.name, p.path.display(), notes.join("; "));
    }
    Ok(())
}

/// `meshops probe`: health and server reflection of the gateway at
/// `target`, within `timeout` seconds; an error unless it is SERVING.
pub async fn probe(target: String, timeout: u64, conn: &ConnectArgs) -> Result<()> {
    let service = meshops::client::GATEWAY_SERVICE;
    let probe = async {
        let channel = connect(&target, conn).await?;
        let key = conn.api_key.as_deref();
        anyhow::Ok(meshops::client::probe(channel, &target, service, key).await?)
    };
    let report = tokio::time::timeout(std::time::Duration::from_secs(timeout), probe)
        .await
        .map_err(|_| anyhow::anyhow!("{target} did not answer the probe within {timeout} s"))??;
    println!("target:   {target}");
    println!("health:   {} ({service})", report.health);
    println!("services: {}", report.services.join(", "));
    if !report.ok(service) {
        bail!("{target} is not ready: health {}, services [{}]", report.health, report.services.join(", "));
    }
    Ok(())
}

/// `meshops keys hash`: a key from standard input as its line for
/// `gateway.api_keys_file`.
pub fn keys_hash(label: Option<&str>) -> Result<()> {
    let mut key = String::new();
    std::io::stdin().read_line(&mut key).context("reading the key from standard input")?;
    let key = key.trim();
    if key.is_empty() {
        bail!("no key on standard input; usage: printf %s \"$KEY\" | meshops keys hash --label NAME");
    }
    match label {
        Some(l) if !l.trim().is_empty() => {
            println!("{} {}", meshops::config::keys::hash_line(key), l.trim())
        }
        _ => println!("{}", meshops::config::keys::hash_line(key)),
    }
    Ok(())
}
