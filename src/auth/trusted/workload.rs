//! Workload assertions (MCP Workload Identity Federation, RFC 7523 §3): a platform (a
//! Kubernetes cluster, a CI system, a SPIFFE trust domain) vouches for one of its workloads
//! with a JWT it already gives it. No client and no user: the issuer's rules decide (`subject`
//! globs, `required_claims`), and the subject is `{issuer}#{sub}`. An ID-JAG is never one
//! (its `typ` says so), nor is an access token (`at+jwt`).

use serde_json::Value;

use super::{Profile, Subject, Verified, media_type};
use crate::auth::{AuthState, OAuthError, UpstreamUser};
use crate::config::IssuerKind;
use crate::records::ClientRecord;
use crate::token::SubjectType;

pub struct Workload;

impl Profile for Workload {
    const KIND: IssuerKind = IssuerKind::Workload;
    /// Platforms hand out tokens for up to a day (a Kubernetes projected token: one hour by
    /// default).
    const MAX_LIFETIME: i64 = 86_400;

    fn claims_typ(typ: Option<&str>) -> bool {
        typ.is_none_or(|t| media_type(t) == "jwt")
    }

    fn subject(
        _state: &AuthState,
        verified: &Verified<'_>,
        _client: Option<&ClientRecord>,
    ) -> Result<Subject, OAuthError> {
        let refuse = |why: String| OAuthError::invalid_grant(format!("workload assertion: {why}"));
        let issuer = verified.issuer;
        let sub = verified
            .claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty() && s.len() <= 512 && !s.chars().any(char::is_control))
            .ok_or_else(|| refuse("sub is required".into()))?;
        if !issuer.admits_subject(sub) {
            return Err(refuse(format!(
                "subject {sub:?} is not one {} admits",
                issuer.issuer
            )));
        }
        let claims = Value::Object(verified.claims.clone());
        if let Some(claim) = issuer.unmet_claim(&claims) {
            return Err(refuse(format!(
                "claim {claim:?} does not hold the required value"
            )));
        }
        let id = format!("{}#{sub}", issuer.issuer);
        Ok(Subject {
            user: UpstreamUser {
                id: id.clone(),
                login: id.clone(),
                name: None,
                email: None,
                groups: Vec::new(),
            },
            kind: SubjectType::Workload,
            amr: vec!["workload".into()],
            scope: None,
            resources: None,
            client_id: id,
        })
    }
}
