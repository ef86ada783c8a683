//! Flows as graphs, beyond a list of steps: a judge over a named earlier
//! step, bounded repeats, a group's texts merged into one draft, the
//! fallback reply when the judge still rejects, a reply that misses its
//! schema asked for again, and `validate` refusing a cycle without a
//! bound. Each runs a real gateway over gRPC on a copy of the project's
//! files.

mod common;

use std::path::Path;

use common::{load_errors, start_in};
use meshops::proto::{AskRequest, AskResponse};

fn write(dir: &Path, file: &str, text: &str) {
    std::fs::write(dir.join(file), text).unwrap();
}

/// A copy of the project's researcher files and corpus, with two text
/// answerers (`answer_a`, `answer_b`) and an `llm` judge (`verdict`).
fn copy_with_answerers() -> tempfile::TempDir {
    let dir = common::project_copy(&["agents", "prompts", "config", "corpus"]);
    let (agents, prompts) = (dir.path().join("agents"), dir.path().join("prompts"));
    for name in ["answer_a", "answer_b"] {
        write(
            &agents,
            &format!("{name}.toml"),
            &format!("kind = \"llm\"\nprompt = \"{name}.prompty\"\nmodel = \"offline\"\n"),
        );
    }
    // Two prompts, so the offline engine's texts can be told apart: it
    // answers from the passages, the second one only from the first
    // passage.
    write(
        &prompts,
        "answer_a.prompty",
        "---\nname: A\n---\nsystem:\n{% for p in passages %}[{{ p.n }}] {{ p.text }}\n{% endfor %}\
         {% if feedback %}Fix: {{ feedback }}{% endif %}\nuser:\n{{ query }}\n",
    );
    write(
        &prompts,
        "answer_b.prompty",
        "---\nname: B\n---\nsystem:\n{% for p in passages %}[{{ p.n }}] {{ p.text }}\n{% endfor %}\nuser:\n{{ query }}\n",
    );
    write(&agents, "verdict.toml", "kind = \"llm\"\nprompt = \"verdict.prompty\"\nmodel = \"offline\"\n");
    write(
        &prompts,
        "verdict.prompty",
        "---\nname: Verdict\noutputs:\n  accepted:\n    type: boolean\n  feedback:\n    type: string\n---\n\
         user:\nIs this supported? {{ answer }}\n",
    );
    dir
}

/// Makes the critic reject every draft.
fn strict_critic(spec: &mut meshops::config::MeshSpec) {
    if let Some(critic) = spec.agents.get_mut("critic") {
        if let meshops::config::KindSettings::Critic(c) = &mut critic.base.settings {
            c.accept_threshold = 1.01;
            c.min_coverage = 1.01;
        }
    }
}

async fn ask(t: &mut common::TestServer, variant: &str) -> AskResponse {
    let request = AskRequest {
        query: "How does the critic agent decide to accept a draft?".into(),
        variant: variant.into(),
        ..Default::default()
    };
    t.client.ask(request).await.unwrap().into_inner()
}

fn steps(a: &AskResponse) -> Vec<(&str, u32)> {
    a.steps.iter().map(|s| (s.agent.as_str(), s.attempt)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_runs_rounds_until_its_judge_accepts_or_its_bound_then_falls_back() {
    let dir = copy_with_answerers();
    let flows = r#"
[variants.rounds.flows.question]
steps = [
  "retriever",
  { repeat = ["answer_a", { agent = "critic", judges = "answer_a" }], until = { step = "critic", field = "accepted", equals = true }, max_rounds = 3 },
]
max_revisions = 0
on_reject = "reply"
reply = "Not in the knowledge base."
"#;
    let mut t = start_in(dir.path(), flows, strict_critic).await;
    let a = ask(&mut t, "rounds").await;
    assert_eq!(
        steps(&a),
        [
            ("router", 1),
            ("retriever", 1),
            ("answer_a", 1),
            ("critic", 1),
            ("answer_a", 2),
            ("critic", 2),
            ("answer_a", 3),
            ("critic", 3)
        ]
    );
    // Later rounds revise the agent's own text by the critic's feedback.
    assert!(a.steps[4].summary.ends_with("(revised)") && a.steps[6].summary.ends_with("(revised)"));
    assert!(!a.steps[2].summary.ends_with("(revised)"));
    // Still rejected after the bound: the flow's reply, with the verdict.
    assert_eq!(a.answer, "Not in the knowledge base.");
    assert!(a.citations.is_empty());
    assert!(!a.verdict.unwrap().accepted);

    // The shipped critic accepts this answer in the first round: one round.
    let mut t = start_in(dir.path(), flows, |_| {}).await;
    let a = ask(&mut t, "rounds").await;
    assert_eq!(steps(&a), [("router", 1), ("retriever", 1), ("answer_a", 1), ("critic", 1)]);
    assert!(a.verdict.unwrap().accepted);
    assert_ne!(a.answer, "Not in the knowledge base.");
    assert!(!a.citations.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_judge_of_a_named_step_sends_that_step_back_and_an_llm_can_judge() {
    let dir = copy_with_answerers();
    let flows = r#"
[variants.named.flows.question]
steps = ["retriever", ["answer_a", "answer_b"], { agent = "critic", judges = "answer_a" }]
answer = "answer_b"
max_revisions = 1

[variants.llm_judge.flows.question]
steps = ["retriever", "answer_a", { agent = "verdict", judges = "answer_a" }]
max_revisions = 1
"#;
    let mut t = start_in(dir.path(), flows, strict_critic).await;
    let a = ask(&mut t, "named").await;
    // answer_b wrote last, but the critic judges answer_a and sends it
    // back there.
    assert_eq!(
        steps(&a),
        [
            ("router", 1),
            ("retriever", 1),
            ("answer_a", 1),
            ("answer_b", 1),
            ("critic", 1),
            ("answer_a", 2),
            ("critic", 2)
        ]
    );
    assert!(!a.verdict.unwrap().accepted);
    assert!(!a.answer.is_empty(), "on_reject defaults to the draft: answer_b's text stands");

    let a = ask(&mut t, "llm_judge").await;
    let verdict_step = &a.steps[3];
    assert_eq!((verdict_step.agent.as_str(), verdict_step.kind.as_str()), ("verdict", "llm"));
    assert_eq!(verdict_step.summary, "JSON {accepted, feedback}");
    // Offline, an llm judge scores the draft as the critic does: this one
    // is supported, so it is accepted and not sent back.
    let verdict = a.verdict.expect("the llm judge's verdict is the response's");
    assert!(verdict.accepted, "{verdict:?}");
    assert_eq!(a.steps.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concat_group_merges_its_texts_into_one_draft_the_critic_judges() {
    let dir = copy_with_answerers();
    let flows = r#"
[variants.merged.flows.question]
steps = ["retriever", { group = ["answer_a", "answer_b"], merge = "concat" }, "critic"]
max_revisions = 2

[variants.separate.flows.question]
steps = ["retriever", ["answer_a", "answer_b"]]
answer = "answer_a"

[variants.only_b.flows.question]
steps = ["retriever", "answer_b"]
"#;
    let mut t = start_in(dir.path(), flows, |_| {}).await;
    let a_text = ask(&mut t, "separate").await.answer;
    let b_text = ask(&mut t, "only_b").await.answer;
    let merged = ask(&mut t, "merged").await;
    // Citations are renumbered per answer, so compare without markers.
    let plain = |s: &str| meshops::text::strip_citation_markers(s);
    assert_eq!(plain(&merged.answer), plain(&format!("{a_text}\n\n{b_text}")));
    // A merged draft has no single writer: judged, never sent back.
    assert_eq!(steps(&merged).last(), Some(&("critic", 1)));
    assert!(merged.verdict.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_debate_example_runs_as_the_readme_says() {
    let dir = common::project_copy(&["agents", "prompts", "config", "corpus"]);
    let example = common::root().join("examples/debate");
    common::copy_dir(&example.join("agents"), &dir.path().join("agents"));
    common::copy_dir(&example.join("prompts"), &dir.path().join("prompts"));
    let variant = std::fs::read_to_string(example.join("debate.toml")).unwrap();
    let mut t = start_in(dir.path(), &variant, |_| {}).await;
    let a = ask(&mut t, "debate").await;
    let agents: Vec<&str> = a.steps.iter().map(|s| s.agent.as_str()).collect();
    assert_eq!(&agents[..5], ["router", "retriever", "proponent", "challenger", "judge"], "{agents:?}");
    let judge = &a.steps[4];
    assert_eq!(judge.summary, "JSON {accepted, feedback, scores}");
    let verdict = a.verdict.expect("the judge's verdict");
    assert!(verdict.scores.contains_key("groundedness"), "{verdict:?}");
    if verdict.accepted {
        assert_eq!(agents.len(), 5, "accepted in the first round: {agents:?}");
        assert!(!a.citations.is_empty());
    } else {
        assert_eq!(a.answer, "The debate found no answer the knowledge base supports.");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_that_misses_the_schema_is_asked_for_again_per_the_profile() {
    use common::fake_openai::{FakeOpenAi, completion};
    // Invalid, then valid: with one retry the step succeeds.
    let server = FakeOpenAi::start(|i, _| match i {
        0 => completion(r#"{"accepted": "yes"}"#, "fake-json", Some((50, 9))),
        _ => completion(r#"{"accepted": true, "feedback": ""}"#, "fake-json", Some((50, 9))),
    })
    .await;
    let base_url = server.base_url();
    let dir = copy_with_answerers();
    let flows = r#"
[variants.llm_judge.flows.question]
steps = ["retriever", "answer_a", { agent = "verdict", judges = "answer_a" }]
max_revisions = 0
"#;
    let mut t = start_in(dir.path(), flows, move |spec| {
        let mut remote = spec.settings.models["offline"].clone();
        remote.provider = meshops::config::Provider::OpenaiCompatible;
        remote.model = "fake-json".into();
        remote.base_url = Some(base_url);
        remote.max_retries = Some(1);
        spec.settings.models.insert("remote".into(), remote);
        spec.agents.get_mut("verdict").unwrap().base.model = Some("remote".into());
    })
    .await;
    let a = ask(&mut t, "llm_judge").await;
    let judge = a.steps.iter().find(|s| s.agent == "verdict").unwrap();
    assert_eq!(judge.model_attempts, 2, "{judge:?}");
    assert_eq!(judge.failed_model_attempts, ["structured_output"]);
    assert!(a.verdict.unwrap().accepted);
    assert_eq!(server.requests().len(), 2);
}

#[test]
fn validate_refuses_cycles_without_a_bound_and_judges_that_cannot_judge() {
    let dir = copy_with_answerers();
    for (flow, wanted) in [
        (
            r#"steps = ["retriever", { repeat = ["answer_a", "critic"] }]"#,
            "field `variants.v.flows.question.steps[1].max_rounds`: flow `variants.v.flows.question` \
             has a cycle without a bound",
        ),
        (r#"steps = [{ repeat = ["answer_a"], max_rounds = 0 }]"#, "steps[0].max_rounds`: must be 1 to 10"),
        (
            r#"steps = [{ repeat = [{ repeat = ["answer_a"], max_rounds = 2 }], max_rounds = 2 }]"#,
            "steps[0].repeat[0]`: a repeat cannot hold another repeat",
        ),
        (
            r#"steps = ["retriever", "answer_a", { agent = "answer_b", judges = "answer_a" }]"#,
            "steps[2].judges`: `answer_b` is a llm that cannot judge",
        ),
        (
            r#"steps = ["retriever", { agent = "critic", judges = "retriever" }]"#,
            "steps[1].judges`: `retriever` is not an earlier answering step",
        ),
        (
            r#"steps = ["retriever", { group = ["answer_a", { agent = "verdict", judges = "answer_a" }] }]"#,
            "steps[1][1]`: judge `verdict` cannot run in a group",
        ),
        (
            r#"steps = [{ repeat = ["answer_a"], until = { step = "nobody", equals = 1 }, max_rounds = 2 }]"#,
            "steps[0].until.step`: `nobody` is not an agent of an earlier step",
        ),
    ] {
        let err = load_errors(dir.path(), &format!("[variants.v.flows.question]\n{flow}\n"));
        assert!(err.contains(wanted), "{flow}:\n{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_critic_asks_for_its_declared_verdict_as_a_json_schema() {
    use common::fake_openai::{FakeOpenAi, completion};
    let verdict = r#"{"accepted": true, "scores": {"groundedness": 0.9, "coverage": 0.9}, "feedback": ""}"#;
    let server = FakeOpenAi::start(move |_, _| completion(verdict, "fake-critic", Some((80, 20)))).await;
    let base_url = server.base_url();
    let dir = copy_with_answerers();
    let mut t = start_in(dir.path(), "", move |spec| {
        let mut remote = spec.settings.models["offline"].clone();
        remote.provider = meshops::config::Provider::OpenaiCompatible;
        remote.model = "fake-critic".into();
        remote.base_url = Some(base_url);
        spec.settings.models.insert("remote".into(), remote);
        spec.agents.get_mut("critic").unwrap().base.model = Some("remote".into());
    })
    .await;
    let a = ask(&mut t, "").await;
    assert!(a.verdict.unwrap().accepted);
    let seen = server.requests();
    assert_eq!(seen.len(), 1);
    let format = &seen[0].body["response_format"];
    assert_eq!(format["type"], "json_schema", "{format}");
    assert_eq!(format["json_schema"]["name"], "critic");
    let schema = &format["json_schema"]["schema"];
    assert_eq!(schema["properties"]["accepted"]["type"], "boolean", "{schema}");
    assert_eq!(schema["properties"]["scores"]["properties"]["coverage"]["type"], "number", "{schema}");
    assert_eq!(format["json_schema"]["strict"], true, "every field is required and every object closed");
}
