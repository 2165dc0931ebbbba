//! Step 1 and the end of step 2: the MCP probe (a POST `initialize`, or a stateless
//! `tools/list` in the 2026-07-28 era), the challenge its 401 carries, and the resource the
//! protected-resource metadata names.

use serde_json::{Value, json};

use super::discovery::{resource_matches, resource_metadata, server_metadata};
use super::{PROTOCOL_2026, dpop, fail};
use crate::cli::CliResult;

/// A `WWW-Authenticate: Bearer …` challenge's parameters.
pub(super) fn challenge_params(header: &str) -> Vec<(String, String)> {
    let rest = header
        .trim()
        .strip_prefix("Bearer")
        .or_else(|| header.trim().strip_prefix("bearer"))
        .unwrap_or(header);
    let mut out = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let name: String = chars
            .by_ref()
            .take_while(|c| *c != '=')
            .collect::<String>()
            .trim()
            .to_ascii_lowercase();
        if name.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            value.push(n)
                        }
                    }
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.peek() {
                if *c == ',' {
                    break;
                }
                value.push(*c);
                chars.next();
            }
            value = value.trim().to_string();
        }
        out.push((name, value));
    }
    out
}

pub(super) fn param(params: &[(String, String)], name: &str) -> Option<String> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
}

/// The MCP session the probe keeps (2025 era: the session id from `initialize`).
pub(super) struct Probe {
    pub(super) server: url::Url,
    protocol: String,
    pub(super) session: Option<String>,
    /// The tool a `tools/call` being sent names (its `Mcp-Name`).
    tool_name: Option<String>,
    /// DPoP: the key, once the token in use is bound to it (`token_type: DPoP`).
    pub(super) dpop: Option<std::sync::Arc<dpop::DpopSigner>>,
}

/// A tool to call once logged in, as a check that the token works for it (and the point
/// where a server asks for more scope).
#[derive(Debug, Clone)]
pub struct ToolCall {
    pub name: String,
    pub arguments: Value,
}

/// What a login is for: the MCP server, the era of MCP to speak to it, the scope asked for
/// (else the challenge's), and a tool to call once the token is in hand.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub server_url: &'a str,
    pub protocol: &'a str,
    pub scope: Option<&'a str>,
    pub tool: Option<&'a ToolCall>,
}

/// The answer to a probe request: status, challenge and (when 200) the body.
pub(super) struct ProbeAnswer {
    pub(super) status: u16,
    pub(super) challenge: Option<String>,
}

impl ProbeAnswer {
    /// Ok when the server took the new token; the refusal, with its challenge, otherwise.
    pub(super) fn accepted(self, server_url: &str) -> CliResult<()> {
        if (200..300).contains(&self.status) {
            return Ok(());
        }
        let challenge = self.challenge.map(|c| format!(" ({c})"));
        Err(fail(format!(
            "{server_url} refused the new token: {}{}",
            self.status,
            challenge.unwrap_or_default()
        )))
    }
}

impl Probe {
    fn message(&self, id: u64, method: &str, params: Value) -> Value {
        let mut params = params;
        if self.protocol == PROTOCOL_2026
            && let Some(map) = params.as_object_mut()
        {
            map.insert(
                "_meta".into(),
                json!({"io.modelcontextprotocol/protocolVersion": PROTOCOL_2026,
                       "io.modelcontextprotocol/clientInfo": {"name": "mcp-gateway", "version": env!("CARGO_PKG_VERSION")},
                       "io.modelcontextprotocol/clientCapabilities": {}}),
            );
        }
        json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
    }

    /// The first request of the era: `initialize`, or a stateless `tools/list`.
    fn first(&self) -> (Value, &'static str) {
        if self.protocol == PROTOCOL_2026 {
            (self.message(1, "tools/list", json!({})), "tools/list")
        } else {
            (
                json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                    "protocolVersion": self.protocol,
                    "capabilities": {},
                    "clientInfo": {"name": "mcp-gateway", "version": env!("CARGO_PKG_VERSION")}
                }}),
                "initialize",
            )
        }
    }

    async fn send(
        &mut self,
        http: &reqwest::Client,
        body: &Value,
        method: &str,
        token: Option<&str>,
    ) -> CliResult<ProbeAnswer> {
        let mut retried = false;
        loop {
            let mut req = http
                .post(self.server.clone())
                .header("content-type", "application/json")
                .header("accept", "application/json, text/event-stream")
                .body(body.to_string());
            if method != "initialize" {
                req = req.header("mcp-protocol-version", &self.protocol);
            }
            if self.protocol == PROTOCOL_2026 {
                req = req.header("mcp-method", method);
                if let Some(name) = &self.tool_name {
                    req = req.header("mcp-name", name);
                }
            }
            if let Some(session) = &self.session {
                req = req.header("mcp-session-id", session);
            }
            match (token, &self.dpop) {
                (Some(t), Some(dpop)) => {
                    let proof = dpop.proof("POST", self.server.as_str(), Some(t));
                    req = req
                        .header("authorization", format!("DPoP {t}"))
                        .header("dpop", proof);
                }
                (Some(t), None) => req = req.bearer_auth(t),
                (None, _) => {}
            }
            let resp = req
                .send()
                .await
                .map_err(|e| fail(format!("{}: {}", self.server, e.without_url())))?;
            let status = resp.status().as_u16();
            let challenge = resp
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let fresh = self
                .dpop
                .as_ref()
                .is_some_and(|d| d.observe(self.server.as_str(), resp.headers()));
            if let Some(session) = resp
                .headers()
                .get("mcp-session-id")
                .and_then(|v| v.to_str().ok())
            {
                self.session = Some(session.to_string());
            }
            // Read the answer (JSON or an SSE stream of it) so the connection is done with.
            let _ = resp.bytes().await;
            // RFC 9449 §9: the server wants its nonce in the proof; once, with the new one.
            let nonce_asked = challenge
                .as_deref()
                .is_some_and(|c| c.contains("use_dpop_nonce"));
            if status == 401 && nonce_asked && fresh && !retried {
                retried = true;
                continue;
            }
            return Ok(ProbeAnswer { status, challenge });
        }
    }

    /// The era's use of the connection once authorized: 2025 `initialize`, `initialized`,
    /// `tools/list`; 2026 `tools/list`. The first answer that is not 2xx is returned.
    pub(super) async fn session(
        &mut self,
        http: &reqwest::Client,
        token: Option<&str>,
        tool: Option<&ToolCall>,
    ) -> CliResult<ProbeAnswer> {
        let ok = |a: &ProbeAnswer| (200..300).contains(&a.status);
        let (first, method) = self.first();
        let mut answer = self.send(http, &first, method, token).await?;
        if ok(&answer) && self.protocol != PROTOCOL_2026 {
            let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
            self.send(http, &initialized, "notifications/initialized", token)
                .await?;
            let list = self.message(2, "tools/list", json!({}));
            answer = self.send(http, &list, "tools/list", token).await?;
        }
        if let Some(tool) = tool
            && ok(&answer)
        {
            let call = self.message(
                3,
                "tools/call",
                json!({"name": tool.name, "arguments": tool.arguments}),
            );
            self.tool_name = Some(tool.name.clone());
            answer = self.send(http, &call, "tools/call", token).await?;
            self.tool_name = None;
        }
        Ok(answer)
    }
}

impl Probe {
    /// Step 1: the session's requests (and the tool) without a token, until the first 401
    /// (servers may let `initialize` through and ask for a token after): the probe, ready to
    /// start again, and the challenge.
    pub(super) async fn unauthorized(
        http: &reqwest::Client,
        target: &Target<'_>,
    ) -> CliResult<(Probe, Option<String>)> {
        let Target {
            server_url,
            protocol,
            tool,
            ..
        } = *target;
        let server = url::Url::parse(server_url).map_err(|e| fail(format!("{server_url}: {e}")))?;
        let mut probe = Probe {
            server,
            protocol: protocol.to_string(),
            session: None,
            tool_name: None,
            dpop: None,
        };
        let answer = probe.session(http, None, tool).await?;
        if answer.status != 401 {
            return Err(fail(format!(
                "{server_url} answered {} without a token: nothing to log in to",
                answer.status
            )));
        }
        probe.session = None;
        Ok((probe, answer.challenge))
    }
}

/// Step 2's start: the challenge's parameters and the protected-resource metadata (at the URL
/// the challenge names, else the well-known ones).
pub(super) async fn challenge_and_metadata(
    http: &reqwest::Client,
    server: &url::Url,
    challenge: Option<&str>,
) -> (Vec<(String, String)>, Option<Value>) {
    let params = challenge.map(challenge_params).unwrap_or_default();
    let named = param(&params, "resource_metadata");
    let prm = resource_metadata(http, server, named.as_deref()).await;
    (params, prm)
}

/// Step 2's end: the resource the metadata `prm` names (it must be `server`, or a parent of
/// it on the same origin) and its authorization server's metadata (step 3).
pub(super) async fn protected_resource(
    http: &reqwest::Client,
    server: &url::Url,
    prm: &Value,
) -> CliResult<(String, Value)> {
    let resource = prm["resource"].as_str().unwrap_or("").to_string();
    if !resource_matches(&resource, server) {
        return Err(fail(format!(
            "the protected-resource metadata names resource {resource:?}, not {server}: refusing"
        )));
    }
    let issuer = prm["authorization_servers"][0]
        .as_str()
        .ok_or_else(|| fail("the protected-resource metadata names no authorization server"))?;
    Ok((resource, server_metadata(http, issuer).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_and_resources_are_read_as_the_specs_say() {
        let p = challenge_params(
            r#"Bearer error="insufficient_scope", scope="mcp mcp:admin", resource_metadata="https://a.example/.well-known/oauth-protected-resource/mcp""#,
        );
        assert_eq!(param(&p, "error").as_deref(), Some("insufficient_scope"));
        assert_eq!(param(&p, "scope").as_deref(), Some("mcp mcp:admin"));
        assert!(param(&p, "resource_metadata").unwrap().ends_with("/mcp"));
        let server = url::Url::parse("https://a.example/mcp").unwrap();
        assert!(resource_matches("https://a.example/mcp", &server));
        assert!(resource_matches("https://a.example/", &server));
        assert!(resource_matches("https://a.example", &server));
        assert!(!resource_matches("https://b.example/mcp", &server));
        assert!(!resource_matches("https://a.example/other", &server));
        assert!(!resource_matches("https://a.example/mc", &server));
    }
}
