//! Assertions from trusted issuers (`[[trusted_issuer]]`), presented with the JWT bearer
//! grant (RFC 7523 §2.1) at `/token`: an enterprise IdP's Identity Assertion JWT
//! Authorization Grant (draft-ietf-oauth-identity-assertion-authz-grant, MCP's
//! Enterprise-Managed Authorization) or a workload platform's JWT (MCP's Workload Identity
//! Federation). One interface, [`Profile`], with one implementation per kind of issuer
//! ([`id_jag`], [`workload`]); what they share is here: the issuer must be trusted for that
//! kind, the signature made by one of its keys with an asymmetric algorithm (its JWK set
//! fetched over https with the metadata-document fetcher's SSRF guard, cached, refetched once
//! for an unknown `kid`), `aud` one the issuer is configured for, `exp` ahead, `iat` not in the
//! future, a `jti` to spend once. Every refusal is `invalid_grant`; an issuer whose keys cannot
//! be fetched right now is a retryable 503.

pub mod id_jag;
pub mod workload;

use std::sync::Arc;

use jsonwebtoken::Validation;
use jsonwebtoken::jwk::JwkSet;
use serde_json::{Map, Value};

use super::cimd::fetch::FetchError;
use super::cimd::unusable_as;
use super::jwks::{Unverified, algorithm_name, decode};
use super::{AuthState, OAuthError, UpstreamUser};
use crate::config::{IssuerKind, KeySource, TrustedIssuer};
use crate::records::ClientRecord;
use crate::token::SubjectType;

/// Clock skew allowed on `exp`, `nbf` and `iat`.
pub const LEEWAY: i64 = 30;

/// An assertion that checked out, before its profile reads the subject.
pub struct Verified<'a> {
    pub issuer: &'a TrustedIssuer,
    pub claims: Map<String, Value>,
    pub jti: String,
    pub exp: i64,
}

/// Who a profile says the assertion is about, and what it allows.
pub struct Subject {
    pub user: UpstreamUser,
    pub kind: SubjectType,
    /// How the subject authenticated (`amr` of the token).
    pub amr: Vec<String>,
    /// The scopes the assertion itself grants at most (`None`: it says nothing).
    pub scope: Option<String>,
    /// The resources it names, already checked to be ours (`None`: it names none).
    pub resources: Option<Vec<String>>,
    /// The client the token is issued to (`client_id` of the token).
    pub client_id: String,
}

/// One kind of assertion issuer: how its JWTs are recognised and what they say.
pub trait Profile {
    /// The issuers this profile reads (`kind` in the configuration).
    const KIND: IssuerKind;
    /// The longest an assertion of this kind may live from now.
    const MAX_LIFETIME: i64;

    /// Whether a JWT with this header `typ` is this profile's.
    fn claims_typ(typ: Option<&str>) -> bool;

    /// The subject of an assertion whose signature, issuer, audience and lifetime held;
    /// `client` is the authenticated client, when the grant has one.
    fn subject(
        state: &AuthState,
        verified: &Verified<'_>,
        client: Option<&ClientRecord>,
    ) -> Result<Subject, OAuthError>;
}

/// `typ` as RFC 7515 §4.1.9 compares it: case aside, without an `application/` prefix.
pub fn media_type(typ: &str) -> String {
    let lower = typ.to_ascii_lowercase();
    lower
        .strip_prefix("application/")
        .unwrap_or(&lower)
        .to_string()
}

/// The `typ` of an ID-JAG.
pub const ID_JAG_TYP: &str = "oauth-id-jag+jwt";

/// Whether `assertion`'s header says it is an ID-JAG (unverified: it picks the profile that
/// then checks everything).
pub fn is_id_jag(assertion: &str) -> bool {
    jsonwebtoken::decode_header(assertion)
        .ok()
        .and_then(|h| h.typ)
        .is_some_and(|t| media_type(&t) == ID_JAG_TYP)
}

/// Checks `assertion` for `P`: its header, issuer, signature, audience, lifetime and `jti`
/// (the `jti` is spent later, with the token it buys).
pub async fn verify<'s, P: Profile>(
    state: &'s AuthState,
    assertion: &str,
) -> Result<Verified<'s>, OAuthError> {
    let refuse = |why: String| OAuthError::invalid_grant(format!("assertion: {why}"));
    let header = jsonwebtoken::decode_header(assertion)
        .map_err(|_| refuse("not a signed JWT with an accepted alg".into()))?;
    if !P::claims_typ(header.typ.as_deref()) {
        return Err(refuse(format!(
            "typ {:?} is not one a {} assertion carries",
            header.typ.as_deref().unwrap_or(""),
            P::KIND.as_str()
        )));
    }
    // Asymmetric only: an HMAC "signature" would be made with a key we would have to share.
    let alg = header.alg;
    if algorithm_name(alg).is_none() {
        return Err(refuse(format!("alg {alg:?} is not accepted")));
    }
    let iss = unverified_claim(assertion, "iss").ok_or_else(|| refuse("no iss".into()))?;
    let issuer = state
        .settings
        .trusted_issuers
        .iter()
        .find(|t| t.issuer == iss)
        .ok_or_else(|| refuse(format!("{iss} is not a trusted issuer")))?;
    if issuer.kind != P::KIND {
        return Err(refuse(format!(
            "{iss} is trusted for {} assertions, not {}",
            issuer.kind.as_str(),
            P::KIND.as_str()
        )));
    }
    let mut validation = Validation::new(alg);
    validation.leeway = LEEWAY as u64;
    validation.validate_nbf = true;
    validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
    validation.set_issuer(&[issuer.issuer.as_str()]);
    validation.set_audience(&issuer.audience);

    let claims: Map<String, Value> = decode(
        assertion,
        alg,
        header.kid.as_deref(),
        &validation,
        |refetch| issuer_keys(state, issuer, refetch),
    )
    .await?
    .map_err(|why| {
        use jsonwebtoken::errors::ErrorKind as K;
        refuse(match why {
            Unverified::NoKey => format!("no key of {iss} fits its alg and kid (an unknown key)"),
            _ => match why.kind() {
                Some(K::ExpiredSignature) => "it has expired",
                Some(K::InvalidAudience) => "aud is not this authorization server",
                Some(K::ImmatureSignature) => "it is not valid yet (nbf)",
                Some(K::MissingRequiredClaim(_)) => "iss, sub, aud and exp are required",
                _ => "the signature does not verify",
            }
            .into(),
        })
    })?;
    let now = state.now();
    let number = |name: &str| claims.get(name).and_then(Value::as_i64);
    let exp = number("exp").ok_or_else(|| refuse("exp is not a number".into()))?;
    let iat = number("iat").ok_or_else(|| refuse("iat is required".into()))?;
    if iat > now + LEEWAY {
        return Err(refuse("iat is in the future".into()));
    }
    if exp > now + P::MAX_LIFETIME {
        return Err(refuse(format!(
            "exp is more than {} s ahead",
            P::MAX_LIFETIME
        )));
    }
    let jti = claims
        .get("jti")
        .and_then(Value::as_str)
        .filter(|j| !j.is_empty() && j.len() <= 256)
        .ok_or_else(|| refuse("jti is required".into()))?
        .to_string();
    Ok(Verified {
        issuer,
        claims,
        jti,
        exp,
    })
}

/// The issuer's signing keys: configured inline, at its `jwks_uri`, or discovered from its
/// metadata (OpenID Connect Discovery, then RFC 8414).
async fn issuer_keys(
    state: &AuthState,
    issuer: &TrustedIssuer,
    refetch: bool,
) -> Result<Arc<JwkSet>, OAuthError> {
    let what = format!("the keys of {}", issuer.issuer);
    let unusable = |e: FetchError| unusable_as(e, &what, OAuthError::invalid_grant);
    let uri = match &issuer.keys {
        KeySource::Inline(set) => {
            return super::cimd::parse_key_set(set.to_string().as_bytes())
                .map(Arc::new)
                .map_err(|e| OAuthError::server_error(format!("{what}: {e}")));
        }
        KeySource::Uri(uri) => uri.clone(),
        KeySource::Discover => discovered_jwks_uri(state, issuer)
            .await
            .map_err(&unusable)?,
    };
    state
        .documents
        .key_set(&uri, refetch)
        .await
        .map_err(unusable)
}

/// `jwks_uri` from the issuer's metadata, which must name the issuer exactly.
async fn discovered_jwks_uri(
    state: &AuthState,
    issuer: &TrustedIssuer,
) -> Result<url::Url, FetchError> {
    let base = issuer.issuer.trim_end_matches('/');
    let mut last = None;
    for well_known in metadata_urls(base) {
        let Ok(url) = url::Url::parse(&well_known) else {
            continue;
        };
        match state.documents.metadata(&url).await {
            Ok(doc) => {
                if doc["issuer"].as_str() != Some(issuer.issuer.as_str()) {
                    return Err(FetchError::definitive(format!(
                        "{well_known} names another issuer"
                    )));
                }
                return doc["jwks_uri"]
                    .as_str()
                    .and_then(|u| url::Url::parse(u).ok())
                    .filter(|u| u.scheme() == "https")
                    .ok_or_else(|| {
                        FetchError::definitive(format!("{well_known} has no https jwks_uri"))
                    });
            }
            Err(e) if e.transient => return Err(e),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| FetchError::definitive("no metadata found")))
}

/// Where an issuer's metadata may be: OpenID Connect Discovery appends to the issuer; RFC
/// 8414 §3.1 inserts before its path.
fn metadata_urls(issuer: &str) -> Vec<String> {
    let mut urls = vec![format!("{issuer}/.well-known/openid-configuration")];
    if let Ok(url) = url::Url::parse(issuer) {
        let path = url.path().trim_end_matches('/');
        let origin = &issuer[..issuer.len() - url.path().trim_end_matches('/').len()];
        urls.push(format!(
            "{}/.well-known/oauth-authorization-server{path}",
            origin.trim_end_matches('/')
        ));
    }
    urls
}

/// A claim of a JWT, unverified (to find whose keys verify it).
pub fn unverified_claim(jwt: &str, name: &str) -> Option<String> {
    use base64::Engine;
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    claims[name].as_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_is_looked_for_where_both_standards_put_it() {
        assert_eq!(
            metadata_urls("https://idp.example.com"),
            [
                "https://idp.example.com/.well-known/openid-configuration",
                "https://idp.example.com/.well-known/oauth-authorization-server"
            ]
        );
        assert_eq!(
            metadata_urls("https://login.example.com/tenant/v2.0"),
            [
                "https://login.example.com/tenant/v2.0/.well-known/openid-configuration",
                "https://login.example.com/.well-known/oauth-authorization-server/tenant/v2.0"
            ]
        );
    }

    #[test]
    fn typ_compares_as_a_media_type() {
        assert_eq!(media_type("application/OAuth-ID-JAG+JWT"), ID_JAG_TYP);
        assert_eq!(media_type("JWT"), "jwt");
    }
}
