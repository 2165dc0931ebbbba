//! The forwardAuth hop over HTTP/2: Traefik, run from the shipped files with a CA from
//! `mcp-gateway tls generate`, asks verify over TLS with ALPN h2, every auth request a stream
//! on one connection; a wrong CA fails closed; a certificate renewed under load drops nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::future::join_all;

use crate::support::helpers::*;
use crate::support::procs::Proxy;
use crate::support::stack::*;

const TLS_CONNECTIONS: &str = "mcp_gateway_verify_connections_total{listener=\"tls\"}";
const NO_TOKEN: &str = "mcp_gateway_verify_decisions_total{outcome=\"denied\",reason=\"no_token\"}";

/// `rounds` MCP requests without a token from each of `workers` clients at once, through the
/// proxy: every one is a forwardAuth round trip that verify refuses. The statuses.
async fn unauthenticated_load(mcp_url: &str, workers: usize, rounds: usize) -> Vec<u16> {
    let all = join_all((0..workers).map(|_| async {
        let client = http();
        let mut statuses = Vec::new();
        for _ in 0..rounds {
            let resp = client
                .post(mcp_url)
                .header("Content-Type", "application/json")
                .header("Accept", "application/json, text/event-stream")
                .body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)
                .send()
                .await
                .expect("the proxy answers");
            statuses.push(resp.status().as_u16());
        }
        statuses
    }))
    .await;
    all.into_iter().flatten().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_traefik_asks_verify_over_one_http2_connection() {
    let Some(stack) = Stack::start_if_enabled(&[]).await else {
        return;
    };
    assert!(stack.verify_auth_url.starts_with("https://"));
    let verify = &stack.verify_urls[0];
    // Traefik's first connection, before the load (concurrent first requests may each dial).
    assert_eq!(unauthenticated_load(&stack.mcp_url, 1, 1).await, vec![401]);
    let (opened_before, asked_before) = (
        metric_at(verify, TLS_CONNECTIONS).await,
        metric_at(verify, NO_TOKEN).await,
    );
    let statuses = unauthenticated_load(&stack.mcp_url, 16, 40).await;
    assert!(statuses.iter().all(|s| *s == 401), "all refused by verify");
    let asked = metric_at(verify, NO_TOKEN).await - asked_before;
    let opened = metric_at(verify, TLS_CONNECTIONS).await - opened_before;
    assert!(asked >= 640.0, "every request asked verify: {asked}");
    assert!(
        opened / asked < 0.01,
        "{opened} new TLS connections for {asked} auth requests"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_a_proxy_that_does_not_trust_verify_fails_closed_with_503() {
    let Some(mut stack) = Stack::start_if_enabled(&[]).await else {
        return;
    };
    let echo = stack.start_header_echo().await;
    // Another CA: Traefik refuses verify's certificate.
    let other = tempfile::tempdir().unwrap();
    let stranger =
        mcp_oauth_gateway::tls::generate(other.path(), &["127.0.0.1".to_string()]).unwrap();
    stack.verify_tls.ca_cert = stranger.ca_cert.clone();
    let port = stack.add_proxy(Proxy::Traefik, &echo).await;
    let resp = http()
        .get(format!("http://localhost:{port}/mcp"))
        .bearer_auth("anything")
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        503,
        "fails closed with the errors middleware's 503"
    );
    assert!(resp.headers().contains_key("retry-after"));
    let body = resp.text().await.unwrap();
    assert!(body.contains("temporarily_unavailable"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_renewing_verifys_certificate_under_load_drops_nothing() {
    let Some(stack) = Stack::start_if_enabled(&[]).await else {
        return;
    };
    let verify = stack.verify_urls[0].clone();
    let reloaded = "mcp_gateway_verify_tls_reloads_total{outcome=\"reloaded\"}";
    assert_eq!(metric_at(&verify, reloaded).await, 0.0);
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (stop, url) = (stop.clone(), stack.mcp_url.clone());
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                statuses.extend(unauthenticated_load(&url, 8, 5).await);
            }
            statuses
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    // What an operator's renewal does: rerun `tls generate` into the same folder.
    let dir = stack.verify_tls.cert.cert.parent().unwrap().to_path_buf();
    let renewed =
        mcp_oauth_gateway::tls::generate(&dir, &["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap();
    assert!(!renewed.new_ca, "the CA is kept");
    wait_for(Duration::from_secs(10), || async {
        metric_at(&verify, reloaded).await >= 1.0
    })
    .await
    .expect("verify reloads the renewed certificate");
    // A new handshake gets the new certificate, trusted through the same CA.
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&renewed.ca_cert).unwrap()).unwrap();
    let direct = reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()
        .unwrap()
        .get(format!("{}/health", stack.verify_auth_url))
        .send()
        .await
        .unwrap();
    assert_eq!(direct.version(), reqwest::Version::HTTP_2);
    assert_eq!(direct.status(), 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    let statuses = load.await.unwrap();
    assert!(statuses.len() > 100, "load ran: {}", statuses.len());
    let others: Vec<_> = statuses.iter().filter(|s| **s != 401).collect();
    assert!(
        others.is_empty(),
        "answers other than verify's 401: {others:?}"
    );
}

/// SIGTERM to verify while Traefik sends it load over HTTP/2, with the shipped forwardAuth
/// (the body forwarded): no MCP request fails while verify still takes connections (every
/// answer until then is verify's own 401; only once it has stopped, a second before it exits,
/// does Traefik, with no other replica, find none and answer 503), and verify exits right
/// after its drain (the connection was told to go away and closed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_sigterm_to_verify_under_load_through_traefik_fails_no_request() {
    if !crate::support::procs::e2e_enabled(&[Proxy::Traefik.bin()]) {
        return;
    }
    let mut stack = Stack::builder(Proxy::Traefik)
        .verify_env("SHUTDOWN_DRAIN", "3")
        .start()
        .await;
    assert_eq!(unauthenticated_load(&stack.mcp_url, 1, 1).await, vec![401]);
    let started = std::time::Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..16)
        .map(|_| {
            let (stop, url) = (stop.clone(), stack.mcp_url.clone());
            tokio::spawn(async move {
                let client = http();
                let mut answers = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let status = client
                        .post(&url)
                        .header("Content-Type", "application/json")
                        .body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)
                        .send()
                        .await
                        .map(|r| r.status().as_u16())
                        .unwrap_or(0);
                    answers.push((started.elapsed(), status));
                }
                answers
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let signalled = started.elapsed();
    let pid = stack.verify_proc().pid();
    crate::support::procs::sigterm(pid);
    let exited = wait_for(Duration::from_secs(10), || {
        let exited = stack.verify_proc().exited();
        async move { exited }
    })
    .await
    .expect("verify exits after its drain");
    assert!(
        exited < Duration::from_millis(5000),
        "verify exited {exited:?} after SIGTERM (drain 3 s)"
    );
    stop.store(true, Ordering::SeqCst);
    // The drain is 3 s; the listener stops taking connections at 2 s.
    let listening_until = signalled + Duration::from_millis(1900);
    let mut during = 0;
    let mut failed = Vec::new();
    for worker in workers {
        for (at, status) in worker.await.unwrap() {
            if at > signalled && at < listening_until {
                during += 1;
                if status != 401 {
                    failed.push((at, status));
                }
            }
        }
    }
    assert!(during > 100, "load ran through the drain: {during}");
    assert!(
        failed.is_empty(),
        "answers other than verify's 401 while it was draining: {failed:?}"
    );
}
