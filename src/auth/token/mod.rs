//! `POST /token` (OAuth 2.1 §3.2): the authorization-code grant (single atomic redemption,
//! PKCE S256, exact redirect URI, code bound to its client; a second redemption revokes what
//! the first issued) and the refresh-token grant (rotation on every use; reuse of a rotated
//! token revokes the whole family; bound to its client; allow-list re-checked); the grants
//! without a refresh token in their own files: `client_credentials` and the JWT bearer grant
//! (ID-JAGs and workload assertions), issued through `direct.rs`.

use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE, PRAGMA};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;

mod binding;
mod client_credentials;
mod direct;
mod dpop;
pub mod jwt_bearer;
mod upstream_refresh;

use binding::{BindingRefused, binding_for};
use upstream_refresh::{Upstreamed, refresh_upstream};

use super::client_auth::{authenticate, parse_form};
use super::error::track;
use super::params::{CodeChallenge, Resource, valid_verifier};
use super::ratelimit::Limited;
use super::{AuthState, OAuthError, UpstreamUser};
use crate::audit::{Actor, Events, Kind, outcome};
use crate::policy::Scope;
use crate::records::{
    Binding, ClientRecord, CodeRecord, RedeemedCode, RefreshRecord, StoredCode, UpstreamSession,
};
use crate::slots::{Bucket, placed_hash};
use crate::store::{GrantOutcome, GrantResult, GrantWrite, StoreError, TokenRecord, keys};
use crate::token::{MintRequest, mint, random_token};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/token", web::post().to(token));
}

async fn token(req: HttpRequest, body: web::Bytes, state: web::Data<AuthState>) -> HttpResponse {
    let ip = state.client_network(&req);
    let mut claimed = String::new();
    let mut authenticated = None;
    let result = async {
        state.limits.check(Limited::Token, ip)?;
        let form = parse_form(&req, &body)?;
        claimed = super::client_auth::claimed_client_id(&req, &form);
        state.limits.check_failures(Limited::Token, ip, &claimed)?;
        let grant_type = form
            .get("grant_type")
            .ok_or_else(|| OAuthError::invalid_request("grant_type is required"))?;
        let grant_type = grant_type.as_str();
        // Any grant may come with a proof; its key binds what is issued (RFC 9449 §5).
        let proof = dpop::proof(&state, &req).await?;
        let assertions = !state.settings.trusted_issuers.is_empty();
        if grant_type == jwt_bearer::JWT_BEARER
            && assertions
            && !param(&form, "assertion").is_some_and(crate::auth::trusted::is_id_jag)
        {
            // A workload presents its platform's JWT and no client credentials.
            return jwt_bearer::workload(&state, &req, &form).await;
        }
        if grant_type == jwt_bearer::JWT_BEARER
            && let Some(refused) = jwt_bearer::misdirected(&state, &form)
        {
            return Err(refused);
        }
        let supported = match grant_type {
            "authorization_code" | "refresh_token" | client_credentials::CLIENT_CREDENTIALS => true,
            jwt_bearer::JWT_BEARER => assertions,
            _ => false,
        };
        if !supported {
            return Err(OAuthError::unsupported_grant_type(format!(
                "grant_type {grant_type:?} is not supported"
            )));
        }
        let client = authenticate(&state, &req, &form).await?;
        authenticated = Some(client.client_id.clone());
        if client.dpop_bound_access_tokens && proof.is_none() {
            return Err(OAuthError::invalid_dpop_proof(
                "this client registered dpop_bound_access_tokens: send a DPoP proof",
            ));
        }
        if !client.allows_grant(grant_type) {
            return Err(OAuthError::unauthorized_client(format!(
                "this client is not registered for {grant_type}"
            )));
        }
        match grant_type {
            client_credentials::CLIENT_CREDENTIALS => {
                return client_credentials::grant(&state, &req, &client, &form).await;
            }
            jwt_bearer::JWT_BEARER => {
                return jwt_bearer::id_jag(&state, &req, &client, &form).await;
            }
            _ => {}
        }
        let grant = Granting {
            state: &state,
            req: &req,
            client: &client,
        };
        match TokenRequest::parse(&form)? {
            TokenRequest::AuthorizationCode(code) => authorization_code(grant, code).await,
            TokenRequest::RefreshToken(request) => refresh(grant, request).await,
        }
    }
    .await;
    if let Err(e) = &result
        && matches!(e.code, "invalid_client" | "invalid_grant")
    {
        state.limits.record_failure(Limited::Token, ip, &claimed);
    }
    // A client's refused grant, unless its own event says more (reuse, replay, a binding):
    // "why does this client's refresh fail" is answered from the trail.
    if let (Err(e), Some(client_id)) = (&result, authenticated)
        && !matches!(e.code, "temporarily_unavailable" | "use_dpop_nonce")
        && !super::refusal_was_recorded(&req)
    {
        let refused = state
            .client_event(Kind::GrantRefused, &client_id, &req)
            .refused(format!("{}: {}", e.code, e.description));
        state.record_limited(&client_id, e.code, refused).await;
    }
    track(&state, "token", result)
}

type Form = std::collections::HashMap<String, String>;

/// A non-empty form parameter.
fn param<'a>(form: &'a Form, name: &str) -> Option<&'a str> {
    form.get(name).map(String::as_str).filter(|v| !v.is_empty())
}

/// A token request, read from the form once its client is known (so a request from an unknown
/// client is `invalid_client` whatever else is wrong with it).
enum TokenRequest<'a> {
    AuthorizationCode(CodeExchange<'a>),
    RefreshToken(RefreshRequest<'a>),
}

/// `grant_type=authorization_code` (OAuth 2.1 §4.1.3 with PKCE).
struct CodeExchange<'a> {
    code: &'a str,
    verifier: &'a str,
    redirect_uri: Option<&'a str>,
    resource: Option<&'a str>,
}

/// `grant_type=refresh_token` (OAuth 2.1 §4.3), optionally narrowing scope or naming the
/// resource again.
struct RefreshRequest<'a> {
    refresh_token: &'a str,
    scope: Option<&'a str>,
    resource: Option<&'a str>,
}

impl<'a> TokenRequest<'a> {
    fn parse(form: &'a Form) -> Result<Self, OAuthError> {
        let param = |name: &str| param(form, name);
        match param("grant_type") {
            Some("authorization_code") => Ok(Self::AuthorizationCode(CodeExchange {
                code: param("code")
                    .ok_or_else(|| OAuthError::invalid_request("code is required"))?,
                verifier: param("code_verifier").ok_or_else(|| {
                    OAuthError::invalid_request("code_verifier is required (PKCE)")
                })?,
                redirect_uri: param("redirect_uri"),
                resource: param("resource"),
            })),
            Some("refresh_token") => Ok(Self::RefreshToken(RefreshRequest {
                refresh_token: param("refresh_token")
                    .ok_or_else(|| OAuthError::invalid_request("refresh_token is required"))?,
                scope: param("scope"),
                resource: param("resource"),
            })),
            other => Err(OAuthError::unsupported_grant_type(format!(
                "grant_type {:?} is not supported",
                other.unwrap_or("")
            ))),
        }
    }
}

/// One token request whose client has authenticated: what a grant works from.
#[derive(Clone, Copy)]
struct Granting<'a> {
    state: &'a AuthState,
    req: &'a HttpRequest,
    client: &'a ClientRecord,
}

async fn authorization_code(
    grant: Granting<'_>,
    exchange: CodeExchange<'_>,
) -> Result<HttpResponse, OAuthError> {
    let (state, req, client) = (grant.state, grant.req, grant.client);
    let CodeExchange {
        code,
        verifier,
        redirect_uri,
        resource,
    } = exchange;
    let code_hash = placed_hash(code);
    let code_key = keys::code(&code_hash);
    // Only the identical request reads a kept answer back: the same code, verifier, redirect
    // URI and resource (and, when it opens, the same client).
    let retry = Retry::new(
        &code_hash,
        &[
            code,
            verifier,
            redirect_uri.unwrap_or(""),
            resource.unwrap_or(""),
        ],
        state.settings.code_retry_grace,
    );
    let stored = match StoredCode::load(state.store.as_ref(), &code_key).await {
        Ok(Some(stored)) => stored,
        Ok(None) => {
            return Err(OAuthError::invalid_grant(
                "the code is invalid or has expired",
            ));
        }
        Err(StoreError::Corrupt(_)) => {
            return Err(OAuthError::server_error("stored code is unreadable"));
        }
        Err(e) => return Err(e.into()),
    };
    let record: CodeRecord = match stored {
        StoredCode::Unredeemed(record) => *record,
        StoredCode::Redeemed(RedeemedCode { family_id, .. }) => {
            // The same exchange again (its answer was lost): the same answer, while its grant
            // stands. Anything else is a replay.
            let revoked = state.store.get(&keys::family_revoked(&family_id)).await?;
            if revoked.is_none()
                && let Some(sealed) = state.store.get(&retry.key).await?
                && let Some(answer) = retry.open(&sealed, &client.client_id)
            {
                return Ok(answer);
            }
            return Err(code_replayed(state, req, client, &family_id).await);
        }
    };
    let checked = check_code(state, client, &exchange, &record);
    let resource = match checked {
        Ok(resource) => resource,
        Err(e) => {
            // A code presented wrongly has leaked or is being guessed at: it is spent.
            state.store.delete(&code_key).await?;
            return Err(e);
        }
    };
    // The family's bucket is its user's: its tokens and refresh tokens are minted in it.
    let family_id = Bucket::of_user(&record.user.login).mint_id(&random_token());
    let grant = Grant {
        user: record.user,
        ceiling: record.scope.clone(),
        scope: record.scope,
        resource,
        amr: record.amr,
        family_id,
        rotate_from: None,
        redeem_code: Some(code_key),
        bound: Binding::default(),
        retry,
        upstream: record.upstream,
        withheld: Vec::new(),
    };
    issue(state, req, client, grant, "authorization_code").await
}

/// The code is this client's, for this redirect URI and PKCE verifier; returns the resource
/// the tokens are for.
fn check_code(
    state: &AuthState,
    client: &ClientRecord,
    exchange: &CodeExchange<'_>,
    record: &CodeRecord,
) -> Result<Option<String>, OAuthError> {
    let verifier = exchange.verifier;
    if record.client_id != client.client_id {
        return Err(OAuthError::invalid_grant(
            "the code was issued to another client",
        ));
    }
    match exchange.redirect_uri {
        Some(uri) if uri != record.redirect_uri => {
            return Err(OAuthError::invalid_grant(
                "redirect_uri does not match the authorization request",
            ));
        }
        None if record.redirect_uri_explicit => {
            return Err(OAuthError::invalid_grant(
                "redirect_uri is required: the authorization request had one",
            ));
        }
        _ => {}
    }
    if !valid_verifier(verifier) {
        return Err(OAuthError::invalid_grant("code_verifier is malformed"));
    }
    if !CodeChallenge::verifies(&record.code_challenge, verifier) {
        return Err(OAuthError::invalid_grant(
            "code_verifier does not match the code_challenge",
        ));
    }
    Ok(match (exchange.resource, &record.resource) {
        (None, r) => r.clone(),
        (Some(asked), Some(bound)) => {
            let asked = Resource::parse(&state.settings, asked)
                .map_err(OAuthError::invalid_target)?
                .into_string();
            if &asked != bound {
                return Err(OAuthError::invalid_target(
                    "resource differs from the authorization request",
                ));
            }
            Some(asked)
        }
        (Some(asked), None) => Some(
            Resource::parse(&state.settings, asked)
                .map_err(OAuthError::invalid_target)?
                .into_string(),
        ),
    })
}

/// RFC 6749 §4.1.2: a replayed code revokes the tokens issued with it (`code_replayed`).
async fn code_replayed(
    state: &AuthState,
    req: &HttpRequest,
    client: &ClientRecord,
    family_id: &str,
) -> OAuthError {
    let replayed = state
        .client_event(Kind::CodeReplayed, &client.client_id, req)
        .family(family_id)
        .grant("authorization_code")
        .refused("the code was already used");
    super::refusal_recorded(req);
    if family_id.is_empty() {
        state.record(Events::one(replayed)).await;
    } else {
        match state
            .store
            .revoke_family(
                family_id,
                state.settings.refresh_token_lifetime,
                &Events::one(replayed),
            )
            .await
        {
            Ok(revoked) => {
                tracing::warn!(
                    revoked,
                    "authorization code replayed: its tokens are revoked"
                )
            }
            Err(e) => return e.into(),
        }
    }
    OAuthError::invalid_grant("the code was already used")
}

/// How a token request is made safe to retry: its answer is kept, sealed with a key derived
/// from what the client presented (the code and its PKCE verifier, or the refresh token), so
/// only the same request can read it back, under the hash of the credential.
struct Retry {
    key: String,
    sealer: crate::seal::SecretBox,
    /// How long the answer is kept: `CODE_RETRY_GRACE` for a code, `REFRESH_REUSE_GRACE` for
    /// a refresh token.
    grace: std::time::Duration,
}

impl Retry {
    /// `request`: the credential first, then every other parameter a retry must repeat.
    fn new(credential_hash: &str, request: &[&str], grace: std::time::Duration) -> Self {
        Self {
            key: keys::grant_result(credential_hash),
            sealer: crate::seal::SecretBox::new(crate::seal::derive_key(
                "mcp-gateway grant result",
                request.join("\0").as_bytes(),
            )),
            grace,
        }
    }

    /// The kept answer, when it opens for this request and client.
    fn open(&self, sealed: &str, client_id: &str) -> Option<HttpResponse> {
        let body = self.sealer.open(client_id, sealed)?;
        Some(token_response(String::from_utf8(body).ok()?))
    }
}

async fn refresh(
    grant: Granting<'_>,
    request: RefreshRequest<'_>,
) -> Result<HttpResponse, OAuthError> {
    let (state, req, client) = (grant.state, grant.req, grant.client);
    let presented = request.refresh_token;
    let hash = placed_hash(presented);
    let record = match RefreshRecord::load(state.store.as_ref(), &hash).await {
        Ok(Some(record)) => record,
        Err(StoreError::Corrupt(_)) => {
            return Err(OAuthError::server_error(
                "stored refresh token is unreadable",
            ));
        }
        Err(e) => return Err(e.into()),
        Ok(None) => {
            return Err(OAuthError::invalid_grant(
                "the refresh token is invalid, expired or revoked",
            ));
        }
    };
    if record.client_id != client.client_id {
        // Someone else's token: refuse without touching it.
        return Err(OAuthError::invalid_grant(
            "the refresh token was issued to another client",
        ));
    }
    let retry = Retry::new(&hash, &[presented, ""], state.settings.refresh_reuse_grace);
    // A retry of a refresh that already went through: its answer, without asking the
    // upstream again (a rotated upstream refresh token would not work twice).
    if let Ok(Some(sealed)) = state.store.get(&retry.key).await
        && let Some(answer) = retry.open(&sealed, &client.client_id)
    {
        return Ok(answer);
    }
    let (user, upstream) =
        match refresh_upstream(state, req, &record, &hash, &retry, client).await? {
            Upstreamed::Session(user, upstream) => (user, upstream),
            Upstreamed::Answered(answer) => return Ok(answer),
        };
    let record = RefreshRecord { user, ..record };
    if !state.settings.admission.admits(&record.user.identity()) {
        let revoked = state
            .event(Kind::TokenRevoked, Actor::System("policy".into()), req)
            .user(&record.user.login)
            .user_id(&record.user.id)
            .client(&client.client_id)
            .family(&record.family_id)
            .reason("user_not_allowed");
        state.revoke_grant(&record.family_id, revoked).await?;
        super::refusal_recorded(req);
        return Err(OAuthError::invalid_grant("the user is no longer allowed"));
    }
    let granted = Scope::parse(&record.scope);
    let asked = match request.scope {
        None => granted,
        Some(asked) => {
            let asked = Scope::parse(asked);
            if let Some(extra) = asked.first_not(|s| granted.contains(s)) {
                return Err(OAuthError::invalid_scope(format!(
                    "scope {extra:?} was not granted"
                )));
            }
            asked
        }
    };
    // Entitlements are checked again with who the user is now (groups and e-mail come from
    // the upstream session refreshed above): a user who left a group loses its scopes here,
    // and the grant itself goes on.
    let settings = &state.settings;
    let narrowed =
        settings
            .entitlements
            .narrow(&settings.scope_hierarchy, &asked, &record.user.identity());
    if !narrowed.withheld.is_empty() {
        tracing::info!(login = %record.user.login, client_id = %client.client_id, withheld = %narrowed.withheld.join(" "), "refresh: scopes left out, the user is no longer entitled to them");
    }
    let scope = narrowed.granted.to_string();
    if let Some(asked) = request.resource {
        let asked = Resource::parse(&state.settings, asked)
            .map_err(OAuthError::invalid_target)?
            .into_string();
        if record.resource.as_deref() != Some(asked.as_str()) {
            return Err(OAuthError::invalid_target(
                "resource differs from the original grant",
            ));
        }
    }
    let grant = Grant {
        user: record.user,
        scope,
        // RFC 6749 §6: the new refresh token's scope is the one it replaces.
        ceiling: record.scope,
        resource: record.resource,
        amr: record.amr,
        family_id: record.family_id,
        retry,
        rotate_from: Some(hash),
        redeem_code: None,
        bound: record.binding,
        upstream,
        withheld: narrowed.withheld,
    };
    issue(state, req, client, grant, "refresh_token").await
}

/// The resource's `host[:port]`, as verify compares hosts.
fn resource_host(resource: &str) -> Option<String> {
    let url = url::Url::parse(resource).ok()?;
    Some(url[url::Position::BeforeHost..url::Position::BeforePath].to_ascii_lowercase())
}

struct Grant {
    upstream: Option<String>,
    user: UpstreamUser,
    /// What the access token carries.
    scope: String,
    /// What the grant may give at most (the refresh token's scope).
    ceiling: String,
    resource: Option<String>,
    amr: Vec<String>,
    family_id: String,
    rotate_from: Option<String>,
    redeem_code: Option<String>,
    /// The binding the grant already has (refresh), checked against this request.
    bound: Binding,
    retry: Retry,
    /// Scopes asked for that the user is no longer entitled to (refresh).
    withheld: Vec<String>,
}

#[derive(Serialize)]
struct TokenResponse<'a> {
    access_token: &'a str,
    token_type: &'static str,
    expires_in: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<&'a str>,
    scope: &'a str,
}

/// Mints the access and refresh tokens and records them in one atomic step, with their
/// events (`token_issued` or `token_refreshed`; `refresh_reuse_detected` when the presented
/// refresh token turns out to be used).
async fn issue(
    state: &AuthState,
    req: &HttpRequest,
    client: &ClientRecord,
    grant: Grant,
    grant_type: &str,
) -> Result<HttpResponse, OAuthError> {
    let settings = &state.settings;
    let now = state.now();
    let who = (
        grant.user.login.clone(),
        grant.user.id.clone(),
        grant.amr.first().cloned().unwrap_or_default(),
        grant.family_id.clone(),
    );
    let by_client = |kind| {
        state
            .client_event(kind, &client.client_id, req)
            .user(&who.0)
            .user_id(&who.1)
            .upstream(&who.2)
            .family(&who.3)
            .grant(grant_type)
    };
    let binding = match binding_for(state, req, &grant.bound) {
        Ok(binding) => binding,
        Err(BindingRefused::Unknown(e)) => return Err(e),
        Err(BindingRefused::Mismatch(what)) => {
            let mismatch = by_client(Kind::BindingMismatch).refused(format!("another {what}"));
            state.record_refusal(req, Events::one(mismatch)).await;
            return Err(OAuthError::invalid_grant(format!(
                "the refresh token is bound to another client {what}"
            )));
        }
    };
    // The MCP server gets the upstream's access token: ours ends no later than it does, so
    // the client's refresh (which refreshes it upstream) comes first.
    let forwarded = grant
        .resource
        .as_deref()
        .and_then(resource_host)
        .filter(|host| settings.upstream_token.forwards_to(host))
        .and(grant.upstream.as_deref())
        .and_then(|sealed| UpstreamSession::open(&state.upstream_box, &grant.user.id, sealed));
    let mut lifetime = settings.access_token_lifetime;
    if let Some(expires_at) = forwarded.as_ref().and_then(|s| s.expires_at) {
        let left = expires_at - now;
        if left <= 0 {
            return Err(OAuthError::invalid_grant(
                "the identity provider's token has expired and cannot be refreshed; sign in again",
            ));
        }
        lifetime = lifetime.min(std::time::Duration::from_secs(left as u64));
    }
    let minted = mint(
        &settings.keys,
        &settings.issuer,
        MintRequest {
            client_id: client.client_id.clone(),
            scope: grant.scope.clone(),
            audience: grant.resource.iter().cloned().collect(),
            lifetime,
            amr: grant.amr.clone(),
            ..access_request(settings, &grant.user, &binding)
        },
        now,
    )
    .map_err(signing_failed)?;
    let refresh_token = Bucket::of_id(&grant.family_id).mint_id(&random_token());
    let refresh_hash = placed_hash(&refresh_token);
    let refresh_expires_at = now + settings.refresh_token_lifetime.as_secs() as i64;
    let refresh_record = RefreshRecord {
        family_id: grant.family_id.clone(),
        client_id: client.client_id.clone(),
        user: grant.user.clone(),
        scope: grant.ceiling.clone(),
        resource: grant.resource.clone(),
        amr: grant.amr,
        issued_at: now,
        expires_at: refresh_expires_at,
        used: false,
        binding: Binding {
            // RFC 9449 §5: a confidential client's refresh token is held by its authentication.
            jkt: binding
                .jkt
                .clone()
                .filter(|_| client.token_endpoint_auth_method == "none"),
            ..binding.clone()
        },
        rotated_from: grant.rotate_from.clone(),
        upstream: grant.upstream.clone(),
    };
    let offers_refresh = client.allows_grant("refresh_token");
    let body = serde_json::to_string(&TokenResponse {
        access_token: &minted.token,
        token_type: token_type(&binding),
        expires_in: lifetime.as_secs(),
        refresh_token: offers_refresh.then_some(refresh_token.as_str()),
        scope: &grant.scope,
    })
    .map_err(|e| OAuthError::server_error(e.to_string()))?;
    let claims = &minted.claims;
    let issued_kind = if grant.rotate_from.is_some() {
        Kind::TokenRefreshed
    } else {
        Kind::TokenIssued
    };
    let events = Events::none()
        .on(
            outcome::ISSUED,
            by_client(issued_kind)
                .jti(&claims.jti)
                .scope(&grant.scope)
                .resource(grant.resource.as_deref().unwrap_or("")),
        )
        .narrowed(
            outcome::ISSUED,
            by_client(Kind::EntitlementNarrowed).scope(&grant.scope),
            &grant.withheld,
        )
        .on(
            outcome::REUSED,
            by_client(Kind::RefreshReuseDetected)
                .refused("a rotated refresh token was presented again"),
        );
    let mut token = TokenRecord::for_claims(claims, Some(grant.family_id.clone()));
    token.grant = Some(grant_type.to_string());
    token.client_ip = state.client_ip(req).map(|ip| ip.to_string());
    // The access token alone (never the refresh token), sealed to this token's jti.
    token.upstream = forwarded.map(|s| {
        UpstreamSession {
            refresh_token: None,
            ..s
        }
        .seal(&state.upstream_box, &claims.jti)
    });
    let write = GrantWrite {
        token,
        refresh_hash,
        refresh_json: serde_json::to_string(&refresh_record)
            .map_err(|e| OAuthError::server_error(e.to_string()))?,
        refresh_expires_at,
        family_id: grant.family_id,
        rotate_from: grant.rotate_from,
        redeem_code: grant.redeem_code,
        result: Some(GrantResult {
            key: grant.retry.key.clone(),
            sealed: grant.retry.sealer.seal(&client.client_id, body.as_bytes()),
            ttl: grant.retry.grace,
        }),
        renew_client: settings.client_lifetime,
        registered_from: client.registered_from.clone(),
        events,
    };
    match state.store.issue_grant(&write, now).await? {
        GrantOutcome::Issued => {}
        GrantOutcome::Replayed(sealed) => {
            // The same request moments ago (a retry, or concurrent duplicates): its answer.
            return grant
                .retry
                .open(&sealed, &client.client_id)
                .ok_or_else(|| OAuthError::invalid_grant("this grant was already used"));
        }
        GrantOutcome::CodeReused { family_id } => {
            return Err(code_replayed(state, req, client, &family_id).await);
        }
        GrantOutcome::Missing => {
            return Err(OAuthError::invalid_grant(
                "the code or refresh token is invalid, expired or revoked",
            ));
        }
        GrantOutcome::Reused => {
            super::refusal_recorded(req);
            tracing::warn!(client_id = %client.client_id, "refresh token replayed: its family is revoked");
            return Err(OAuthError::invalid_grant(
                "the refresh token was already used; every token of this grant is now revoked",
            ));
        }
        GrantOutcome::FamilyRevoked => {
            return Err(OAuthError::invalid_grant("this grant has been revoked"));
        }
    }
    state
        .metrics
        .tokens_issued
        .with_label_values(&[grant_type])
        .inc();
    Ok(token_response(body))
}

/// The access token's request as far as who it is for goes: the user, the binding, the
/// settings' custom claims; the grant adds its client, scope, audience, lifetime and amr.
fn access_request(
    settings: &crate::config::Settings,
    user: &UpstreamUser,
    binding: &Binding,
) -> MintRequest {
    MintRequest {
        subject: user.id.clone(),
        username: user.login.clone(),
        email: user.email.clone(),
        name: user.name.clone(),
        groups: user.groups.clone(),
        cert_thumbprint: binding.cert.clone(),
        dpop_jkt: binding.jkt.clone(),
        bind_ip: binding.ip.clone(),
        bind_ua: binding.ua.clone(),
        custom_claims: settings.custom_claims.clone(),
        ..MintRequest::default()
    }
}

/// `DPoP` for a token bound to a DPoP key (RFC 9449 §5), `Bearer` otherwise.
fn token_type(binding: &Binding) -> &'static str {
    if binding.jkt.is_some() {
        "DPoP"
    } else {
        "Bearer"
    }
}

fn signing_failed(e: crate::token::TokenError) -> OAuthError {
    OAuthError::server_error(format!("cannot sign the token: {e}"))
}

/// A token response (RFC 6749 §5.1): never cached.
fn token_response(body: String) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, "application/json"))
        .insert_header((CACHE_CONTROL, "no-store"))
        .insert_header((PRAGMA, "no-cache"))
        .body(body)
}
