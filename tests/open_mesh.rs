//! An open mesh, with files only: a researcher's `kind = "llm"` agent joins
//! a variant's flow in a copy of the project and the shipped binary runs
//! it; flows run agents at once (fan-out) and on conditions; an `llm`
//! agent's declared outputs are sent as a JSON schema and its replies
//! checked against it; `validate` names what is wrong with a flow.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};

use meshops::config::{LoadOptions, MeshSpec};
use meshops::proto::gateway_client::GatewayClient;
use meshops::proto::{AskRequest, AskResponse, ask_event::Event};
use serde_json::json;
use tonic::Code;

/// A copy of the project's researcher files (`agents/`, `prompts/`,
/// `config/`) and its corpus in a temporary folder.
fn project_copy() -> tempfile::TempDir {
    common::project_copy(&["agents", "prompts", "config", "corpus"])
}

fn write(dir: &Path, file: &str, text: &str) {
    std::fs::write(dir.join(file), text).unwrap();
}

/// The researcher's headline agent: a prompt and a model, no Rust.
const HEADLINE_AGENT: &str = r#"# Writes a one-line headline of the answer.
kind = "llm"
description = "A one-line headline of the summarizer's answer."
prompt = "headline.prompty"
model = "offline"
"#;

const HEADLINE_PROMPT: &str = "---
name: Headline
description: A one-line headline of an answer, keeping its citation.
model:
  api: chat
  parameters:
    max_tokens: 40
---
system:
Write a one-line headline for the answer below. Keep its [n] citation.

user:
Question: {{ query }}
Answer: {{ outputs.summarizer }}
";

/// An answerer of the debate set-up: text from the passages.
fn answerer(name: &str) -> String {
    format!(
        "kind = \"llm\"\ndescription = \"Answerer {name}.\"\nprompt = \"answerer.prompty\"\nmodel = \"offline\"\n"
    )
}

const ANSWERER_PROMPT: &str = "---
name: Answerer
---
system:
Answer from the passages, citing them as [n].
{% for p in passages %}[{{ p.n }}] {{ p.text }}
{% endfor %}
user:
{{ query }}
";

/// A judge with structured output: which answer is better, and why.
const JUDGE_AGENT: &str = "kind = \"llm\"\nprompt = \"judge.prompty\"\nmodel = \"offline\"\n";

const JUDGE_PROMPT: &str = "---
name: Judge
outputs:
  best:
    type: string
    enum: [answer_a, answer_b]
  reason:
    type: string
---
system:
Pick the better answer. A: {{ outputs.answer_a }} B: {{ outputs.answer_b }}

user:
{{ query }}
";

/// A classifier with structured output; offline, `needs_search` takes its
/// declared default.
const CLASSIFY_AGENT: &str = "kind = \"llm\"\nprompt = \"classify.prompty\"\nmodel = \"offline\"\n";

const CLASSIFY_PROMPT: &str = "---
name: Classify
outputs:
  needs_search:
    type: boolean
    default: true
  topic:
    type: string
---
user:
Does this need a search of the knowledge base? {{ query }}
";

/// A free port on the loopback.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Kills the server when the test ends, even on a failed assert.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until the gateway at `target` reports SERVING (it ingests the
/// corpus on its first start), then asks it once.
async fn ask_when_up(target: &str, request: AskRequest) -> AskResponse {
    common::wait::serving(target).await;
    let mut client = GatewayClient::connect(target.to_string()).await.unwrap();
    client.ask(request).await.unwrap().into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_llm_agent_joins_a_variant_flow_with_files_only_in_the_shipped_binary() {
    let dir = project_copy();
    write(&dir.path().join("agents"), "headline.toml", HEADLINE_AGENT);
    write(&dir.path().join("prompts"), "headline.prompty", HEADLINE_PROMPT);
    let extra = dir.path().join("headline-variant.toml");
    std::fs::write(
        &extra,
        "[variants.headline]\ndescription = \"The question flow, with a headline.\"\n\n\
         [variants.headline.flows.question]\nsteps = [\"retriever\", \"summarizer\", \"critic\", \"headline\"]\n\
         max_revisions = 2\n",
    )
    .unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let _server = Server(
        Command::new(env!("CARGO_BIN_EXE_meshops"))
            .args(["serve", "--listen", &listen, "--config"])
            .arg(&extra)
            .env("MESHOPS_ROOT", dir.path())
            .env_remove("MESHOPS_ENV")
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let target = format!("http://{listen}");
    let query = "What does the retriever agent do?";
    let request = AskRequest { query: query.into(), variant: "headline".into(), ..Default::default() };
    let a = ask_when_up(&target, request).await;
    assert_eq!((a.intent.as_str(), a.variant.as_str()), ("question", "headline"));
    let agents: Vec<&str> = a.steps.iter().map(|s| s.agent.as_str()).collect();
    assert_eq!(agents.first(), Some(&"router"));
    assert_eq!(agents.last(), Some(&"headline"), "{agents:?}");
    let headline = a.steps.last().unwrap();
    assert_eq!((headline.kind.as_str(), headline.model.as_str()), ("llm", "offline-extractive"));
    assert!(headline.summary.starts_with("text of "), "{}", headline.summary);
    // The answer is the last answering step's: the headline, one sentence
    // of the summarizer's answer with its citation.
    assert!(!a.answer.is_empty() && a.answer.contains('['), "{}", a.answer);
    assert!(!a.citations.is_empty(), "{a:?}");

    let base = ask_when_up(&target, AskRequest { query: query.into(), ..Default::default() }).await;
    assert!(base.steps.iter().all(|s| s.agent != "headline"), "the base flow is unchanged");
}

use common::{load_errors, start_in};

/// The debate and classifier agents in a project copy.
fn researcher_copy() -> tempfile::TempDir {
    let dir = project_copy();
    let (agents, prompts) = (dir.path().join("agents"), dir.path().join("prompts"));
    write(&agents, "answer_a.toml", &answerer("a"));
    write(&agents, "answer_b.toml", &answerer("b"));
    write(&agents, "judge.toml", JUDGE_AGENT);
    write(&agents, "classify.toml", CLASSIFY_AGENT);
    write(&prompts, "answerer.prompty", ANSWERER_PROMPT);
    write(&prompts, "judge.prompty", JUDGE_PROMPT);
    write(&prompts, "classify.prompty", CLASSIFY_PROMPT);
    dir
}

const DEBATE: &str = r#"
[variants.debate]
description = "Two answerers at once, then a judge."

[variants.debate.flows.question]
steps = ["retriever", ["answer_a", "answer_b"], "judge"]
answer = "answer_a"
max_revisions = 0
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_out_runs_two_answerers_at_once_then_a_judge() {
    let dir = researcher_copy();
    let mut t = start_in(dir.path(), DEBATE, |_| {}).await;
    let request = AskRequest {
        query: "How does the critic agent decide to accept a draft?".into(),
        variant: "debate".into(),
        ..Default::default()
    };
    let mut stream = t.client.ask_stream(request).await.unwrap().into_inner();
    let mut events = Vec::new();
    while let Some(e) = stream.message().await.unwrap() {
        events.push(e.event.unwrap());
    }
    let Some(Event::Final(a)) = events.last() else { panic!("no final answer: {events:?}") };
    let agents: Vec<&str> = a.steps.iter().map(|s| s.agent.as_str()).collect();
    assert_eq!(agents, ["router", "retriever", "answer_a", "answer_b", "judge"]);
    // Both answerers start before either finishes: they run at once.
    let order: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            Event::StepStarted(s) => Some(format!("start {}", s.agent)),
            Event::StepFinished(f) => f.step.as_ref().map(|s| format!("finish {}", s.agent)),
            _ => None,
        })
        .filter(|e| e.contains("answer_"))
        .collect();
    assert_eq!(&order[..2], ["start answer_a", "start answer_b"], "{order:?}");
    let judge = a.steps.last().unwrap();
    assert_eq!(judge.kind, "llm");
    assert_eq!(judge.summary, "JSON {best, reason}");
    // `answer = "answer_a"`: the first answerer's text, with citations.
    assert!(!a.answer.is_empty() && !a.citations.is_empty(), "{a:?}");
    assert!(a.verdict.is_none(), "no critic in this flow");
}

const CONDITIONS: &str = r#"
[variants.search_if_needed.flows.question]
steps = [
  "classify",
  { agent = "retriever", when = { step = "classify", field = "needs_search", equals = true } },
  "summarizer",
]
max_revisions = 0

[variants.search_if_not_needed.flows.question]
steps = [
  "classify",
  { agent = "retriever", when = { step = "classify", field = "needs_search", equals = false } },
  "summarizer",
]
max_revisions = 0
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conditional_step_runs_only_when_an_earlier_json_field_says_so() {
    let dir = researcher_copy();
    let mut t = start_in(dir.path(), CONDITIONS, |_| {}).await;
    // Offline, `needs_search` is its declared default, true.
    assert_eq!(
        agents_of(&mut t, "search_if_needed").await,
        ["router", "classify", "retriever", "summarizer"]
    );
    assert_eq!(agents_of(&mut t, "search_if_not_needed").await, ["router", "classify", "summarizer"]);
}

/// The agents that ran for a question under `variant`, in order.
async fn agents_of(t: &mut common::TestServer, variant: &str) -> Vec<String> {
    let request = AskRequest {
        query: "Which port does the gateway listen on?".into(),
        variant: variant.into(),
        ..Default::default()
    };
    let a = t.client.ask(request).await.unwrap().into_inner();
    a.steps.iter().map(|s| s.agent.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_outputs_go_to_the_provider_as_a_json_schema_and_bind_its_replies() {
    use common::fake_openai::{FakeOpenAi, completion};
    let server = FakeOpenAi::start(|i, _| match i {
        0 => completion(r#"{"needs_search": false, "topic": "ports"}"#, "fake-json", Some((50, 9))),
        _ => completion(r#"{"needs_search": "maybe"}"#, "fake-json", Some((50, 9))),
    })
    .await;
    let base_url = server.base_url();
    let dir = researcher_copy();
    let mut t = start_in(dir.path(), CONDITIONS, move |spec| {
        common::on_remote_model(spec, "classify", "fake-json", base_url)
    })
    .await;
    let request = AskRequest {
        query: "Which port does the gateway listen on?".into(),
        variant: "search_if_needed".into(),
        ..Default::default()
    };
    let a = t.client.ask(request.clone()).await.unwrap().into_inner();
    let agents: Vec<&str> = a.steps.iter().map(|s| s.agent.as_str()).collect();
    assert_eq!(agents, ["router", "classify", "summarizer"], "the model said no search is needed");
    let seen = server.requests();
    assert_eq!(
        seen[0].body["response_format"],
        json!({
            "type": "json_schema",
            "json_schema": {
                "name": "classify",
                "strict": true,
                "schema": {
                    "type": "object",
                    "properties": {"needs_search": {"type": "boolean", "default": true}, "topic": {"type": "string"}},
                    "required": ["needs_search", "topic"],
                    "additionalProperties": false,
                },
            },
        })
    );

    let err = t.client.ask(request).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message()
            .contains("agent `classify` (model fake-json): the reply does not fit the declared outputs")
            && err.message().contains("is not of type \"boolean\""),
        "{}",
        err.message()
    );
}

#[test]
fn validate_names_the_file_and_flow_of_a_broken_graph() {
    let dir = researcher_copy();
    for (flow, wanted) in [
        (
            r#"steps = ["retriever", ["answer_a", "answr_b"]]"#,
            "extra.toml: field `variants.v.flows.question.steps[1][1]`: no agent named `answr_b`",
        ),
        (r#"steps = ["router", "summarizer"]"#, "steps[0]`: a router cannot be a flow step"),
        (
            r#"steps = [{ agent = "retriever", when = { step = "classify", field = "x", equals = 1 } }, "classify"]"#,
            "steps[0].when.step`: `classify` is not an agent of an earlier step of this flow",
        ),
        (
            r#"steps = ["classify", { agent = "retriever", when = { step = "classify" } }]"#,
            "steps[1].when`: give exactly one of `equals` and `not_equals`",
        ),
        (
            r#"steps = ["retriever", ["summarizer", "critic"]]"#,
            "steps[1][1]`: judge `critic` cannot run in a group",
        ),
        (
            r#"steps = ["retriever", "classify", "critic"]"#,
            "critic `critic` needs an answering step before it",
        ),
        (
            r#"steps = ["retriever", "summarizer"]
answer = "classify""#,
            "flows.question.answer`: `classify` is not a step of this flow",
        ),
        (
            r#"steps = ["classify", "summarizer"]
answer = "classify""#,
            "`classify` is a llm whose output is not an answer",
        ),
        (r#"steps = ["retriever", 5]"#, "an agent name, a list of agent names run at once, or a table"),
    ] {
        let err = load_errors(dir.path(), &format!("[variants.v.flows.question]\n{flow}\n"));
        assert!(err.contains(wanted), "{flow}:\n{err}");
    }
    // A text llm agent may be judged by the critic, and be the answer.
    write(&dir.path().join("agents"), "headline.toml", HEADLINE_AGENT);
    write(&dir.path().join("prompts"), "headline.prompty", HEADLINE_PROMPT);
    let file = dir.path().join("extra.toml");
    std::fs::write(
        &file,
        "[variants.v.flows.question]\nsteps = [\"retriever\", \"headline\", \"critic\"]\nanswer = \"headline\"\n",
    )
    .unwrap();
    let opts =
        LoadOptions { root: dir.path().into(), env: None, config_file: Some(file), env_vars: Vec::new() };
    MeshSpec::load(&opts).unwrap();
}

#[test]
fn validate_names_an_llm_agent_whose_outputs_cannot_be_a_schema() {
    let dir = researcher_copy();
    write(
        &dir.path().join("prompts"),
        "classify.prompty",
        "---\nname: C\noutputs: 3\n---\nuser:\n{{ query }}\n",
    );
    let err = load_errors(dir.path(), "");
    // Refused when the prompt file loads: the agent file and the prompt's
    // field are both named.
    assert!(
        err.contains("classify.toml: field `prompt`") && err.contains("classify.prompty: field `outputs`"),
        "{err}"
    );
    write(
        &dir.path().join("agents"),
        "classify.toml",
        "kind = \"llm\"\nmodel = \"offline\"\n[llm]\noutput = \"yaml\"\n",
    );
    let err = load_errors(dir.path(), "");
    assert!(err.contains("classify.toml") && err.contains("yaml"), "{err}");
}

const JUDGED_LLM: &str = r#"
[variants.judged.flows.question]
steps = ["retriever", "answer_a", "critic"]
max_revisions = 2
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_critic_judges_an_llm_agents_text_and_sends_it_back_to_that_agent() {
    let dir = researcher_copy();
    // Any draft is rejected, so every revision goes back to the writer.
    let mut t = start_in(dir.path(), JUDGED_LLM, |spec| {
        if let Some(critic) = spec.agents.get_mut("critic") {
            if let meshops::config::KindSettings::Critic(c) = &mut critic.base.settings {
                c.accept_threshold = 1.0;
                c.min_coverage = 1.0;
            }
        }
    })
    .await;
    let request = AskRequest {
        query: "How does the critic agent decide to accept a draft?".into(),
        variant: "judged".into(),
        ..Default::default()
    };
    let a = t.client.ask(request).await.unwrap().into_inner();
    let steps: Vec<(&str, u32)> = a.steps.iter().map(|s| (s.agent.as_str(), s.attempt)).collect();
    assert_eq!(
        steps,
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
    assert!(
        a.steps.iter().filter(|s| s.agent == "answer_a").skip(1).all(|s| s.summary.ends_with("(revised)"))
    );
    let verdict = a.verdict.expect("the critic's verdict");
    assert!(!verdict.accepted);
    assert!(!a.answer.is_empty());
}

/// `examples/planner/`, set up as its README section says: its agents and
/// prompts copied in, its variant layered with `--config`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_planner_example_runs_as_the_readme_says() {
    let dir = project_copy();
    let example = common::root().join("examples/planner");
    common::copy_dir(&example.join("agents"), &dir.path().join("agents"));
    common::copy_dir(&example.join("prompts"), &dir.path().join("prompts"));
    let variant = std::fs::read_to_string(example.join("planner.toml")).unwrap();
    let mut t = start_in(dir.path(), &variant, |_| {}).await;
    let request = AskRequest {
        query: "How does the critic agent decide to accept a draft?".into(),
        variant: "planner".into(),
        ..Default::default()
    };
    let a = t.client.ask(request).await.unwrap().into_inner();
    let agents: Vec<&str> = a.steps.iter().map(|s| s.agent.as_str()).collect();
    // The planner's declared default says search: the retriever runs, the
    // writer answers, the critic reviews (and may send it back once).
    assert_eq!(&agents[..5], ["router", "planner", "retriever", "writer", "critic"], "{agents:?}");
    assert_eq!(a.steps[1].summary, "JSON {needs_search, focus}", "{:?}", a.steps[1]);
    assert!(!a.answer.is_empty() && !a.citations.is_empty(), "{a:?}");
    assert!(a.verdict.is_some(), "the critic judged the writer's answer");
    assert_eq!(a.variant, "planner");
}
