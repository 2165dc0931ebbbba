//! Identity Assertion JWT Authorization Grants (draft-ietf-oauth-identity-assertion-authz-grant
//! §3 and §4.4; MCP Enterprise-Managed Authorization §7): an enterprise IdP vouches that its
//! user may use this client here. Beyond what [`super::verify`] checks: `typ` is
//! `oauth-id-jag+jwt`, `aud` names exactly one audience, `client_id` is the client that
//! authenticated (and one the issuer's `clients` admits), every `resource` is an MCP resource
//! of ours. The user is `{issuer}#{sub}`, mapped by the OpenID upstream's claim settings when
//! the IdP is that upstream (the same account a browser login gives), else by the standard
//! claims.

use serde_json::Value;

use super::{ID_JAG_TYP, Profile, Subject, Verified, media_type};
use crate::auth::params::Resource;
use crate::auth::upstream::oidc::{ClaimMapping, map_claims_with};
use crate::auth::{AuthState, OAuthError};
use crate::config::IssuerKind;
use crate::records::ClientRecord;
use crate::token::SubjectType;

pub struct IdJag;

/// What `amr` values say a second factor was used (RFC 8176).
const MULTI_FACTOR: &[&str] = &["mfa", "otp", "hwk", "fido", "sc"];

impl Profile for IdJag {
    const KIND: IssuerKind = IssuerKind::IdJag;
    /// IdPs issue them for minutes (the examples: 300 s).
    const MAX_LIFETIME: i64 = 3_600;

    fn claims_typ(typ: Option<&str>) -> bool {
        typ.is_some_and(|t| media_type(t) == ID_JAG_TYP)
    }

    fn subject(
        state: &AuthState,
        verified: &Verified<'_>,
        client: Option<&ClientRecord>,
    ) -> Result<Subject, OAuthError> {
        let refuse = |why: String| OAuthError::invalid_grant(format!("ID-JAG: {why}"));
        let claims = &verified.claims;
        let issuer = verified.issuer;
        let client = client.ok_or_else(|| refuse("the client must authenticate".into()))?;
        if let Some(Value::Array(audiences)) = claims.get("aud")
            && audiences.len() != 1
        {
            return Err(refuse("aud must name exactly one audience".into()));
        }
        if claims.get("client_id").and_then(Value::as_str) != Some(client.client_id.as_str()) {
            return Err(refuse(
                "client_id is not the client that presents it".into(),
            ));
        }
        if !issuer.clients.is_empty() && !issuer.clients.contains(&client.client_id) {
            return Err(refuse(format!(
                "{} may not present grants of {}",
                client.client_id, issuer.issuer
            )));
        }
        let resources = match claims.get("resource") {
            None => None,
            Some(Value::String(one)) => Some(vec![one.clone()]),
            Some(Value::Array(many)) if !many.is_empty() => Some(
                many.iter()
                    .map(|r| r.as_str().map(str::to_string))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| refuse("resource must be URIs".into()))?,
            ),
            Some(_) => return Err(refuse("resource must be a URI or a list of them".into())),
        };
        let resources = resources
            .map(|list| {
                list.iter()
                    .map(|r| {
                        Resource::parse(&state.settings, r)
                            .map(Resource::into_string)
                            .map_err(|e| refuse(format!("resource: {e}")))
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        let mapping = match &state.settings.oidc {
            Some(oidc) if oidc.issuer == issuer.issuer => ClaimMapping::of(oidc),
            _ => ClaimMapping::standard(&issuer.issuer),
        };
        let user = map_claims_with(mapping, claims).map_err(|e| refuse(e.to_string()))?;
        let mut amr = vec!["id-jag".to_string()];
        let multi_factor = claims
            .get("amr")
            .and_then(Value::as_array)
            .is_some_and(|list| {
                list.iter()
                    .filter_map(Value::as_str)
                    .any(|m| MULTI_FACTOR.contains(&m))
            });
        if multi_factor {
            amr.push("mfa".into());
        }
        let scope = match claims.get("scope") {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(refuse("scope must be a string".into())),
        };
        Ok(Subject {
            user,
            kind: SubjectType::User,
            amr,
            scope,
            resources,
            client_id: client.client_id.clone(),
        })
    }
}
