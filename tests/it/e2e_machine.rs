//! Callers without a browser through the shipped Traefik, with the real clients: the MCP
//! TypeScript SDK 2.4.0's own providers (`ClientCredentialsProvider`, `PrivateKeyJwtProvider`,
//! `CrossAppAccessProvider` with an ID-JAG from a stand-in enterprise IdP's token exchange,
//! `e2e/machine-clients.mjs`) and `mcp-gateway login --client-credentials`. A tool rule admits
//! the machine client by `client:{id}` and keeps the tool from the enterprise user.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::document_host::ClientKey;
use crate::support::e2e_flows::*;
use crate::support::enterprise_idp::{EnterpriseIdp, IDP_CLIENT_ID, IDP_CLIENT_SECRET};
use crate::support::procs::Proxy;
use crate::support::stack::*;

/// `mcp-gateway clients create … --json` in the stack: the client as printed.
fn create(stack: &Stack, args: &[&str]) -> Value {
    let mut all = vec!["--json", "clients", "create"];
    all.extend_from_slice(args);
    let out = stack.cli(&all);
    assert!(
        out.status.success(),
        "clients create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_sdk_machine_clients_and_an_enterprise_user_call_tools_through_traefik() {
    if !crate::support::procs::e2e_enabled(&[Proxy::Traefik.bin()]) {
        return;
    }
    let idp = EnterpriseIdp::start().await;
    let ca = idp.host.ca_file.to_string_lossy().to_string();
    let mut builder = Stack::builder(Proxy::Traefik)
        // The tool `get-env` is the machine client's alone; `echo` is anyone's.
        .verify_env("TOOL_POLICY", "tools/call get-env=mcp @client:e2e-bot")
        .auth_env("ALLOWED_EMAIL_DOMAINS", "corp.example")
        .verify_env("ALLOWED_EMAIL_DOMAINS", "corp.example")
        // Server nonces for DPoP (no client here sends a proof but the DPoP run).
        .auth_env("DPOP_NONCE", "true")
        .verify_env("DPOP_NONCE", "true");
    for (k, v) in idp.trust("id-jag") {
        builder = builder.auth_env(k, &v);
    }
    let stack = builder.start().await;
    let bot = create(
        &stack,
        &[
            "--name",
            "Nightly report",
            "--client-credentials",
            "--client-id",
            "e2e-bot",
        ],
    );
    let key = ClientKey::generate("keyed-1");
    let jwks = stack_file(
        &stack,
        "keyed.jwks",
        &json!({"keys": [key.jwk()]}).to_string(),
    );
    let keyed = create(
        &stack,
        &["--name", "Keyed", "--client-credentials", "--jwks", &jwks],
    );
    let xaa = create(&stack, &["--name", "Claude for Work", "--id-jag"]);
    idp.map_client(xaa["client_id"].as_str().unwrap());
    let (id_token, _) = idp.sign_in("gus", &["eng"], &["mcp"]);

    let runs = [
        (
            "client_credentials",
            json!({"client_id": bot["client_id"], "client_secret": bot["client_secret"],
                                      "tool": "get-env", "arguments": {}}),
        ),
        (
            "private_key_jwt",
            json!({"client_id": keyed["client_id"], "private_key_pem": key.pem()}),
        ),
        (
            "id_jag",
            json!({"client_id": xaa["client_id"], "client_secret": xaa["client_secret"],
                          "idp_token_endpoint": format!("{}/token", idp.issuer), "id_token": id_token,
                          "idp_client_id": IDP_CLIENT_ID, "idp_client_secret": IDP_CLIENT_SECRET}),
        ),
    ];
    for (mode, config) in runs {
        let mut config = config;
        config["mode"] = json!(mode);
        let (flow, stderr) = run_machine(&stack, &ca, &config).await;
        let mut checks = Checks::of(&stack, &flow, &stderr, &format!("{mode} did not complete"));
        checks.check(b(&flow, "/called"), &format!("{mode}: the tool answered"));
        checks.check(n(&flow, "/tools") > 0, &format!("{mode}: tools listed"));
        let grants: Vec<&str> = flow["http"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|h| h["grant_type"].as_str())
            .collect();
        let expected = match mode {
            // The exchange goes to the IdP by its own fetch: counted there.
            "id_jag" => vec!["urn:ietf:params:oauth:grant-type:jwt-bearer"],
            _ => vec!["client_credentials"],
        };
        checks.check(
            grants == expected,
            &format!("{mode}: token requests {grants:?}"),
        );
        if mode == "id_jag" {
            checks.check(
                s(&flow, "/exchange/audience").trim_end_matches('/') == stack.issuer,
                "the ID-JAG was asked for our issuer",
            );
            checks.check(idp.exchanges() == 1, "one token exchange at the IdP");
        }
        checks.finish(mode);
    }
    // The enterprise user may not call the machine client's tool.
    let config = json!({"mode": "id_jag", "client_id": xaa["client_id"], "client_secret": xaa["client_secret"],
        "idp_token_endpoint": format!("{}/token", idp.issuer), "id_token": id_token,
        "idp_client_id": IDP_CLIENT_ID, "idp_client_secret": IDP_CLIENT_SECRET, "tool": "get-env", "arguments": {}});
    let (flow, _) = run_machine(&stack, &ca, &config).await;
    assert!(
        !b(&flow, "/called"),
        "the tool rule kept get-env from the user: {flow}"
    );

    // DPoP (RFC 9449): the SDK's DpopSession binds the machine client's token to its key;
    // every MCP request through Traefik carries a fresh proof, and the token stolen alone or
    // with a proof already used is refused.
    let config = json!({"mode": "client_credentials", "client_id": bot["client_id"],
        "client_secret": bot["client_secret"], "dpop": true, "tool": "get-env", "arguments": {}});
    let (flow, stderr) = run_machine(&stack, &ca, &config).await;
    let mut checks = Checks::of(&stack, &flow, &stderr, "dpop did not complete");
    checks.check(b(&flow, "/called"), "dpop: the tool answered");
    checks.check(
        s(&flow, "/token_type") == "DPoP",
        "dpop: a DPoP-bound token",
    );
    let http = flow["http"].as_array().unwrap();
    let to_mcp: Vec<&Value> = http
        .iter()
        .filter(|h| h["url"].as_str() == Some(stack.mcp_url.as_str()) && h["scheme"].is_string())
        .collect();
    checks.check(
        !to_mcp.is_empty()
            && to_mcp
                .iter()
                .all(|h| h["scheme"] == "DPoP" && h["dpop"] == true),
        "dpop: every MCP request is DPoP with a proof",
    );
    checks.check(
        http.iter().any(|h| {
            h["grant_type"] == "client_credentials" && h["dpop"] == true && h["status"] == 200
        }),
        "dpop: the token request carried a proof",
    );
    // DPOP_NONCE: both servers asked for their nonce once, and the SDK retried with it.
    checks.check(
        http.iter()
            .any(|h| h["grant_type"] == "client_credentials" && h["status"] == 400),
        "dpop: the authorization server's use_dpop_nonce",
    );
    checks.check(
        to_mcp.iter().any(|h| {
            h["status"] == 401
                && h["www_authenticate"]
                    .as_str()
                    .unwrap_or("")
                    .contains("use_dpop_nonce")
        }),
        "dpop: verify's use_dpop_nonce through Traefik",
    );
    checks.check(
        n(&flow, "/stolen_bearer/status") == 401
            && s(&flow, "/stolen_bearer/www_authenticate").starts_with("DPoP "),
        "dpop: the token alone, as a bearer token, is refused",
    );
    checks.check(
        n(&flow, "/replayed/status") == 401
            && s(&flow, "/replayed/www_authenticate").contains("used before"),
        "dpop: the token with a used proof is refused",
    );
    checks.finish("dpop");

    // The operator CLI logs in as the machine client too.
    let out = stack.cli(&[
        "login",
        &stack.mcp_url,
        "--client-credentials",
        "--client-id",
        "e2e-bot",
        "--client-secret",
        bot["client_secret"].as_str().unwrap(),
        "--call-tool",
        "get-env",
    ]);
    assert!(
        out.status.success(),
        "login --client-credentials: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        stack.logs()
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("e2e-bot"));
}

/// A file in the stack's folder (where the CLI runs): its path.
fn stack_file(stack: &Stack, name: &str, contents: &str) -> String {
    let path = stack.path(name);
    std::fs::write(&path, contents).unwrap();
    path.to_string_lossy().to_string()
}

/// Runs e2e/machine-clients.mjs with one configuration; its JSON report and stderr.
async fn run_machine(stack: &Stack, ca: &str, config: &Value) -> (Value, String) {
    stack
        .run_script_env(
            "machine-clients.mjs",
            &[&stack.mcp_url],
            &[
                ("MACHINE", &config.to_string()),
                ("NODE_EXTRA_CA_CERTS", ca),
            ],
            Duration::from_secs(60),
        )
        .await
}
