//! `mcp-gateway audit`, `usage` and `trace` as an operator runs them, against a trail real
//! logins wrote; `tokens list`'s new columns; progress only on a terminal.

use std::process::Stdio;
use std::time::Duration;

use mcp_oauth_gateway::audit::{Actor, Event, Events, Kind};
use serde_json::Value;

use crate::cli::{cli, cli_command, ok};
use crate::support::gateway::*;
use crate::support::helpers::stdout_lines;

/// JSON Lines output, one value a line.
fn lines(out: &str) -> Vec<Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_lists_newest_first_and_filters_by_user_client_type_and_time() {
    let gw = Gateway::start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let first = gw.client("none").await;
    gw.tokens(&first).await;
    gw.github.sign_in_as("bob");
    let second = gw.client("none").await;
    gw.tokens(&second).await;

    let all = lines(&ok(&cli(&gw, dir.path(), &["audit", "--json"])));
    let ids: Vec<&str> = all.iter().map(|e| e["id"].as_str().unwrap()).collect();
    let mut sorted = ids.clone();
    sorted.sort_by_key(|id| {
        let (ms, seq) = id.split_once('-').unwrap();
        (ms.parse::<u64>().unwrap(), seq.parse::<u64>().unwrap())
    });
    sorted.reverse();
    assert_eq!(ids, sorted, "newest first");
    assert!(
        all.iter()
            .all(|e| e["time"].as_str().unwrap().ends_with('Z'))
    );

    let bob = lines(&ok(&cli(
        &gw,
        dir.path(),
        &["audit", "--json", "--user", "bob"],
    )));
    assert!(!bob.is_empty() && bob.iter().all(|e| e["user"] == "bob"));
    assert_eq!(types(&bob)[0], "token_issued");
    let first_id = first["client_id"].as_str().unwrap();
    let of_first = lines(&ok(&cli(
        &gw,
        dir.path(),
        &["audit", "--json", "--client", first_id],
    )));
    assert_eq!(
        types(&of_first),
        [
            "token_issued",
            "consent_granted",
            "login",
            "authorization_started",
            "client_registered"
        ]
    );
    let logins = lines(&ok(&cli(
        &gw,
        dir.path(),
        &["audit", "--json", "--type", "login,login_refused"],
    )));
    assert_eq!(types(&logins), ["login", "login"]);
    let alice_logins = lines(&ok(&cli(
        &gw,
        dir.path(),
        &[
            "audit", "--json", "--type", "login", "--user", "alice", "--client", first_id,
        ],
    )));
    assert_eq!(alice_logins.len(), 1);
    let last = lines(&ok(&cli(
        &gw,
        dir.path(),
        &["audit", "--json", "--limit", "2"],
    )));
    assert_eq!(last.len(), 2);
    let future = lines(&ok(&cli(
        &gw,
        dir.path(),
        &["audit", "--json", "--since", "2099-01-01"],
    )));
    assert!(future.is_empty());
    let past = lines(&ok(&cli(
        &gw,
        dir.path(),
        &["audit", "--json", "--until", "1h"],
    )));
    assert!(past.is_empty(), "nothing is older than an hour");
    // The table, for people.
    let table = ok(&cli(&gw, dir.path(), &["audit", "--user", "bob"]));
    assert!(table.starts_with("TIME"), "{table}");
    assert!(
        table.contains("token_issued") && table.contains("client:"),
        "{table}"
    );
    // A type that does not exist is an error naming the real ones.
    let bad = cli(&gw, dir.path(), &["audit", "--type", "logn"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("refresh_reuse_detected"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_pages_through_a_long_trail_and_exports_it() {
    let gw = Gateway::start(&[]).await;
    let store = gw.redis.store();
    for i in 0..1_234 {
        let event = Event::new(Kind::Purge, Actor::Operator("t".into())).detail("i", i);
        store.append_events(&Events::one(event)).await.unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let out = lines(&ok(&cli(
        &gw,
        dir.path(),
        &["audit", "--json", "--type", "purge"],
    )));
    assert_eq!(out.len(), 1_234);
    let order: Vec<i64> = out
        .iter()
        .map(|e| e["detail"]["i"].as_i64().unwrap())
        .collect();
    assert_eq!(
        order,
        (0..1_234).rev().collect::<Vec<_>>(),
        "every page, in order"
    );
    let file = dir.path().join("audit.jsonl");
    let said = ok(&cli(
        &gw,
        dir.path(),
        &["audit", "--out", file.to_str().unwrap()],
    ));
    assert!(said.contains("exported 1234 events"), "{said}");
    let exported = std::fs::read_to_string(&file).unwrap();
    assert_eq!(exported.lines().count(), 1_234);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_follow_prints_new_events_as_they_come() {
    let gw = Gateway::start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let mut child = cli_command(
        &gw,
        &["audit", "--json", "--follow", "--type", "client_registered"],
    )
    .current_dir(dir.path())
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let mut rx = stdout_lines(&mut child);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let client = gw.client("none").await;
    let line = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("followed within a poll")
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let event: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["type"], "client_registered");
    assert_eq!(event["client_id"], client["client_id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_counts_calls_per_user_client_and_tool_with_refusals_by_reason() {
    let gw = Gateway::start(&[("AUDIT_USAGE_FLUSH", "1")]).await;
    let client = gw.client("none").await;
    let token = gw.tokens(&client).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let call = |tool: &'static str| {
        gw.verify
            .request(Some(&token), "mcp.example.com")
            .header("content-type", "application/json")
            .body(format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{tool}"}}}}"#
            ))
    };
    for _ in 0..3 {
        assert_eq!(call("echo").send().await.unwrap().status(), 200);
    }
    assert_eq!(call("add").send().await.unwrap().status(), 200);
    for _ in 0..2 {
        let refused = gw
            .verify
            .request(Some("not-a-token"), "mcp.example.com")
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 401);
    }
    let dir = tempfile::tempdir().unwrap();
    let mut by_tool = Value::Null;
    for _ in 0..40 {
        by_tool = serde_json::from_str(&ok(&cli(
            &gw,
            dir.path(),
            &["usage", "--json", "--by", "tool"],
        )))
        .unwrap();
        if by_tool.as_array().is_some_and(|a| a.len() >= 3) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let row = |key: &str| {
        by_tool
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["tool"] == key)
            .cloned()
            .unwrap_or_else(|| panic!("{key} in {by_tool}"))
    };
    assert_eq!(row("echo")["calls"], 3);
    assert_eq!(row("echo")["allowed"], 3);
    assert_eq!(row("add")["calls"], 1);
    assert_eq!(row("-")["refused"], 2);
    assert_eq!(row("-")["refusals"]["malformed"], 2);
    let by_user: Value = serde_json::from_str(&ok(&cli(
        &gw,
        dir.path(),
        &["usage", "--json", "--by", "user"],
    )))
    .unwrap();
    let alice = by_user
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["user"] == "alice")
        .unwrap();
    assert_eq!(alice["allowed"], 4);
    let by_client = ok(&cli(&gw, dir.path(), &["usage", "--by", "client"]));
    assert!(
        by_client.contains(client["client_id"].as_str().unwrap()),
        "{by_client}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_tells_a_clients_story_in_order_ending_in_its_refusal() {
    let gw = Gateway::start(&[]).await;
    let client = gw.client("none").await;
    let id = client["client_id"].as_str().unwrap();
    let tokens = gw.tokens(&client).await;
    let token = tokens["access_token"].as_str().unwrap();
    assert_eq!(gw.verify.status(token).await, 200);
    // verify writes its events a moment later (off the request path): the story's order is
    // the order things were written.
    crate::support::audit::until_recorded(&gw.redis, "token_used", Duration::from_secs(5)).await;
    let dir = tempfile::tempdir().unwrap();
    ok(&cli(
        &gw,
        dir.path(),
        &["tokens", "revoke", "--user", "alice"],
    ));
    gw.verify
        .until_status(token, 401, Duration::from_secs(2))
        .await
        .unwrap();
    let mut story = Vec::new();
    for _ in 0..40 {
        story = lines(&ok(&cli(
            &gw,
            dir.path(),
            &["trace", "--json", "--client", id],
        )));
        if types(&story).contains(&"access_refused") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let kinds = types(&story);
    let position = |t: &str| {
        kinds
            .iter()
            .position(|k| *k == t)
            .unwrap_or_else(|| panic!("{t} in {kinds:?}"))
    };
    assert!(position("client_registered") < position("authorization_started"));
    assert!(position("authorization_started") < position("login"));
    assert!(position("login") < position("token_issued"));
    assert!(position("token_issued") < position("token_used"));
    assert!(position("token_used") < position("token_revoked"));
    assert!(position("token_revoked") < position("access_refused"));
    let refused = &story[position("access_refused")];
    assert_eq!(refused["reason"], "revoked");
    assert_eq!(story[0]["step"], 1);
    // For people: numbered steps, then where the client stands.
    let table = ok(&cli(
        &gw,
        dir.path(),
        &["trace", "--client", id, "--user", "alice"],
    ));
    assert!(table.contains("refused: revoked"), "{table}");
    assert!(
        table
            .trim_end()
            .ends_with("registered; 0 live access tokens"),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_list_shows_each_grants_last_refresh_and_address() {
    let (gw, client, tokens) = Gateway::with_login(&[]).await;
    let refreshed = gw.refreshed(&client, &tokens).await;
    let jti = crate::support::jwt_claims(refreshed["access_token"].as_str().unwrap())["jti"]
        .as_str()
        .unwrap()
        .to_string();
    let dir = tempfile::tempdir().unwrap();
    let listed: Value = serde_json::from_str(&ok(&cli(
        &gw,
        dir.path(),
        &["tokens", "list", "--json", "--user", "alice"],
    )))
    .unwrap();
    let row = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["jti"] == jti.as_str())
        .unwrap();
    assert_eq!(row["grant"], "refresh_token");
    assert_eq!(row["client_ip"], "127.0.0.1");
    let table = ok(&cli(
        &gw,
        dir.path(),
        &["tokens", "list", "--user", "alice"],
    ));
    let header = table.lines().next().unwrap();
    assert!(
        header.contains("LAST REFRESH") && header.contains("ADDRESS"),
        "{header}"
    );
    let line = table.lines().find(|l| l.starts_with(&jti)).unwrap();
    assert!(
        line.ends_with("127.0.0.1") && line.contains("ago"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_commands_show_progress_only_on_a_terminal() {
    let gw = Gateway::start(&[]).await;
    let client = gw.client("none").await;
    gw.tokens(&client).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("b.jsonl");
    let backup = ["backup", "--out", file.to_str().unwrap()];
    // Piped: nothing but the summary line.
    let piped = cli(&gw, dir.path(), &backup);
    ok(&piped);
    let stderr = String::from_utf8_lossy(&piped.stderr);
    assert!(!stderr.contains("backing up keys"), "{stderr}");
    // On a terminal (a pseudo-terminal by `script`): the bar.
    let cmd = cli_command(&gw, &backup);
    let program = cmd.get_program().to_string_lossy().to_string();
    let args: Vec<String> = cmd
        .get_args()
        .map(|a| format!("'{}'", a.to_string_lossy()))
        .collect();
    let envs: Vec<(String, String)> = cmd
        .get_envs()
        .filter_map(|(k, v)| {
            Some((
                k.to_string_lossy().to_string(),
                v?.to_string_lossy().to_string(),
            ))
        })
        .collect();
    let out = std::process::Command::new("script")
        .args([
            "-qfec",
            &format!("{program} {}", args.join(" ")),
            "/dev/null",
        ])
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TERM", "xterm")
        .envs(envs)
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{shown}");
    assert!(shown.contains("backing up keys"), "{shown}");
    // With --json, never.
    let mut json_args = vec!["--json"];
    json_args.extend(backup);
    let quiet = cli(&gw, dir.path(), &json_args);
    assert!(!String::from_utf8_lossy(&quiet.stderr).contains("backing up keys"));
}
