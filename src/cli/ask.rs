//! `meshops ask`: one question to a running gateway, answered as text,
//! JSON or a stream of step events and tokens; or `--repeat N` latency
//! percentiles.

use anyhow::{Context, Result, bail};
use meshops::proto;
use meshops::proto::gateway_client::GatewayClient;

use super::connect::{ConnectArgs, connect};
use super::{authorized, status_error};

/// What `meshops ask` was asked.
pub struct AskArgs<'a> {
    pub query: &'a str,
    pub target: String,
    pub stream: bool,
    pub json: bool,
    pub variant: Option<&'a str>,
    /// A conversation's id: the question is its next turn.
    pub session: Option<&'a str>,
    pub repeat: Option<usize>,
    pub conn: &'a ConnectArgs,
}

/// Runs `meshops ask`.
pub async fn execute(args: AskArgs<'_>) -> Result<()> {
    let AskArgs { query, target, stream, json, variant, session, repeat, conn } = args;
    let channel = connect(&target, conn).await?;
    let mut client = GatewayClient::new(channel);
    let request = proto::AskRequest {
        query: query.to_string(),
        variant: variant.unwrap_or_default().to_string(),
        session_id: session.unwrap_or_default().to_string(),
        ..Default::default()
    };
    let key = conn.api_key.as_deref();
    if let Some(n) = repeat {
        return repeat_latency(&mut client, request, n.max(1), key).await;
    }
    if stream {
        let mut events =
            client.ask_stream(authorized(request, key)?).await.map_err(status_error)?.into_inner();
        let mut last = None;
        // On a terminal, tokens (stdout) and step lines (stderr) share one
        // screen: a step line must not continue the answer's last line.
        let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
        let mut mid_line = false;
        let end_line = |mid_line: &mut bool| {
            if terminal && std::mem::take(mid_line) {
                println!();
            }
        };
        while let Some(event) = events.message().await.map_err(status_error)? {
            use proto::ask_event::Event;
            match event.event {
                Some(Event::StepStarted(s)) => {
                    end_line(&mut mid_line);
                    eprintln!("→ {} ({}) attempt {}", s.agent, s.kind, s.attempt)
                }
                Some(Event::StepFinished(f)) => {
                    if let Some(s) = f.step {
                        end_line(&mut mid_line);
                        eprintln!("✓ {} {:.1} ms: {}", s.agent, s.latency_ms, s.summary)
                    }
                }
                Some(Event::Token(t)) if !json => {
                    print!("{}", t.text);
                    mid_line = !t.text.ends_with('\n');
                    // Show each token as it arrives, not at the end.
                    std::io::Write::flush(&mut std::io::stdout()).context("stdout")?;
                }
                Some(Event::Token(_)) => {}
                Some(Event::Final(answer)) => last = Some(answer),
                None => {}
            }
        }
        let Some(answer) = last else { bail!("the stream ended without a final answer") };
        if json {
            println!("{}", serde_json::to_string_pretty(&response_json(&answer))?);
        } else {
            println!();
            print_answer(&answer, false);
        }
    } else {
        let answer = client.ask(authorized(request, key)?).await.map_err(status_error)?.into_inner();
        if json {
            println!("{}", serde_json::to_string_pretty(&response_json(&answer))?);
        } else {
            print_answer(&answer, true);
        }
    }
    Ok(())
}

/// Sends `request` `n` times in sequence and prints latency percentiles.
async fn repeat_latency(
    client: &mut GatewayClient<tonic::transport::Channel>,
    request: proto::AskRequest,
    n: usize,
    key: Option<&str>,
) -> Result<()> {
    let mut micros = Vec::with_capacity(n);
    let mut mesh_ms = Vec::with_capacity(n);
    // Per agent: (model, step latencies in ms, output tokens, input tokens,
    // whether any count was estimated).
    let mut agents: std::collections::BTreeMap<String, (String, Vec<f64>, u64, u64, bool)> =
        std::collections::BTreeMap::new();
    let mut failures: Vec<String> = Vec::new();
    for _ in 0..n {
        let started = std::time::Instant::now();
        let answer = match client.ask(authorized(request.clone(), key)?).await {
            Ok(a) => a.into_inner(),
            // A failed call is counted and reported, not the end of the run:
            // a weak model fails some steps, and the rest still measure.
            Err(s) => {
                failures.push(format!("{:?}: {}", s.code(), s.message()));
                continue;
            }
        };
        micros.push(started.elapsed().as_secs_f64() * 1e6);
        mesh_ms.push(answer.usage.map(|u| u.latency_ms).unwrap_or_default());
        for step in &answer.steps {
            let entry = agents
                .entry(step.agent.clone())
                .or_insert_with(|| (step.model.clone(), Vec::new(), 0, 0, false));
            entry.1.push(step.latency_ms);
            entry.2 += step.output_tokens;
            entry.3 += step.input_tokens;
            entry.4 |= step.tokens_estimated;
        }
    }
    let pct = |v: &[f64], p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    if micros.is_empty() {
        bail!("all {n} Ask calls failed; first: {}", failures.first().map(String::as_str).unwrap_or(""));
    }
    micros.sort_by(f64::total_cmp);
    mesh_ms.sort_by(f64::total_cmp);
    println!(
        "{} sequential Ask calls ({} failed): client latency p50 {:.0} µs, p90 {:.0} µs, p99 {:.0} µs, \
         max {:.0} µs; mesh latency p50 {:.3} ms",
        micros.len(),
        failures.len(),
        pct(&micros, 0.5),
        pct(&micros, 0.9),
        pct(&micros, 0.99),
        pct(&micros, 1.0),
        pct(&mesh_ms, 0.5)
    );
    for (agent, (model, mut latencies, output, input, estimated)) in agents {
        latencies.sort_by(f64::total_cmp);
        let seconds: f64 = latencies.iter().sum::<f64>() / 1000.0;
        let steps = latencies.len();
        let rate = if seconds > 0.0 { output as f64 / seconds } else { 0.0 };
        println!(
            "  {agent} ({model}): {steps} steps, latency p50 {:.1} ms, p90 {:.1} ms; \
             {:.1} input and {:.1} output tokens per step, {rate:.1} output tokens/s of step time{}",
            pct(&latencies, 0.5),
            pct(&latencies, 0.9),
            input as f64 / steps as f64,
            output as f64 / steps as f64,
            if estimated { " (token counts estimated)" } else { "" }
        );
    }
    for (i, f) in failures.iter().enumerate().take(3) {
        println!("  failure {}: {f}", i + 1);
    }
    Ok(())
}

fn print_answer(a: &proto::AskResponse, with_text: bool) {
    if with_text {
        println!("{}", a.answer);
    }
    if !a.citations.is_empty() {
        println!("\nSources:");
        for (i, c) in a.citations.iter().enumerate() {
            println!("  [{}] {} ({}, score {:.3})", i + 1, c.doc_id, c.chunk_id, c.score);
        }
    }
    let verdict = a
        .verdict
        .as_ref()
        .map(|v| format!(", critic {}", if v.accepted { "accepted" } else { "rejected" }))
        .unwrap_or_default();
    println!("\nintent {}{verdict}, trace {}", a.intent, a.trace_id);
    for s in &a.steps {
        // `~` marks a step whose token counts are estimates (the offline
        // engine, or a server that reports no usage).
        let mark = if s.tokens_estimated { "~" } else { " " };
        println!(
            "  {:<11} {:<20} attempt {} {:>8.2} ms {mark} {}",
            s.agent, s.model, s.attempt, s.latency_ms, s.summary
        );
    }
    if let Some(u) = &a.usage {
        let cost = u.cost_usd.map(|c| format!("${c:.6}")).unwrap_or_else(|| "unknown".into());
        let estimated =
            if a.steps.iter().any(|s| s.tokens_estimated) { " (estimated where marked ~)" } else { "" };
        println!("  tokens in {} out {}{estimated}, cost {cost}", u.input_tokens, u.output_tokens);
    }
}

/// The response as JSON, field names as in the proto (`ask --json`, and
/// each batch result's `response`).
pub fn response_json(a: &proto::AskResponse) -> serde_json::Value {
    serde_json::json!({
        "answer": a.answer,
        "citations": a.citations.iter().map(|c| serde_json::json!({
            "doc_id": c.doc_id, "chunk_id": c.chunk_id, "text": c.text, "score": c.score,
        })).collect::<Vec<_>>(),
        "intent": a.intent,
        "verdict": a.verdict.as_ref().map(|v| serde_json::json!({
            "accepted": v.accepted, "scores": v.scores, "feedback": v.feedback,
        })),
        "steps": a.steps.iter().map(|s| serde_json::json!({
            "agent": s.agent, "kind": s.kind, "model": s.model, "attempt": s.attempt,
            "latency_ms": s.latency_ms, "input_tokens": s.input_tokens, "output_tokens": s.output_tokens,
            "tokens_estimated": s.tokens_estimated, "cost_usd": s.cost_usd, "summary": s.summary,
        })).collect::<Vec<_>>(),
        "usage": a.usage.as_ref().map(|u| serde_json::json!({
            "input_tokens": u.input_tokens, "output_tokens": u.output_tokens, "cost_usd": u.cost_usd,
            "model_calls": u.model_calls, "latency_ms": u.latency_ms,
        })),
        "trace_id": a.trace_id,
        "variant": a.variant,
    })
}
