//! No silent sign-outs under faults: a document host that is down (no cached copy) or hangs
//! (a stale one), an OpenID provider that rotates refresh tokens strictly and is asked twice,
//! twenty times at once, or again after our own store write failed, a provider that says 429,
//! and a restore while the gateway serves revocations. Each fault is injected from outside with
//! real processes; none may end a grant that the provider did not refuse, and none may bring a
//! revoked token back.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use actix_web::web;
use serde_json::Value;

use crate::support::document_host::*;
use crate::support::gateway::*;
use crate::support::lying_provider;
use crate::support::oidc_provider::oidc_login;

/// A host serving a public client's document at `path` (max-age=1), and the gateway in front of
/// it with `CIMD_MIN_AGE=1` and `extra`: the host, the document's route, the gateway and the
/// client.
async fn served_document(
    path: &str,
    extra: &[(&str, &str)],
) -> (DocumentHost, Route, Gateway, Value) {
    let host = DocumentHost::start().await;
    let (id, document) = host.serve_document(path, "max-age=1");
    let mut env = vec![("CIMD_MIN_AGE", "1")];
    env.extend_from_slice(extra);
    let gw = host.gateway(&env).await;
    (host, document, gw, document_client(&id))
}

/// A document client's refresh while its host is down and nothing is cached: 503 with
/// Retry-After, never `invalid_client` (which would make the client drop its grant); the same
/// refresh token works once the host is back. `/authorize` shows our page saying to retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_host_that_is_down_is_a_retryable_answer() {
    let path = "/claude.json";
    // No copy outlives max-age: what a restart, another replica or a long outage sees.
    let extra = [
        ("CIMD_MAX_AGE", "1"),
        ("CIMD_STALE_IF_ERROR", "0"),
        ("CIMD_FETCH_TIMEOUT", "1"),
    ];
    let (host, document, gw, client) = served_document(path, &extra).await;
    let tokens = gw.tokens(&client).await;
    let refresh = tokens["refresh_token"].as_str().unwrap();
    for outage in [
        Route::status(503),
        Route::status(502),
        Route::status(429),
        // Slower than CIMD_FETCH_TIMEOUT: a host that hangs.
        document.clone().delayed(Duration::from_secs(3)),
    ] {
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        host.set(path, outage.clone());
        let resp = gw.refresh(&client, refresh).await;
        assert_eq!(resp.status(), 503, "{outage:?}");
        assert!(
            crate::support::header(&resp, "retry-after")
                .parse::<u64>()
                .is_ok()
        );
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "temporarily_unavailable", "{body}");
        // A login now: our page says to retry, never a redirect.
        let (_, challenge) = pkce();
        let resp = browser()
            .get(gw.authorize_url(&client, &challenge, &[]))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 503);
        assert!(resp.text().await.unwrap().contains("retry"));
    }
    // The host is back: the same refresh token works, as soon as the client retries after
    // the Retry-After it was given (refetches back off while the host fails).
    host.set(path, document.clone());
    let mut resp = gw.refresh(&client, refresh).await;
    for _ in 0..3 {
        if resp.status() != 503 {
            break;
        }
        let wait: u64 = crate::support::header(&resp, "retry-after")
            .parse()
            .unwrap();
        assert!(wait <= 30, "Retry-After {wait}");
        tokio::time::sleep(Duration::from_secs(wait)).await;
        resp = gw.refresh(&client, refresh).await;
    }
    assert_eq!(resp.status(), 200);
    // The host's own answer still ends the client at once.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    host.set(path, Route::status(404));
    let refreshed: Value = resp.json().await.unwrap();
    let resp = gw.refresh_of(&client, &refreshed).await;
    assert_oauth_error(resp, 401, "invalid_client").await;
}

/// A host that hangs, with a stale copy cached: the first refetch times out and the copy is
/// marked, so the logins waiting on that URL are answered from it at once instead of each
/// trying the host in turn (8 logins took 2, 4 … 16 s before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_document_host_costs_one_timeout_not_one_each() {
    let path = "/hangs.json";
    let extra = [("CIMD_STALE_IF_ERROR", "600"), ("CIMD_FETCH_TIMEOUT", "2")];
    let (host, document, gw, client) = served_document(path, &extra).await;
    let (_, challenge) = pkce();
    let url = gw.authorize_url(&client, &challenge, &[]);
    assert_eq!(browser().get(&url).send().await.unwrap().status(), 307);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    host.set(path, document.delayed(Duration::from_secs(30)));
    let started = Instant::now();
    let statuses = futures_util::future::join_all((0..8).map(|_| {
        let url = url.clone();
        async move { browser().get(&url).send().await.unwrap().status().as_u16() }
    }))
    .await;
    let took = started.elapsed();
    assert!(statuses.iter().all(|s| *s == 307), "{statuses:?}");
    assert!(
        took < Duration::from_millis(3_500),
        "8 logins took {took:?}: one fetch timeout should answer them all"
    );
    assert_eq!(host.hits(path), 2, "the first fetch and one refetch");
}

/// A provider whose refresh tokens each work once, the gateway in front of it (`extra` settings
/// besides), a client, and its first login's token answer.
async fn strict_grant(
    extra: &[(&str, &str)],
) -> (web::Data<lying_provider::Lies>, Gateway, Value, Value) {
    let lies = lying_provider::start();
    let gw = lying_provider::gateway(&lies, extra).await;
    let client = gw.client("none").await;
    let tokens = strict_login(&gw, &client).await;
    (lies, gw, client, tokens)
}

/// A login through the provider: our token answer.
async fn strict_login(gw: &Gateway, client: &Value) -> Value {
    let (verifier, challenge) = pkce();
    let back = oidc_login(gw, &gw.authorize_url(client, &challenge, &[]))
        .await
        .unwrap_or_else(|page| panic!("the login ended on a {} page", page.status()));
    let code = query(&back, "code").unwrap();
    let resp = gw.redeem(client, &code, &verifier).await;
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_refreshes_ask_a_strict_provider_once() {
    let (lies, gw, client, tokens) = strict_grant(&[]).await;

    // 20 concurrent refreshes of one token: one upstream call, one answer for all.
    lies.refresh_delay_ms.store(500, Ordering::SeqCst);
    let refresh = tokens["refresh_token"].as_str().unwrap().to_string();
    let answers =
        futures_util::future::join_all((0..20).map(|_| gw.refresh(&client, &refresh))).await;
    let mut bodies = Vec::new();
    for resp in answers {
        assert_eq!(resp.status(), 200);
        bodies.push(resp.json::<Value>().await.unwrap());
    }
    assert!(bodies.iter().all(|b| b == &bodies[0]), "one answer for all");
    assert_eq!(lies.refresh_calls.load(Ordering::SeqCst), 1);

    // A retry sent 0.5 s into a refresh the provider takes 1.5 s for: the same answer.
    lies.refresh_delay_ms.store(1_500, Ordering::SeqCst);
    let refresh = bodies[0]["refresh_token"].as_str().unwrap().to_string();
    let first = gw.refresh(&client, &refresh);
    let retry = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        gw.refresh(&client, &refresh).await
    };
    let (first, retry) = tokio::join!(first, retry);
    assert_eq!(first.status(), 200);
    assert_eq!(retry.status(), 200);
    let first: Value = first.json().await.unwrap();
    assert_eq!(first, retry.json::<Value>().await.unwrap());
    assert_eq!(lies.refresh_calls.load(Ordering::SeqCst), 2);

    // And the grant goes on.
    lies.refresh_delay_ms.store(0, Ordering::SeqCst);
    let resp = gw.refresh_of(&client, &first).await;
    assert_eq!(resp.status(), 200);
}

/// Our store fails after the provider rotated (Redis out of memory refuses every write while
/// the provider answers): the client's retry uses the provider's answer that was kept (here in
/// the process, since the store took nothing), and never presents the rotated token again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_our_store_failed_keeps_the_providers_new_token() {
    let (lies, gw, client, tokens) = strict_grant(&[]).await;
    let refresh = tokens["refresh_token"].as_str().unwrap().to_string();
    lies.refresh_delay_ms.store(600, Ordering::SeqCst);
    let full = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        gw.redis.set_maxmemory("1").await;
    };
    let (resp, _) = tokio::join!(gw.refresh(&client, &refresh), full);
    gw.redis.set_maxmemory("0").await;
    assert_eq!(resp.status(), 503, "a store failure is retryable");
    assert_eq!(lies.refresh_calls.load(Ordering::SeqCst), 1);
    // The retry: the kept answer, no second call to the provider, and the grant goes on.
    lies.refresh_delay_ms.store(0, Ordering::SeqCst);
    let resp = gw.refresh(&client, &refresh).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(lies.refresh_calls.load(Ordering::SeqCst), 1);
    let next: Value = resp.json().await.unwrap();
    let resp = gw.refresh_of(&client, &next).await;
    assert_eq!(resp.status(), 200, "the provider's new token was not lost");
    assert_eq!(lies.refresh_calls.load(Ordering::SeqCst), 2);
}

/// Only the provider's refusal ends a grant: 429 (its Retry-After passed on) and 5xx are
/// retryable answers that leave the grant as it was; `invalid_grant` ends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_real_refusal_ends_a_grant() {
    let (lies, gw, client, tokens) = strict_grant(&[("OIDC_TIMEOUT", "1")]).await;
    let refresh = tokens["refresh_token"].as_str().unwrap().to_string();
    // Slower than OIDC_TIMEOUT.
    lies.refresh_delay_ms.store(2_000, Ordering::SeqCst);
    let resp = gw.refresh(&client, &refresh).await;
    assert_eq!(resp.status(), 503);
    assert!(
        crate::support::header(&resp, "retry-after")
            .parse::<u64>()
            .is_ok()
    );
    lies.refresh_delay_ms.store(0, Ordering::SeqCst);
    lies.lie("throttle");
    let resp = gw.refresh(&client, &refresh).await;
    assert_eq!(resp.status(), 503);
    assert_eq!(crate::support::header(&resp, "retry-after"), "7");
    lies.lie("down");
    let resp = gw.refresh(&client, &refresh).await;
    assert_eq!(resp.status(), 503);
    lies.lie("honest");
    let resp = gw.refresh(&client, &refresh).await;
    assert_eq!(resp.status(), 200, "the grant stood through 429 and 503");
    let next: Value = resp.json().await.unwrap();
    // The provider forgets the session: a real refusal, which ends the grant.
    lies.refresh_tokens.lock().unwrap().clear();
    let resp = gw.refresh_of(&client, &next).await;
    assert_oauth_error(resp, 400, "invalid_grant").await;
    let access = next["access_token"].as_str().unwrap();
    gw.verify
        .refuses_within(access, 1, "the ended grant's token is refused")
        .await;
}
