//! The gateway over a real socket with the real generated client: answers,
//! routing, streaming, health, reflection, and bad input.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use meshops::gateway::Overrides;
use meshops::llm::offline::{OFFLINE_MODEL, OfflineEngine};
use meshops::proto::{self, AskRequest, ask_event::Event};
use tonic::Code;

fn ask(query: &str) -> AskRequest {
    AskRequest { query: query.into(), ..Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_questions_get_cited_answers_from_all_four_agents() {
    let mut t = common::start(|_| {}, Overrides::default()).await;
    let rows = common::sample_rows();
    let questions: Vec<_> = rows.iter().filter(|r| !r.relevant_doc_ids.is_empty()).collect();
    assert!(questions.len() >= 30, "the sample dataset needs at least 30 answerable rows");
    let fallback =
        common::spec(std::path::Path::new("unused")).settings.flows["question"].reply.clone().unwrap();
    let mut cite_relevant = 0;
    let mut misses = Vec::new();
    let mut refused = Vec::new();
    for row in &questions {
        let a = t.client.ask(ask(&row.query)).await.unwrap().into_inner();
        assert_eq!(a.intent, "question", "row {} routed to {}", row.id, a.intent);
        assert!(!a.answer.is_empty(), "row {}: empty answer", row.id);
        if a.citations.is_empty() {
            // The critic rejected every revision: the question flow's
            // honest fallback (`on_reject = "reply"`), never an uncited
            // draft.
            assert_eq!(a.answer, fallback, "row {}: no citations", row.id);
            assert!(!a.verdict.as_ref().unwrap().accepted, "row {}", row.id);
            refused.push(row.id.clone());
            continue;
        }
        // Every `[n]` marker indexes a citation the response carries, and
        // every citation is cited: markers are numbered 1..=citations.
        let markers = citation_markers(&a.answer);
        assert!(
            markers.iter().all(|n| (1..=a.citations.len()).contains(n)),
            "row {}: markers {markers:?} beyond {} citations in {:?}",
            row.id,
            a.citations.len(),
            a.answer
        );
        let distinct: BTreeSet<usize> = markers.iter().copied().collect();
        assert_eq!(distinct.len(), a.citations.len(), "row {}: {:?}", row.id, a.answer);
        let kinds: BTreeSet<&str> = a.steps.iter().map(|s| s.kind.as_str()).collect();
        assert_eq!(kinds, BTreeSet::from(["critic", "retriever", "router", "summarizer"]), "row {}", row.id);
        assert!(a.steps.iter().filter(|s| s.kind != "retriever").all(|s| s.model == OFFLINE_MODEL));
        assert!(a.verdict.is_some(), "row {}: the critic gave no verdict", row.id);
        assert_eq!(a.trace_id.len(), 32);
        if a.citations.iter().any(|c| row.relevant_doc_ids.contains(&c.doc_id)) {
            cite_relevant += 1;
        } else {
            misses.push((row.id.clone(), a.citations.iter().map(|c| c.doc_id.clone()).collect::<Vec<_>>()));
        }
    }
    let share = cite_relevant as f64 / questions.len() as f64;
    println!(
        "{cite_relevant}/{} answers cite a relevant doc ({:.0} %); misses: {misses:?}; refused: {refused:?}",
        questions.len(),
        share * 100.0
    );
    assert!(refused.len() * 20 <= questions.len(), "more than 5 % refused: {refused:?}");
    assert!(share >= 0.7, "only {:.0} % cite a relevant doc; misses: {misses:?}", share * 100.0);
    t.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greetings_and_out_of_scope_route_as_configured() {
    let mut t = common::start(|_| {}, Overrides::default()).await;
    let rows = common::sample_rows();
    let routed: Vec<_> =
        rows.iter().filter(|r| matches!(r.intent.as_deref(), Some("greeting" | "out_of_scope"))).collect();
    assert!(routed.len() >= 4, "the sample dataset needs greetings and out-of-scope rows");
    for row in routed {
        let want = row.intent.as_deref().unwrap();
        let a = t.client.ask(ask(&row.query)).await.unwrap().into_inner();
        assert_eq!(a.intent, want, "row {} ({:?})", row.id, row.query);
        assert!(a.citations.is_empty(), "row {}: {want} must not cite", row.id);
        assert!(a.steps.iter().all(|s| s.kind != "retriever"), "row {}: {want} must not retrieve", row.id);
        match want {
            "out_of_scope" => {
                assert_eq!(a.answer, "I can only answer questions about meshops.");
                assert_eq!(a.steps.len(), 1, "only the router runs");
            }
            _ => {
                assert!(a.steps.iter().any(|s| s.kind == "summarizer"));
                assert!(a.answer.starts_with("Hello"), "{}", a.answer);
            }
        }
    }
    t.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ask_stream_emits_steps_tokens_then_the_final_answer() {
    let mut t = common::start(|_| {}, Overrides::default()).await;
    let mut stream = t
        .client
        .ask_stream(ask("How does the critic agent decide to accept a draft?"))
        .await
        .unwrap()
        .into_inner();
    let mut events = Vec::new();
    while let Some(e) = stream.message().await.unwrap() {
        events.push(e.event.unwrap());
    }
    let Some(Event::Final(answer)) = events.last() else {
        panic!("last event must be the final answer: {events:?}")
    };
    assert_eq!(events.iter().filter(|e| matches!(e, Event::Final(_))).count(), 1);
    let started: Vec<&str> = events
        .iter()
        .filter_map(|e| if let Event::StepStarted(s) = e { Some(s.agent.as_str()) } else { None })
        .collect();
    let finished = events.iter().filter(|e| matches!(e, Event::StepFinished(_))).count();
    assert_eq!(started.first(), Some(&"router"));
    assert_eq!(started.len(), answer.steps.len());
    assert_eq!(finished, answer.steps.len());
    let tokens: String = events
        .iter()
        .filter_map(|e| if let Event::Token(t) = e { Some(t.text.as_str()) } else { None })
        .collect();
    assert!(
        tokens.contains(answer.answer.trim()),
        "streamed tokens {tokens:?} must contain the answer {:?}",
        answer.answer
    );
    // A step's start comes before its finish.
    let first_start = events.iter().position(|e| matches!(e, Event::StepStarted(_))).unwrap();
    let first_finish = events.iter().position(|e| matches!(e, Event::StepFinished(_))).unwrap();
    assert!(first_start < first_finish);
    t.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_serving_and_reflection_lists_the_gateway() {
    let t = common::start(|_| {}, Overrides::default()).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(t.channel.clone());
    for service in ["", "meshops.v1.Gateway", "meshops.v1.Batch"] {
        let r = health
            .check(tonic_health::pb::HealthCheckRequest { service: service.into() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            r.status(),
            tonic_health::pb::health_check_response::ServingStatus::Serving,
            "service {service:?}"
        );
    }

    use tonic_reflection::pb::v1;
    use tonic_reflection::pb::v1alpha as alpha;
    let mut client = v1::server_reflection_client::ServerReflectionClient::new(t.channel.clone());
    let req = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(String::new())),
    };
    let mut resp = client.server_reflection_info(futures::stream::iter([req])).await.unwrap().into_inner();
    let msg = resp.message().await.unwrap().unwrap();
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        msg.message_response
    else {
        panic!("unexpected reflection answer {msg:?}")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.contains(&"meshops.v1.Gateway".to_string()), "{names:?}");
    assert!(names.contains(&"meshops.v1.Batch".to_string()), "{names:?}");
    assert!(names.contains(&"grpc.health.v1.Health".to_string()), "{names:?}");

    let mut client = alpha::server_reflection_client::ServerReflectionClient::new(t.channel.clone());
    let req = alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(alpha::server_reflection_request::MessageRequest::ListServices(String::new())),
    };
    let mut resp = client.server_reflection_info(futures::stream::iter([req])).await.unwrap().into_inner();
    let msg = resp.message().await.unwrap().unwrap();
    let Some(alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        msg.message_response
    else {
        panic!("unexpected v1alpha reflection answer {msg:?}")
    };
    assert!(list.service.iter().any(|s| s.name == "meshops.v1.Gateway"));
    t.server.shutdown().await.unwrap();
}

/// What `grpcurl describe meshops.v1.Gateway` and `grpcurl … list` need
/// without a proto file: `FileContainingSymbol` for the service (and for a
/// method) answers with the file that declares it and every file it
/// imports, so each method's request and response types resolve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_gives_the_gateways_file_with_its_imports() {
    use prost::Message;
    use prost_types::FileDescriptorProto;
    use tonic_reflection::pb::v1;
    let t = common::start(|_| {}, Overrides::default()).await;
    let mut client = v1::server_reflection_client::ServerReflectionClient::new(t.channel.clone());
    for symbol in ["meshops.v1.Gateway", "meshops.v1.Gateway.Ask"] {
        let req = v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(v1::server_reflection_request::MessageRequest::FileContainingSymbol(
                symbol.into(),
            )),
        };
        let mut resp =
            client.server_reflection_info(futures::stream::iter([req])).await.unwrap().into_inner();
        let msg = resp.message().await.unwrap().unwrap();
        let Some(v1::server_reflection_response::MessageResponse::FileDescriptorResponse(files)) =
            msg.message_response
        else {
            panic!("{symbol}: unexpected reflection answer {msg:?}")
        };
        let files: Vec<FileDescriptorProto> = files
            .file_descriptor_proto
            .iter()
            .map(|b| FileDescriptorProto::decode(b.as_slice()).unwrap())
            .collect();
        let names: BTreeSet<&str> = files.iter().map(|f| f.name()).collect();
        let gateway = files
            .iter()
            .find(|f| f.name() == "meshops/v1/gateway.proto")
            .unwrap_or_else(|| panic!("{symbol}: the answer lacks meshops/v1/gateway.proto: {names:?}"));
        assert_eq!(gateway.package(), "meshops.v1");
        for f in &files {
            for dep in &f.dependency {
                assert!(
                    names.contains(dep.as_str()),
                    "{symbol}: {} imports {dep}, not sent: {names:?}",
                    f.name()
                );
            }
        }
        let service = gateway.service.iter().find(|s| s.name() == "Gateway").unwrap();
        let methods: BTreeSet<&str> = service.method.iter().map(|m| m.name()).collect();
        assert!(methods.contains("Ask") && methods.contains("AskStream"), "{methods:?}");
        // Every request and response type is declared in a file sent.
        let declared: BTreeSet<String> = files
            .iter()
            .flat_map(|f| f.message_type.iter().map(move |m| format!(".{}.{}", f.package(), m.name())))
            .collect();
        for m in &service.method {
            for ty in [m.input_type(), m.output_type()] {
                assert!(declared.contains(ty), "{symbol}: {} uses {ty}, declared nowhere sent", m.name());
            }
        }
    }
    t.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_invalid_argument_with_a_message() {
    let mut t = common::start(|s| s.settings.gateway.max_query_chars = 100, Overrides::default()).await;
    let cases = [
        (ask(""), "empty"),
        (ask("   \n "), "empty"),
        (ask(&"why ".repeat(30)), "limit is 100"),
        (
            AskRequest { query: "hello".into(), variant: "nope".into(), ..Default::default() },
            "unknown variant `nope`",
        ),
    ];
    for (req, needle) in cases {
        let err = t.client.ask(req.clone()).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{req:?}");
        assert!(err.message().contains(needle), "{:?} should mention {needle:?}", err.message());
        let err = t.client.ask_stream(req.clone()).await.map(|_| ()).err();
        if let Some(err) = err {
            assert_eq!(err.code(), Code::InvalidArgument);
        } else {
            // An unknown variant is found inside the mesh: it ends the stream.
            let mut s = t.client.ask_stream(req).await.unwrap().into_inner();
            let mut last = Ok(None);
            loop {
                match s.message().await {
                    Ok(Some(e)) => last = Ok(Some(e)),
                    Ok(None) => break,
                    Err(e) => {
                        last = Err(e);
                        break;
                    }
                }
            }
            assert_eq!(last.unwrap_err().code(), Code::InvalidArgument);
        }
    }
    t.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn variants_apply_their_overrides() {
    let mut t = common::start(|_| {}, Overrides::default()).await;
    let q = "How are documents chunked and ingested into the vector store?";
    let base = t.client.ask(ask(q)).await.unwrap().into_inner();
    let no_critic = t
        .client
        .ask(AskRequest { query: q.into(), variant: "no_critic".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert!(base.steps.iter().any(|s| s.kind == "critic"));
    assert!(no_critic.steps.iter().all(|s| s.kind != "critic"));
    assert_eq!(no_critic.variant, "no_critic");
    assert!(no_critic.verdict.is_none());
    let d = t.client.describe_mesh(proto::DescribeMeshRequest {}).await.unwrap().into_inner();
    let names: BTreeSet<&str> = d.agents.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, BTreeSet::from(["critic", "retriever", "router", "summarizer"]));
    assert!(d.variants.iter().any(|v| v.name == "concise" && v.overrides.contains_key("summarizer")));
    // Each agent with the flows that run it and the replicas that run
    // (one per mesh thread at least, though the files say 1).
    let agent = |name: &str| d.agents.iter().find(|a| a.name == name).unwrap();
    assert_eq!(agent("critic").flows, ["question"]);
    assert_eq!(agent("retriever").flows, ["question", "no_critic:question"]);
    assert_eq!(agent("router").flows, ["(every flow)"]);
    let threads = common::spec(std::path::Path::new("unused")).settings.mesh.arbiters as u32;
    assert!(d.agents.iter().all(|a| a.replicas >= threads.max(1)), "{:?}", d.agents);
    let question = d.flows.iter().find(|f| f.intent == "question" && f.variant.is_empty()).unwrap();
    assert_eq!((question.on_reject.as_str(), question.max_revisions), ("reply", 2));
    let no_critic = d.flows.iter().find(|f| f.variant == "no_critic").unwrap();
    assert_eq!(no_critic.steps, ["retriever", "summarizer"]);
    t.server.shutdown().await.unwrap();
}

/// Hundreds of concurrent requests with a slow model: every one of them is
/// inside the (single-replica) router's model call at the same time, so the
/// actors do not serialize requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_asks_overlap_inside_the_actors() {
    const N: usize = 300;
    let engine = Arc::new(OfflineEngine::new(OFFLINE_MODEL, 200, 0.0));
    let overrides = Overrides {
        models: HashMap::from([("offline".to_string(), engine.clone() as meshops::llm::SharedLlm)]),
        ..Default::default()
    };
    let t = common::start(|_| {}, overrides).await;
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for i in 0..N {
        let mut client = t.client.clone();
        tasks.push(tokio::spawn(async move {
            client.ask(ask(&format!("hello number {i}"))).await.map(|r| r.into_inner())
        }));
    }
    let mut ok = 0;
    for task in tasks {
        let a = task.await.unwrap().unwrap();
        assert_eq!(a.intent, "greeting");
        ok += 1;
    }
    let elapsed = started.elapsed();
    assert_eq!(ok, N);
    // Router + summarizer: two model calls per request.
    assert_eq!(engine.calls(), 2 * N as u64);
    let peak = engine.peak_in_flight();
    println!("{N} requests in {elapsed:?}; peak concurrent model calls {peak}");
    assert!(peak >= N * 9 / 10, "peak concurrent model calls {peak} of {N}: requests were serialized");
    t.server.shutdown().await.unwrap();
}

/// The numbers inside an answer's `[n]` / `[n, m]` markers, in order.
fn citation_markers(answer: &str) -> Vec<usize> {
    let mut out = Vec::new();
    for group in answer.split('[').skip(1) {
        let Some((inner, _)) = group.split_once(']') else { continue };
        let parts: Vec<&str> = inner.split(',').map(str::trim).collect();
        if !parts.is_empty() && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())) {
            out.extend(parts.iter().filter_map(|p| p.parse::<usize>().ok()));
        }
    }
    out
}
