//! Admission's unit tests: keys, local budgets, reservations and
//! settlement, the queue.

use super::*;

fn meta(auth: Option<&str>) -> tonic::metadata::MetadataMap {
    let mut m = tonic::metadata::MetadataMap::new();
    if let Some(a) = auth {
        m.insert("authorization", a.parse().unwrap());
    }
    m
}

#[test]
fn failed_authentications_are_logged_at_most_once_per_interval() {
    let a = Admission::new(&GatewaySettings::default(), Admission::plain_keys(&["k1".into()], "test"));
    for _ in 0..5 {
        assert!(a.authenticate_at(&meta(Some("Bearer wrong")), Instant::now()).is_err());
    }
    // The first was logged; the next four wait for the next line.
    assert_eq!(a.auth_failures_unlogged.load(Ordering::Relaxed), 4);
    // A good key is not a failure.
    assert!(a.authenticate_at(&meta(Some("Bearer k1")), Instant::now()).is_ok());
    assert_eq!(a.auth_failures_unlogged.load(Ordering::Relaxed), 4);
}

#[test]
fn keys_and_rate_limits() {
    let settings = GatewaySettings { rate_limit_rps: 1.0, rate_limit_burst: 2, ..Default::default() };
    let a = Admission::new(&settings, Admission::plain_keys(&["k1".into()], "test"));
    assert_eq!(
        a.authenticate_at(&meta(None), Instant::now()).unwrap_err().code(),
        tonic::Code::Unauthenticated
    );
    assert_eq!(
        a.authenticate_at(&meta(Some("Bearer nope")), Instant::now()).unwrap_err().code(),
        tonic::Code::Unauthenticated
    );
    assert!(a.authenticate_at(&meta(None), Instant::now()).unwrap_err().message().starts_with("missing"));
    for malformed in ["k1", "Basic k1", "Bearer ", "Bearer    "] {
        let err = a.authenticate_at(&meta(Some(malformed)), Instant::now()).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated, "{malformed}");
        assert!(err.message().starts_with("malformed"), "{malformed}: {}", err.message());
    }
    assert!(a.authenticate_at(&meta(Some("Bearer k1")), Instant::now()).is_ok());
    assert!(a.authenticate_at(&meta(Some("Bearer k1")), Instant::now()).is_ok());
    assert_eq!(
        a.authenticate_at(&meta(Some("Bearer k1")), Instant::now()).unwrap_err().code(),
        tonic::Code::ResourceExhausted
    );
    let open = Admission::new(&GatewaySettings::default(), vec![]);
    assert!(open.authenticate_at(&meta(None), Instant::now()).unwrap().is_none());
    assert!(open.authenticate_at(&meta(None), Instant::now()).is_ok());
}

#[tokio::test]
async fn sheds_beyond_slots_and_queue() {
    let settings = GatewaySettings { max_in_flight: 1, max_queued: 0, ..Default::default() };
    let a = Admission::new(&settings, vec![]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    let held = a.admit(deadline).await.unwrap();
    assert_eq!(a.admit(deadline).await.err().unwrap().code(), tonic::Code::ResourceExhausted);
    drop(held);
    assert!(a.admit(deadline).await.is_ok());
    a.drain();
    assert_eq!(a.admit(deadline).await.err().unwrap().code(), tonic::Code::Unavailable);
}

#[tokio::test]
async fn a_caller_that_hangs_up_while_queued_gives_its_place_back() {
    let settings = GatewaySettings { max_in_flight: 1, max_queued: 2, ..Default::default() };
    let a = Admission::new(&settings, vec![]);
    let far = tokio::time::Instant::now() + Duration::from_secs(60);
    let held = a.admit(far).await.unwrap();
    // Ten times the queue's size of callers queue and hang up (their
    // futures dropped while waiting for a slot).
    for _ in 0..10 * settings.max_queued {
        let mut waiting = Box::pin(a.admit(far));
        assert!(futures::poll!(waiting.as_mut()).is_pending(), "queued behind the held slot");
        drop(waiting);
    }
    assert_eq!(a.queued.load(Ordering::SeqCst), 0, "every place was given back");
    // The queue still admits: a waiter gets the slot when it frees.
    let waiter = tokio::spawn({
        let a = std::sync::Arc::new(a);
        async move { a.admit(far).await.map(|_| ()) }
    });
    tokio::task::yield_now().await;
    drop(held);
    assert!(waiter.await.unwrap().is_ok());
}

#[test]
fn tokens_per_minute_are_charged_after_the_request() {
    let settings = GatewaySettings { rate_limit_tpm: 100, rate_limit_token_reserve: 0, ..Default::default() };
    let keys = Admission::plain_keys(&["k1".into(), "k2".into()], "test");
    let a = Admission::new(&settings, keys);
    let caller = a.authenticate_at(&meta(Some("Bearer k1")), Instant::now()).unwrap();
    assert!(caller.is_some());
    a.settle(caller, 150);
    let err = a.authenticate_at(&meta(Some("Bearer k1")), Instant::now()).unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    assert!(err.message().contains("gateway.rate_limit_tpm"), "{}", err.message());
    // Another key has its own budget.
    assert!(a.authenticate_at(&meta(Some("Bearer k2")), Instant::now()).is_ok());
}

fn retry_after_secs(s: &Status) -> u64 {
    s.metadata().get("retry-after").unwrap().to_str().unwrap().parse().unwrap()
}

#[test]
fn the_request_bucket_refills_at_the_rate_up_to_the_burst() {
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let settings = GatewaySettings { rate_limit_rps: 2.0, rate_limit_burst: 2, ..Default::default() };
    let a = Admission::new_at(&settings, Admission::plain_keys(&["k1".into()], "test"), t0);
    let k1 = meta(Some("Bearer k1"));
    // The burst, then a refusal that says how long a token takes.
    assert!(a.authenticate_at(&k1, at(0)).is_ok());
    assert!(a.authenticate_at(&k1, at(0)).is_ok());
    let err = a.authenticate_at(&k1, at(0)).unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    assert!(err.message().contains("retry after 500 ms"), "{}", err.message());
    assert_eq!(retry_after_secs(&err), 1);
    // Half a token after 250 ms is not enough; a whole one after 500 ms is.
    assert_eq!(a.authenticate_at(&k1, at(250)).unwrap_err().code(), tonic::Code::ResourceExhausted);
    assert!(a.authenticate_at(&k1, at(500)).is_ok());
    assert_eq!(a.authenticate_at(&k1, at(500)).unwrap_err().code(), tonic::Code::ResourceExhausted);
    // A long idle time refills the burst, never more than the burst.
    assert!(a.authenticate_at(&k1, at(60_000)).is_ok());
    assert!(a.authenticate_at(&k1, at(60_000)).is_ok());
    assert!(a.authenticate_at(&k1, at(60_000)).is_err());
    // A clock read before the last refill adds nothing.
    assert!(a.authenticate_at(&k1, at(59_000)).is_err());
}

#[test]
fn the_token_budget_refills_per_minute_and_pays_back_a_debt() {
    let t0 = Instant::now();
    let at = |s: u64| t0 + Duration::from_secs(s);
    let settings = GatewaySettings { rate_limit_tpm: 60, rate_limit_token_reserve: 0, ..Default::default() };
    let a = Admission::new_at(&settings, Admission::plain_keys(&["k1".into()], "test"), t0);
    let k1 = meta(Some("Bearer k1"));
    let caller = a.authenticate_at(&k1, at(0)).unwrap();
    // A request of 90 tokens leaves the key 30 in debt: one token a
    // second pays it back, and the key needs one more to be admitted.
    a.settle(caller, 90);
    let err = a.authenticate_at(&k1, at(0)).unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    assert_eq!(retry_after_secs(&err), 31);
    assert!(err.message().contains("retry after 31 s"), "{}", err.message());
    assert!(a.authenticate_at(&k1, at(30)).is_err(), "a budget of exactly 0 admits nothing");
    let caller = a.authenticate_at(&k1, at(31)).unwrap();
    // An hour idle refills a minute's budget, not more: 61 tokens put
    // the key in debt again.
    a.settle(caller, 1);
    assert!(a.authenticate_at(&k1, at(3_600)).is_ok());
    a.settle(caller, 61);
    assert!(a.authenticate_at(&k1, at(3_600)).is_err());
}

#[test]
fn tokens_are_reserved_at_admission_and_settled_however_the_request_ends() {
    let t0 = Instant::now();
    let settings =
        GatewaySettings { rate_limit_tpm: 1000, rate_limit_token_reserve: 400, ..Default::default() };
    let a = std::sync::Arc::new(Admission::new_at(&settings, Admission::plain_keys(&["k1".into()], "t"), t0));
    let k1 = meta(Some("Bearer k1"));
    let budget = |a: &Admission| a.buckets[0].lock().unwrap().tokens.0;
    // Two admissions reserve 800; a third still finds 200 > 0.
    let first = a.authenticate_at(&k1, t0).unwrap();
    let second = a.authenticate_at(&k1, t0).unwrap();
    assert_eq!(budget(&a), 200.0);
    // The first used 50: 350 come back.
    let mut s = Settlement::new(a.clone(), first);
    s.start();
    s.meter().unwrap().fetch_add(50, Ordering::Relaxed);
    s.finish();
    assert_eq!(budget(&a), 550.0);
    // The second is dropped mid-run after 10 tokens: it keeps its
    // reservation (a model call may have been under way).
    let mut s = Settlement::new(a.clone(), second);
    s.start();
    s.meter().unwrap().fetch_add(10, Ordering::Relaxed);
    drop(s);
    assert_eq!(budget(&a), 550.0);
    // One refused before the mesh ran it (dropped unstarted) gets its
    // reservation back; one that used more than reserved pays the rest.
    let third = a.authenticate_at(&k1, t0).unwrap();
    drop(Settlement::new(a.clone(), third));
    assert_eq!(budget(&a), 550.0);
    let fourth = a.authenticate_at(&k1, t0).unwrap();
    let mut s = Settlement::new(a.clone(), fourth);
    s.start();
    s.meter().unwrap().fetch_add(900, Ordering::Relaxed);
    s.finish();
    assert_eq!(budget(&a), -350.0);
    assert!(a.authenticate_at(&k1, t0).is_err());
}

#[tokio::test]
async fn a_batch_item_is_charged_to_its_owners_budget() {
    let settings =
        GatewaySettings { rate_limit_tpm: 100, rate_limit_token_reserve: 30, ..Default::default() };
    let a = Admission::new(&settings, Admission::plain_keys(&["k1".into()], "t"));
    let owner = a.identity(Some(Caller { index: 0, reserved: 0, shared: false, ticket: None })).unwrap();
    assert_eq!(a.charge_item("batch:unknown-owner").await, Ok(None));
    let item = a.charge_item(&owner).await.unwrap();
    a.settle(item, 200);
    let wait = a.charge_item(&owner).await.unwrap_err();
    assert!(wait >= 60.0, "{wait}");
    // The key's own requests are refused too: one budget.
    let err = a.authenticate_at(&meta(Some("Bearer k1")), Instant::now()).unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
}

#[test]
fn a_keys_concurrent_requests_are_bounded_and_freed_when_settled() {
    let settings = GatewaySettings { rate_limit_concurrency: 2, ..Default::default() };
    let keys = Admission::plain_keys(&["k1".into(), "k2".into()], "t");
    let a = std::sync::Arc::new(Admission::new(&settings, keys));
    let (k1, k2) = (meta(Some("Bearer k1")), meta(Some("Bearer k2")));
    let first = a.authenticate_at(&k1, Instant::now()).unwrap();
    let second = a.authenticate_at(&k1, Instant::now()).unwrap();
    let err = a.authenticate_at(&k1, Instant::now()).unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    assert!(err.message().contains("gateway.rate_limit_concurrency"), "{}", err.message());
    // Another key has its own places.
    a.authenticate_at(&k2, Instant::now()).unwrap();
    // A finished request frees its place; so does one dropped unfinished.
    Settlement::new(a.clone(), first).finish();
    let third = a.authenticate_at(&k1, Instant::now()).unwrap();
    drop(Settlement::new(a.clone(), second));
    a.authenticate_at(&k1, Instant::now()).unwrap();
    assert!(a.authenticate_at(&k1, Instant::now()).is_err());
    drop(Settlement::new(a.clone(), third));
}

#[tokio::test]
async fn calls_that_run_no_model_pass_a_spent_token_budget() {
    let settings = GatewaySettings { rate_limit_tpm: 100, rate_limit_token_reserve: 0, ..Default::default() };
    let a = Admission::new(&settings, Admission::plain_keys(&["k1".into()], "t"));
    let k1 = meta(Some("Bearer k1"));
    let caller = a.authenticate_request(&k1).await.unwrap();
    a.settle(caller, 500);
    assert_eq!(a.authenticate_request(&k1).await.unwrap_err().code(), tonic::Code::ResourceExhausted);
    assert!(a.authenticate(&k1).await.unwrap().is_some(), "GetBatch and the like still pass");
}
