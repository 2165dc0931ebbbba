//! `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer` (RFC 7523 §2.1): an assertion of
//! a trusted issuer for an access token. An ID-JAG (its `typ` says so) comes from a client
//! that authenticates and speaks for the IdP's user; anything else is a workload's assertion,
//! presented without a client. Either way the assertion is spent with the token it buys, the
//! token's audience is the resource asked for (one the assertion names, when it names any),
//! and its scope what was asked ∩ what the assertion and its issuer allow ∩ the subject's
//! entitlements. No refresh token: the client presents a new assertion.

use actix_web::{HttpRequest, HttpResponse};

use super::direct::{Direct, Once, grant_scope, issue};
use super::{Form, param};
use crate::audit::{Actor, Kind};
use crate::auth::params::Resource;
use crate::auth::trusted::{self, Profile, Subject, Verified, id_jag::IdJag, workload::Workload};
use crate::auth::{AuthState, OAuthError};
use crate::policy::{Identity, Scope};
use crate::records::ClientRecord;
use crate::token::SubjectType;

pub use crate::auth::client_metadata::JWT_BEARER;

/// An ID-JAG presented by `client` (authenticated).
pub async fn id_jag(
    state: &AuthState,
    req: &HttpRequest,
    client: &ClientRecord,
    form: &Form,
) -> Result<HttpResponse, OAuthError> {
    present::<IdJag>(state, req, Some(client), form).await
}

/// A workload's assertion (no client authenticates).
pub async fn workload(
    state: &AuthState,
    req: &HttpRequest,
    form: &Form,
) -> Result<HttpResponse, OAuthError> {
    present::<Workload>(state, req, None, form).await
}

/// The assertion checked by `P`'s rules, then the token it buys.
async fn present<P: Profile>(
    state: &AuthState,
    req: &HttpRequest,
    client: Option<&ClientRecord>,
    form: &Form,
) -> Result<HttpResponse, OAuthError> {
    let assertion = param(form, "assertion")
        .ok_or_else(|| OAuthError::invalid_request("assertion is required"))?;
    let checked = async {
        let verified = trusted::verify::<P>(state, assertion).await?;
        let subject = P::subject(state, &verified, client)?;
        Ok::<_, OAuthError>((verified, subject))
    }
    .await;
    match checked {
        Ok((verified, subject)) => finish(state, req, form, verified, subject).await,
        Err(e) => {
            let issuer = trusted::unverified_claim(assertion, "iss").unwrap_or_default();
            let client_id = client.map(|c| c.client_id.as_str());
            Err(refused(state, req, client_id, &issuer, None, e).await)
        }
    }
}

/// An ID-JAG whose issuer is trusted for workloads only: refused before its client is
/// asked to authenticate (its issuer's kind, not the client, is what is wrong).
pub fn misdirected(state: &AuthState, form: &Form) -> Option<OAuthError> {
    let assertion = param(form, "assertion")?;
    let iss = trusted::unverified_claim(assertion, "iss")?;
    let issuer = state
        .settings
        .trusted_issuers
        .iter()
        .find(|t| t.issuer == iss)?;
    (trusted::is_id_jag(assertion) && issuer.kind != IdJag::KIND).then(|| {
        OAuthError::invalid_grant(format!(
            "assertion: {iss} is trusted for {} assertions, not {}",
            issuer.kind.as_str(),
            IdJag::KIND.as_str()
        ))
    })
}

/// An assertion refused: in the trail (`assertion_refused`, rate-limited per client or
/// issuer and reason), then to the client. A passing fault is only answered.
async fn refused(
    state: &AuthState,
    req: &HttpRequest,
    client_id: Option<&str>,
    issuer: &str,
    subject: Option<&str>,
    error: OAuthError,
) -> OAuthError {
    if matches!(error.code, "temporarily_unavailable" | "server_error") {
        return error;
    }
    let issuer: String = issuer.chars().take(200).collect();
    let (mut event, key) = match client_id {
        Some(id) => (
            state.client_event(Kind::AssertionRefused, id, req),
            id.to_string(),
        ),
        None => (
            state.event(
                Kind::AssertionRefused,
                Actor::System("jwt-bearer".into()),
                req,
            ),
            format!("issuer:{issuer}"),
        ),
    };
    if let Some(subject) = subject {
        event = event.user_id(subject);
    }
    let event = event
        .grant(JWT_BEARER)
        .detail("issuer", issuer)
        .refused(format!("{}: {}", error.code, error.description));
    crate::auth::refusal_recorded(req);
    state.record_limited(&key, error.code, event).await;
    error
}

async fn finish(
    state: &AuthState,
    req: &HttpRequest,
    form: &Form,
    verified: Verified<'_>,
    subject: Subject,
) -> Result<HttpResponse, OAuthError> {
    let refuse = |why: String| OAuthError::invalid_grant(why);
    let outcome = async {
        let settings = &state.settings;
        let asked = param(form, "resource")
            .map(|r| Resource::parse(settings, r).map(Resource::into_string))
            .transpose()
            .map_err(OAuthError::invalid_target)?;
        let resources = match (asked, &subject.resources) {
            (Some(asked), Some(named)) if !named.contains(&asked) => {
                return Err(refuse(format!(
                    "resource {asked} is not one the assertion names"
                )));
            }
            (Some(asked), _) => vec![asked],
            (None, Some(named)) => named.clone(),
            (None, None) => Vec::new(),
        };
        let user = &subject.user;
        if subject.kind == SubjectType::User {
            if !settings.admission.admits(&user.identity()) {
                return Err(refuse(format!(
                    "{} is not allowed to use this gateway",
                    user.login
                )));
            }
            if !crate::auth::identity::pin_login(state, user).await? {
                return Err(refuse(format!(
                    "the name {} belongs to another account on this gateway",
                    user.login
                )));
            }
            if settings.mfa_required && !subject.amr.iter().any(|m| m == "mfa") {
                return Err(refuse(
                    "this gateway requires a second factor, and the assertion does not say one was used (amr)"
                        .into(),
                ));
            }
        }
        let issuer_scopes = verified.issuer.scopes.as_ref().map(|s| s.join(" "));
        let who = Identity::of_subject(
            &user.id,
            &user.login,
            user.email.as_deref(),
            &user.groups,
            subject.kind,
        );
        let (scope, withheld) = grant_scope(
            state,
            param(form, "scope"),
            subject.scope.as_deref().or(issuer_scopes.as_deref()),
            &[
                subject.scope.as_deref().map(Scope::parse),
                issuer_scopes.as_deref().map(Scope::parse),
            ],
            &who,
            OAuthError::invalid_grant,
        )?;
        Ok((resources, scope, withheld))
    }
    .await;
    let (resources, scope, withheld) = match outcome {
        Ok(done) => done,
        Err(e) => {
            let client = (subject.kind == SubjectType::User).then_some(subject.client_id.as_str());
            let issuer = &verified.issuer.issuer;
            return Err(refused(state, req, client, issuer, Some(&subject.user.id), e).await);
        }
    };
    issue(
        state,
        req,
        Direct {
            user: subject.user,
            kind: subject.kind,
            client_id: subject.client_id,
            scope: scope.to_string(),
            resources,
            amr: subject.amr,
            grant_type: JWT_BEARER,
            withheld,
            once: Some(Once {
                issuer: &verified.issuer.issuer,
                jti: &verified.jti,
                exp: verified.exp,
            }),
            issuer: Some(&verified.issuer.issuer),
        },
    )
    .await
}
