//! End to end with real parts only: the built `mcp-gateway-auth` and `mcp-gateway-verify`
//! binaries on a private `redis-server`, the MCP "everything" server, the fake GitHub
//! (`e2e/fake-github.mjs`), and Traefik running `traefik/traefik.yml` + `traefik/dynamic.yml`
//! as shipped. Clients: the official MCP TypeScript SDK (`e2e/mcp-client-flow.mjs`) and the MCP
//! conformance suite's authorization-server scenarios (`e2e/conformance-as.mjs`).
//!
//! The stack (and what it needs, and how it names hosts without DNS) is `e2e_stack.rs`; the
//! same checks run through Caddy and nginx in `e2e_proxies.rs`, and more clients in
//! `e2e_clients.rs`.

use std::time::Duration;

use serde_json::Value;

use crate::support::e2e_flows::*;

use crate::support::procs::*;

use crate::support::stack::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_mcp_sdk_client_logs_in_through_traefik_and_calls_a_tool() {
    let Some(stack) = Stack::start_if_enabled(&[]).await else {
        return;
    };
    // Without a token, Traefik's forwardAuth answers with verify's RFC 9728 challenge.
    assert_unauthenticated_challenge(&stack).await;
    assert_sdk_login_and_tool_call(&stack).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_mcp_conformance_suite_authorization_server_scenarios_pass() {
    let Some(stack) = Stack::start_if_enabled(&[]).await else {
        return;
    };
    // The issuer exactly as the metadata advertises it (the suite compares them verbatim).
    let (report, stderr) = stack
        .run_script("conformance-as.mjs", &[&stack.issuer, &stack.mcp_url], 150)
        .await;
    let failed = "the conformance run did not complete";
    let mut checks = Checks::of(&stack, &report, &stderr, failed);
    let scenarios = report
        .pointer("/scenarios")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for name in [
        "authorization-server-metadata-endpoint",
        "authorization-code-grant",
    ] {
        match scenarios.get(name) {
            None => checks.check(false, &format!("{name}: did not run")),
            Some(sc) => {
                let passed = n(sc, "/failed") == 0 && n(sc, "/passed") >= 1;
                checks.check(passed, &format!("{name}: {sc}"));
                // Every check passes outright: none warns (the metadata once drew a warning
                // for not supporting Client ID Metadata Documents).
                checks.check(n(sc, "/warnings") == 0, &format!("{name} warns: {sc}"));
            }
        }
    }
    let exit_code = &report["exit_code"];
    checks.check(
        n(&report, "/exit_code") == 0,
        &format!("the suite exited with {exit_code}"),
    );
    checks.finish("conformance");
}

/// `mcp-gateway login` as the client under test of the MCP conformance suite's client auth
/// scenarios (`e2e/conformance-client.mjs`, through `e2e/conformance-login.sh`), every
/// scenario at every MCP revision it applies to, in the 0.2.0-alpha.12 suite (2026-07-28 era)
/// and in 0.1.16: none fails or warns. Of the suite's extension scenarios, 0.2.0-alpha.12's
/// machine and enterprise ones run too (`login --client-credentials`, an ID-JAG from the
/// suite's IdP, a workload's JWT): client credentials with a secret and with
/// `private_key_jwt`, enterprise-managed authorization, workload identity federation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_mcp_gateway_login_passes_the_conformance_client_auth_scenarios() {
    use crate::support::helpers::bin;
    if !e2e_enabled(&[]) {
        return;
    }
    let mut failures = Vec::new();
    let extensions = "auth/client-credentials-basic,auth/client-credentials-jwt,\
                      auth/enterprise-managed-authorization,auth/wif-jwt-bearer,\
                      auth/dpop,auth/dpop-nonce";
    for (suite, at_least, extensions) in [("0.2.0-alpha.12", 48, extensions), ("0.1.16", 22, "")] {
        let cli = bin("mcp-gateway");
        let (report, stderr) = run_e2e_script_with(
            "conformance-client.mjs",
            &[cli.to_str().unwrap()],
            &[
                ("CONFORMANCE_SUITE", suite),
                ("CONFORMANCE_EXTENSIONS", extensions),
            ],
            Duration::from_secs(600),
        )
        .await;
        assert_eq!(report["ok"], true, "{suite}: {report:#}\n{stderr}");
        let scenarios = report["scenarios"].as_object().cloned().unwrap_or_default();
        assert!(
            scenarios.len() >= at_least,
            "{suite}: {} scenario runs: {report:#}",
            scenarios.len()
        );
        for wanted in extensions.split(',').filter(|e| !e.is_empty()) {
            if !scenarios.contains_key(&format!("{wanted}@extension")) {
                failures.push(format!("{suite}: {wanted} did not run"));
            }
        }
        for (name, sc) in &scenarios {
            if n(sc, "/failed") != 0 || n(sc, "/warnings") != 0 || n(sc, "/passed") < 1 {
                failures.push(format!("{suite} {name}: {sc}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
