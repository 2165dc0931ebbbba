//! The trail of a real client: the MCP TypeScript SDK logs in through the shipped Traefik,
//! calls a tool, refreshes, and ends refused (its flow reuses a rotated refresh token, which
//! revokes the grant); `mcp-gateway trace` tells that story from the gateway's side.

use std::time::Duration;

use serde_json::Value;

use crate::support::e2e_flows::*;
use crate::support::stack::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_of_an_sdk_login_through_traefik_ends_in_its_refusal_and_why() {
    let Some(stack) = Stack::start_if_enabled(&[]).await else {
        return;
    };
    let flow = assert_sdk_login_and_tool_call_as(&stack, None).await;
    let client = s(&flow, "/client_id").to_string();
    // verify writes its events a moment after it decides (off the request path).
    let mut story: Vec<Value> = Vec::new();
    for _ in 0..50 {
        let out = stack.cli(&["trace", "--json", "--client", &client]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        story = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if story.iter().any(|e| e["type"] == "access_refused") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let kinds: Vec<&str> = story.iter().filter_map(|e| e["type"].as_str()).collect();
    let at = |kind: &str| {
        kinds
            .iter()
            .position(|k| *k == kind)
            .unwrap_or_else(|| panic!("{kind} in {kinds:?}\n{}", stack.logs()))
    };
    assert_eq!(at("client_registered"), 0, "{kinds:?}");
    for (earlier, later) in [
        ("client_registered", "authorization_started"),
        ("authorization_started", "login"),
        ("login", "token_issued"),
        ("token_issued", "token_used"),
        // verify's token_used is written a moment after its decision, by its writer: it may
        // land after the refresh that followed the call.
        ("token_issued", "token_refreshed"),
        ("token_refreshed", "refresh_reuse_detected"),
        ("refresh_reuse_detected", "access_refused"),
    ] {
        assert!(
            at(earlier) < at(later),
            "{earlier} before {later}: {kinds:?}"
        );
    }
    let refused = &story[at("access_refused")];
    assert_eq!(refused["reason"], "revoked", "{refused}");
    assert_eq!(refused["user"], "alice");
    let reuse = &story[at("refresh_reuse_detected")];
    assert_eq!(reuse["level"], "critical");
    assert_eq!(story[at("login")]["upstream"], "github");
    // For people: numbered steps, the refusal's reason, and where the client stands now.
    let out = stack.cli(&["trace", "--client", &client]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("refused: revoked"), "{table}");
    assert!(table.contains("now: registered"), "{table}");
}
