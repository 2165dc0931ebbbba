//! Access tokens issued without a refresh token: for `client_credentials` (RFC 6749 §4.4.3:
//! no refresh token) and for assertions (the ID-JAG draft §4.4.3: the client presents a new
//! assertion instead; a workload asks its platform for a new JWT). The scope the token carries
//! is worked out here for all three: what was asked (else the grant's own ceiling, else
//! `DEFAULT_SCOPE`) ∩ every ceiling the grant has ∩ what the subject is entitled to.

use actix_web::{HttpRequest, HttpResponse};

use super::{TokenResponse, access_request, binding_for, signing_failed, token_response};
use crate::audit::{Events, Kind, outcome};
use crate::auth::{AuthState, OAuthError, UpstreamUser};
use crate::policy::{Identity, Scope};
use crate::records::Binding;
use crate::store::{OnceWrite, TokenRecord, keys};
use crate::token::{MintRequest, SubjectType, mint, sha256_b64url};

/// A token to issue.
pub struct Direct<'a> {
    pub user: UpstreamUser,
    pub kind: SubjectType,
    pub client_id: String,
    pub scope: String,
    pub resources: Vec<String>,
    pub amr: Vec<String>,
    pub grant_type: &'static str,
    /// Scopes left out because the subject may not hold them.
    pub withheld: Vec<String>,
    /// The one-time assertion it is issued for.
    pub once: Option<Once<'a>>,
    /// Where the subject comes from (a trusted issuer), for the trail.
    pub issuer: Option<&'a str>,
}

/// An assertion to spend with the token.
pub struct Once<'a> {
    pub issuer: &'a str,
    pub jti: &'a str,
    pub exp: i64,
}

/// The scope to issue: `requested` (else `default`, else `DEFAULT_SCOPE`), only tokens we
/// support, ∩ each of `ceilings` ∩ what `who` is entitled to. Returns it with what was left
/// out for entitlements; an empty result for a non-empty request is `refused`.
pub fn grant_scope(
    state: &AuthState,
    requested: Option<&str>,
    default: Option<&str>,
    ceilings: &[Option<Scope>],
    who: &Identity<'_>,
    refused: fn(String) -> OAuthError,
) -> Result<(Scope, Vec<String>), OAuthError> {
    let settings = &state.settings;
    let supported = |s: &str| settings.scopes_supported.iter().any(|x| x == s);
    let asked = match requested {
        Some(asked) => {
            let asked = Scope::parse(asked);
            if let Some(bad) = asked.first_not(supported) {
                return Err(OAuthError::invalid_scope(format!(
                    "scope {bad:?} is not supported"
                )));
            }
            asked
        }
        None => Scope::parse(default.unwrap_or(&settings.default_scope)).filter(supported),
    };
    let mut within = asked.clone();
    for ceiling in ceilings.iter().flatten() {
        within = within.filter(|s| ceiling.contains(s));
    }
    let narrowed = settings
        .entitlements
        .narrow(&settings.scope_hierarchy, &within, who);
    if narrowed.granted.is_empty() && !asked.is_empty() {
        let beyond = asked.beyond(&within.iter().map(str::to_string).collect::<Vec<_>>());
        return Err(refused(if beyond.is_empty() {
            format!(
                "{} is not entitled to {}",
                who.login,
                narrowed.withheld.join(" ")
            )
        } else {
            format!("{} may not be granted here", beyond.join(" "))
        }));
    }
    Ok((narrowed.granted, narrowed.withheld))
}

/// Mints the token, records it (spending the assertion in the same step), and answers.
pub async fn issue(
    state: &AuthState,
    req: &HttpRequest,
    grant: Direct<'_>,
) -> Result<HttpResponse, OAuthError> {
    let settings = &state.settings;
    let now = state.now();
    let binding = binding_for(state, req, &Binding::default()).map_err(|e| match e {
        super::BindingRefused::Unknown(e) => e,
        super::BindingRefused::Mismatch(what) => {
            OAuthError::invalid_grant(format!("bound to another client {what}"))
        }
    })?;
    let lifetime = settings.access_token_lifetime;
    let minted = mint(
        &settings.keys,
        &settings.issuer,
        MintRequest {
            client_id: grant.client_id.clone(),
            scope: grant.scope.clone(),
            audience: grant.resources.clone(),
            lifetime,
            amr: grant.amr.clone(),
            subject_type: grant.kind,
            ..access_request(settings, &grant.user, &binding)
        },
        now,
    )
    .map_err(signing_failed)?;
    let body = serde_json::to_string(&TokenResponse {
        access_token: &minted.token,
        token_type: super::token_type(&binding),
        expires_in: lifetime.as_secs(),
        refresh_token: None,
        scope: &grant.scope,
    })
    .map_err(|e| OAuthError::server_error(e.to_string()))?;
    let claims = &minted.claims;
    let by_client = |kind| {
        let mut event = state
            .client_event(kind, &grant.client_id, req)
            .user(&grant.user.login)
            .user_id(&grant.user.id)
            .grant(grant.grant_type)
            .detail("subject_type", grant.kind.as_str());
        if let Some(issuer) = grant.issuer {
            event = event.detail("issuer", issuer);
        }
        event
    };
    let events = Events::none()
        .on(
            outcome::WRITTEN,
            by_client(Kind::TokenIssued)
                .jti(&claims.jti)
                .scope(&grant.scope)
                .resource(&grant.resources.join(" ")),
        )
        .narrowed(
            outcome::WRITTEN,
            by_client(Kind::EntitlementNarrowed).scope(&grant.scope),
            &grant.withheld,
        );
    let mut token = TokenRecord::for_claims(claims, None);
    token.grant = Some(grant.grant_type.to_string());
    token.client_ip = state.client_ip(req).map(|ip| ip.to_string());
    match &grant.once {
        None => state.store.put_token(&token, now, &events).await?,
        Some(once) => {
            let hash = sha256_b64url(format!("{}\n{}", once.issuer, once.jti).as_bytes());
            // In the token's bucket (its subject's: the same for every replay), so the marker
            // and the token are written in one step on a cluster too.
            let key = keys::assertion_jti(&crate::slots::Bucket::of_id(&token.jti).mint_id(&hash));
            // Used until it could no longer pass: past its exp and the skew allowed.
            let ttl = std::time::Duration::from_secs(
                (once.exp - now).max(0) as u64 + crate::auth::trusted::LEEWAY as u64 + 1,
            );
            let write = OnceWrite {
                record: &token,
                key: &key,
                ttl,
            };
            // Spent with the token, in one step: a replay, even of a request whose answer
            // was lost, is refused (the client asks its IdP or platform for a new one).
            if !state.store.put_token_once(&write, now, &events).await? {
                tracing::warn!(client_id = %grant.client_id, issuer = once.issuer, "assertion replayed: refused");
                let replayed = by_client(Kind::AssertionReplayed)
                    .detail("jti", once.jti)
                    .refused("the assertion was used before");
                state.record_refusal(req, Events::one(replayed)).await;
                return Err(OAuthError::invalid_grant(
                    "the assertion was used before (its jti is spent)",
                ));
            }
        }
    }
    state
        .metrics
        .tokens_issued
        .with_label_values(&[grant.grant_type])
        .inc();
    Ok(token_response(body))
}
