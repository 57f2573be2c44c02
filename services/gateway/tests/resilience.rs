//! The gateway's resilience through HTTP: circuit breaker, timeout,
//! bulkhead and retries, against real upstreams on loopback.

mod support;

use std::time::{Duration, Instant};

use support::{assert_problem, bearer, settings, TestGateway, TestUpstream};
use tramita_gateway::domain::BreakerConfig;
use tramita_testkit::{eventually, TestIssuer};

const STATE: &str = "tramita_gateway_breaker_state{upstream=\"files\"}";

#[tokio::test]
async fn a_failing_upstream_opens_the_breaker_and_a_recovered_one_closes_it() {
    let issuer = TestIssuer::start().await;
    let files = TestUpstream::start("files").await;
    let mut config = settings(&issuer, &[("files", &files)]);
    config.upstreams[0].policy.breaker = BreakerConfig {
        window: 4,
        min_calls: 4,
        failure_rate: 0.5,
        open_for: Duration::from_millis(700),
        half_open_probes: 1,
    };
    let gateway = TestGateway::start(config).await;
    let token = bearer(&issuer.token("ana", &["clerk"]));
    let call = || {
        gateway
            .get("/api/v1/files/1")
            .header("authorization", &token)
            .send()
    };

    assert_eq!(gateway.metric(STATE).await, Some(0.0));
    files.answer(500);
    for _ in 0..4 {
        assert_eq!(call().await.unwrap().status(), 500);
    }
    assert_eq!(files.received(), 4);
    assert_eq!(gateway.metric(STATE).await, Some(2.0));

    for _ in 0..3 {
        let started = Instant::now();
        let refused = call().await.unwrap();
        assert!(started.elapsed() < Duration::from_millis(200));
        let retry_after: u64 = refused.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(retry_after, 1);
        assert_problem(refused, 503).await;
    }
    assert_eq!(files.received(), 4, "an open breaker let calls through");
    let ready: serde_json::Value = gateway
        .internal("/health/ready")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["upstreams"][0]["breaker"], "open");
    assert_eq!(
        gateway
            .metric("tramita_gateway_upstream_outcomes_total{outcome=\"rejected_open\",upstream=\"files\"}")
            .await,
        Some(3.0)
    );

    // Still failing: the probe reopens it.
    tokio::time::sleep(Duration::from_millis(750)).await;
    assert_eq!(call().await.unwrap().status(), 500);
    assert_eq!(files.received(), 5);
    assert_problem(call().await.unwrap(), 503).await;
    assert_eq!(files.received(), 5);

    // Recovered: a slow probe shows half-open, and its success closes it.
    files.answer(0);
    files.delay(600);
    tokio::time::sleep(Duration::from_millis(750)).await;
    let probe = tokio::spawn({
        let request = gateway
            .get("/api/v1/files/1")
            .header("authorization", &token);
        async move { request.send().await.unwrap().status() }
    });
    eventually(
        Duration::from_secs(2),
        "the probe reaches the upstream",
        || async { (files.received() == 6).then_some(()) },
    )
    .await;
    assert_eq!(gateway.metric(STATE).await, Some(1.0));
    assert_eq!(probe.await.unwrap(), 200);
    assert_eq!(gateway.metric(STATE).await, Some(0.0));
    files.delay(0);
    assert_eq!(call().await.unwrap().status(), 200);
    assert_eq!(files.received(), 7);
    gateway.stop().await;
}

#[tokio::test]
async fn a_slow_upstream_times_out_with_504_quickly() {
    let issuer = TestIssuer::start().await;
    let files = TestUpstream::start("files").await;
    let mut config = settings(&issuer, &[("files", &files)]);
    config.upstreams[0].policy.timeout = Duration::from_millis(300);
    config.upstreams[0].policy.max_retries = 0;
    let gateway = TestGateway::start(config).await;
    files.delay(3000);

    let started = Instant::now();
    let response = gateway
        .get("/api/v1/files/1")
        .header("authorization", bearer(&issuer.token("ana", &["clerk"])))
        .send()
        .await
        .unwrap();
    let took = started.elapsed();
    assert_problem(response, 504).await;
    assert!(took < Duration::from_millis(1500), "took {took:?}");
    assert_eq!(
        gateway
            .metric(
                "tramita_gateway_upstream_outcomes_total{outcome=\"timeout\",upstream=\"files\"}"
            )
            .await,
        Some(1.0)
    );
    gateway.stop().await;
}

#[tokio::test]
async fn a_full_bulkhead_sheds_the_third_concurrent_call_at_once() {
    let issuer = TestIssuer::start().await;
    let files = TestUpstream::start("files").await;
    let mut config = settings(&issuer, &[("files", &files)]);
    config.upstreams[0].policy.max_concurrent = 2;
    let gateway = TestGateway::start(config).await;
    let token = bearer(&issuer.token("ana", &["clerk"]));
    files.delay(1500);

    let slow: Vec<_> = (0..2)
        .map(|_| {
            let request = gateway
                .get("/api/v1/files/1")
                .header("authorization", &token);
            tokio::spawn(async move { request.send().await.unwrap().status() })
        })
        .collect();
    eventually(Duration::from_secs(2), "two calls in flight", || async {
        (files.received() == 2).then_some(())
    })
    .await;
    let started = Instant::now();
    let shed = gateway
        .get("/api/v1/files/1")
        .header("authorization", &token)
        .send()
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_millis(300));
    assert_eq!(shed.headers()["retry-after"], "1");
    assert_problem(shed, 503).await;
    assert_eq!(files.received(), 2);
    for call in slow {
        assert_eq!(call.await.unwrap(), 200);
    }
    files.delay(0);
    let after = gateway
        .get("/api/v1/files/1")
        .header("authorization", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 200, "the slots were given back");
    gateway.stop().await;
}

#[tokio::test]
async fn idempotent_requests_are_retried_and_others_are_not() {
    let issuer = TestIssuer::start().await;
    let files = TestUpstream::start("files").await;
    let gateway = TestGateway::start(settings(&issuer, &[("files", &files)])).await;
    let token = bearer(&issuer.token("ana", &["clerk"]));

    files.fail_next(1, 503);
    let get = gateway
        .get("/api/v1/files/1")
        .header("authorization", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 200);
    assert_eq!(files.received(), 2);

    files.fail_next(1, 503);
    let post = gateway
        .post("/api/v1/files")
        .header("authorization", &token)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 503);
    assert_eq!(files.received(), 3, "a plain POST was retried");

    files.fail_next(1, 503);
    let keyed = gateway
        .post("/api/v1/files")
        .header("authorization", &token)
        .header("idempotency-key", "create-2024-001")
        .body("{\"code\":\"2024-001\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(keyed.status(), 200);
    let echo: serde_json::Value = keyed.json().await.unwrap();
    assert_eq!(
        echo["body"], "{\"code\":\"2024-001\"}",
        "the retry resent the body"
    );
    assert_eq!(files.received(), 5);

    files.fail_next(5, 502);
    let exhausted = gateway
        .get("/api/v1/files/1")
        .header("authorization", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(exhausted.status(), 502);
    assert_eq!(files.received(), 8, "one try and two retries");
    assert_eq!(
        gateway
            .metric(
                "tramita_gateway_upstream_outcomes_total{outcome=\"retried\",upstream=\"files\"}"
            )
            .await,
        Some(4.0)
    );
    gateway.stop().await;
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_502_problem() {
    let issuer = TestIssuer::start().await;
    let down = TestUpstream {
        url: "http://127.0.0.1:9".into(),
        control: Default::default(),
    };
    let mut config = settings(&issuer, &[("files", &down)]);
    config.upstreams[0].policy.max_retries = 1;
    let gateway = TestGateway::start(config).await;
    let response = gateway
        .get("/api/v1/files/1")
        .header("authorization", bearer(&issuer.token("ana", &["clerk"])))
        .send()
        .await
        .unwrap();
    assert_problem(response, 502).await;
    assert_eq!(
        gateway
            .metric("tramita_gateway_upstream_outcomes_total{outcome=\"error\",upstream=\"files\"}")
            .await,
        Some(2.0)
    );
    gateway.stop().await;
}
