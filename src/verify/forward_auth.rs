//! `GET /verify` (any method): the ForwardAuth answer around the decision
//! (`VerifyState::decide`, beside the state in [`super::state`]): identity headers on a 200,
//! the challenge on a refusal, the metrics.

use std::time::Instant;

use actix_web::{HttpRequest, HttpResponse, web};

use super::VerifyState;
use super::metrics::Reason;
use super::request::Target;

/// The largest forwarded request body read for the per-tool policy (Traefik's `maxBodySize`
/// in the shipped configuration is the same).
pub const FORWARDED_BODY_LIMIT: usize = 1024 * 1024;

pub const X_AUTH_DENIED_TOOLS: &str = "x-auth-denied-tools";

pub async fn forward_auth(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<VerifyState>,
) -> HttpResponse {
    let started = Instant::now();
    let headers = req.headers();
    let target = Target::from_headers(headers, &state.settings.resource_hosts);
    let peer = req.peer_addr().map(|a| a.ip());
    let outcome = state
        .decide(headers, &body, peer, target.as_ref(), started)
        .await;
    let response = match &outcome {
        Ok(verified) => {
            let mut ok = HttpResponse::Ok();
            for (name, value) in verified.identity_headers() {
                ok.insert_header((name, value.clone()));
            }
            // Only on a 200 (Traefik copies only authResponseHeaders to the MCP server; a
            // refusal's headers would go back to the client).
            if let (Some((name, _)), Some(target)) = (&state.upstream_token, &target)
                && state.settings.upstream_token.forwards_to(&target.host)
                && let Some(value) = verified.upstream_token()
            {
                ok.insert_header((name.clone(), value.clone()));
            }
            if state.settings.tool_policy_header && !state.settings.tool_policy.is_empty() {
                let scopes: Vec<&str> = verified.scopes().collect();
                let denied = state.settings.tool_policy.denied_tools(
                    &state.settings.scope_hierarchy,
                    &scopes,
                    &verified.who(),
                );
                ok.insert_header((X_AUTH_DENIED_TOOLS, denied.join(",")));
            }
            ok.finish()
        }
        Err(denial) => {
            let path = &state.settings.resource_path;
            let metadata_url = target.as_ref().map(|t| t.metadata_url(path));
            let scope = state.challenge_scope(target.as_ref());
            denial
                .clone()
                .into_response(metadata_url.as_deref(), scope.as_deref())
        }
    };
    let reason = match &outcome {
        Ok(_) => Reason::Ok,
        Err(denial) => denial.reason,
    };
    state
        .metrics
        .record(reason, started.elapsed().as_secs_f64());
    state.audit.decision(|| {
        let ip = (reason != Reason::Ok)
            .then(|| state.client_address.resolve(headers, peer))
            .flatten();
        super::audit::Sample::of(reason, outcome.as_ref().ok().cloned(), headers, &body, ip)
    });
    if tracing::enabled!(tracing::Level::DEBUG) {
        let client_id = outcome.as_ref().map(|v| v.client_id()).ok();
        tracing::debug!(reason = reason.as_str(), client_id, "verify decision");
    }
    response
}
