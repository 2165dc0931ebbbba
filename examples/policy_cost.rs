//! What the per-tool policy costs per request, without the network: reading the calls of
//! bench/verify.sh's ~2 KB `tools/call` body, and the 50-rule policy's requirement for
//! it, each timed over a million rounds (`ROUNDS`). `cargo run --release --example policy_cost`
//! (bench/RESULTS.md records its figures next to the in-situ runs).

#![allow(clippy::unwrap_used)]

use mcp_oauth_gateway::policy::{Call, ToolPolicy};
use mcp_oauth_gateway::verify::mcp::calls;
use std::time::Instant;
fn main() {
    let mut rules = Vec::new();
    for i in 1..=20 {
        rules.push(format!("tools/call admin_tool_{i}=mcp:admin"));
    }
    for i in 1..=15 {
        rules.push(format!("tools/call danger_{i}_*=mcp:write"));
    }
    for i in 1..=10 {
        rules.push(format!("resources/read file:///secret/{i}/*=mcp:admin"));
    }
    for i in 1..=5 {
        rules.push(format!("prompts/get internal_{i}=mcp @alice,bob"));
    }
    let policy = ToolPolicy::parse(&rules.join(";"), "github").unwrap();
    let body = serde_json::json!({"jsonrpc": "2.0", "id": 42, "method": "tools/call", "params": {"name": "search_documents", "arguments": {"query": "quarterly report", "filters": {"tags": ["finance", "q3"], "limit": 20}, "context": "x".repeat(1800)}, "_meta": {"progressToken": 7}}}).to_string();
    let headers = actix_web::http::header::HeaderMap::new();
    // ROUNDS=20000 for a run under `valgrind --tool=callgrind` (instructions, not noise).
    let n: u32 = std::env::var("ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let t = Instant::now();
    let mut k = 0;
    for _ in 0..n {
        let c = calls(&headers, body.as_bytes()).unwrap().unwrap();
        k += c.len();
    }
    let parse = t.elapsed().as_nanos() as f64 / n as f64;
    let c = calls(&headers, body.as_bytes()).unwrap().unwrap();
    let t = Instant::now();
    for _ in 0..n {
        let r = policy.requirement(Some(Call {
            method: &c[0].method,
            name: c[0].name.as_deref(),
        }));
        k += r.scopes.len();
    }
    let req = t.elapsed().as_nanos() as f64 / n as f64;
    println!("read the calls: {parse:.0} ns, the requirement: {req:.0} ns a request ({k} calls)");
}
