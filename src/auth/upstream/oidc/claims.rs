//! Who the user is, from the provider's claims: the `id_token` first, userinfo only for the
//! claims it lacks and only for the same subject; the e-mail and whether it is verified from one
//! source; groups exactly as sent; the `OIDC_*_CLAIM` settings mapping them to our identity.

use serde_json::{Map, Value};

use super::{Discovery, MAX_CLAIM_LEN, MAX_GROUPS, OidcClient, TokenResponse};
use crate::auth::upstream::{Login, UpstreamError};
use crate::config::{EmailTrust, OidcSettings};
use crate::records::{UpstreamSession, UpstreamUser};

impl OidcClient {
    pub(super) async fn finish(
        &self,
        discovery: &Discovery,
        mut claims: Map<String, Value>,
        answer: TokenResponse,
        previous: Option<&UpstreamUser>,
    ) -> Result<Login, UpstreamError> {
        let access_token = answer
            .access_token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| UpstreamError::Refused("the token answer has no access_token".into()))?;
        let wants_userinfo = self.settings.userinfo || claims.is_empty();
        if wants_userinfo && let Some(endpoint) = &discovery.userinfo_endpoint {
            let info: Map<String, Value> = self.get_json(endpoint, Some(&access_token)).await?;
            // One account: userinfo speaks of the id_token's subject (or, on a refresh without
            // one, of the subject the grant was made for), or it is not heard at all.
            let expected = match claims.get("sub").and_then(Value::as_str) {
                Some(sub) => Some(sub.to_string()),
                None => previous.and_then(|p| {
                    p.id.strip_prefix(&format!("{}#", self.settings.issuer))
                        .map(str::to_string)
                }),
            };
            let info_sub = info.get("sub").and_then(Value::as_str);
            if info_sub.is_none() || (expected.is_some() && expected.as_deref() != info_sub) {
                return Err(UpstreamError::Refused(
                    "userinfo's sub differs from the id_token's".into(),
                ));
            }
            merge_userinfo(&mut claims, info);
        }
        if claims.is_empty() {
            // A refresh answered without an id_token, and no userinfo to ask: who the user
            // was at the last look stands.
            let user = previous
                .cloned()
                .ok_or_else(|| UpstreamError::Refused("no claims about the user".into()))?;
            return Ok(Login {
                user,
                session: session_of(access_token, answer.refresh_token, answer.expires_in),
            });
        }
        for (name, expected) in &self.settings.required_claims {
            let actual = claims.get(name).map(claim_text);
            if actual.as_deref() != Some(expected.as_str()) {
                return Err(UpstreamError::NotAdmitted(format!(
                    "claim {name:?} is {actual:?}, not {expected:?} (OIDC_REQUIRED_CLAIMS)"
                )));
            }
        }
        let user = map_claims(&self.settings, &claims)?;
        Ok(Login {
            user,
            session: session_of(access_token, answer.refresh_token, answer.expires_in),
        })
    }
}

fn session_of(
    access_token: String,
    refresh_token: Option<String>,
    expires_in: Option<Value>,
) -> UpstreamSession {
    UpstreamSession::new("oidc", access_token, refresh_token, expires_in)
}

/// A claim as text: strings as they are, numbers and booleans written out.
fn claim_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The userinfo claims that fill what the id_token lacks: one trust decision per claim. The
/// e-mail address and whether it is verified come together from one source (the id_token when
/// it names an address, else userinfo): a `true` from one never vouches for the other's
/// address.
fn merge_userinfo(claims: &mut Map<String, Value>, mut info: Map<String, Value>) {
    if claims.contains_key("email") {
        info.remove("email");
        info.remove("email_verified");
    } else if info.contains_key("email") {
        claims.remove("email_verified");
    } else {
        info.remove("email_verified");
    }
    for (k, v) in info {
        claims.entry(k).or_insert(v);
    }
}

/// A name exactly as the provider sent it, when it is usable at all: not empty, no control
/// character or comma (it travels in a comma-separated header), not too long. Never trimmed
/// or otherwise normalised: `"ops "` is another group than `"ops"`.
fn exact(value: &str) -> Option<&str> {
    (!value.is_empty()
        && value.len() <= MAX_CLAIM_LEN
        && !value.chars().any(|c| c.is_control() || c == ','))
    .then_some(value)
}

/// A claim value fit for a header and a store key: no control characters, not too long.
fn clean(value: &str) -> Option<&str> {
    let value = value.trim();
    (!value.is_empty() && value.len() <= MAX_CLAIM_LEN && !value.chars().any(char::is_control))
        .then_some(value)
}

/// Which claims say who the user is, for one issuer.
#[derive(Debug, Clone, Copy)]
pub struct ClaimMapping<'a> {
    pub issuer: &'a str,
    pub subject_claim: &'a str,
    pub username_claim: &'a str,
    pub groups_claim: &'a str,
    pub email_trust: EmailTrust,
}

impl<'a> ClaimMapping<'a> {
    /// The `OIDC_*_CLAIM` settings of the OpenID upstream.
    pub fn of(settings: &'a OidcSettings) -> Self {
        Self {
            issuer: &settings.issuer,
            subject_claim: &settings.subject_claim,
            username_claim: &settings.username_claim,
            groups_claim: &settings.groups_claim,
            email_trust: settings.email_trust,
        }
    }

    /// The defaults for an issuer that is not our upstream (an enterprise IdP's ID-JAGs):
    /// `sub`, `preferred_username`, `groups`, and an e-mail only when `email_verified`.
    pub fn standard(issuer: &'a str) -> Self {
        Self {
            issuer,
            subject_claim: "sub",
            username_claim: "preferred_username",
            groups_claim: "groups",
            email_trust: EmailTrust::Claim,
        }
    }
}

/// Our identity from the provider's claims (`OIDC_SUBJECT_CLAIM`, `OIDC_USERNAME_CLAIM`,
/// `OIDC_GROUPS_CLAIM`, `OIDC_EMAIL_VERIFIED`).
pub fn map_claims(
    settings: &OidcSettings,
    claims: &Map<String, Value>,
) -> Result<UpstreamUser, UpstreamError> {
    map_claims_with(ClaimMapping::of(settings), claims)
}

/// [`map_claims`] by any mapping.
pub fn map_claims_with(
    settings: ClaimMapping<'_>,
    claims: &Map<String, Value>,
) -> Result<UpstreamUser, UpstreamError> {
    let text = |name: &str| -> Option<String> {
        match claims.get(name)? {
            Value::String(s) => clean(s).map(str::to_string),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    };
    let subject = text(settings.subject_claim).ok_or_else(|| {
        UpstreamError::Refused(format!(
            "the provider sent no usable {:?} claim (OIDC_SUBJECT_CLAIM)",
            settings.subject_claim
        ))
    })?;
    let verified = match claims.get("email_verified") {
        Some(Value::Bool(b)) => *b,
        // Some providers (older Cognito, some Auth0 rules) send it as a string.
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    };
    let email = text("email")
        .filter(|e| e.contains('@'))
        .filter(|_| match settings.email_trust {
            EmailTrust::Claim => verified,
            EmailTrust::Always => true,
            EmailTrust::Never => false,
        });
    // The login name is compared and pinned as sent: one with surrounding white space could
    // pass for someone else's after trimming, so it is refused instead.
    let login = match claims.get(settings.username_claim) {
        Some(Value::String(s)) if s.trim() != s => {
            return Err(UpstreamError::NotAdmitted(format!(
                "the provider's {:?} claim has surrounding white space",
                settings.username_claim
            )));
        }
        _ => text(settings.username_claim),
    }
    .or_else(|| email.clone())
    .unwrap_or_else(|| subject.clone());
    let groups = match claims.get(settings.groups_claim) {
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(|g| match g {
                Value::String(s) => exact(s).map(str::to_string),
                _ => None,
            })
            .take(MAX_GROUPS)
            .collect(),
        Some(Value::String(s)) => exact(s).map(|s| vec![s.to_string()]).unwrap_or_default(),
        _ => Vec::new(),
    };
    Ok(UpstreamUser {
        id: format!("{}#{subject}", settings.issuer),
        login,
        name: text("name"),
        email,
        groups,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> OidcSettings {
        let source = crate::config::ConfigSource::from_pairs([
            ("OIDC_ISSUER", "https://idp.example.com/tenant/v2.0"),
            ("OIDC_CLIENT_ID", "gw"),
            ("OIDC_CLIENT_SECRET", "s"),
            ("UPSTREAM", "oidc"),
            ("JWT_ALGORITHM", "HS256"),
            (
                "GATEWAY_JWT_SECRET",
                "0123456789abcdef0123456789abcdef-test",
            ),
        ]);
        crate::config::Settings::load(&source)
            .unwrap()
            .oidc
            .unwrap()
    }

    #[test]
    fn claims_map_to_a_stable_identity() {
        let s = settings();
        let claims: Map<String, Value> = serde_json::from_value(serde_json::json!({
            "sub": "AbC", "preferred_username": "alice", "email": "alice@example.com",
            "email_verified": true, "groups": ["eng", "a,b", "x\ny", 7], "name": "Alice"
        }))
        .unwrap();
        let user = map_claims(&s, &claims).unwrap();
        assert_eq!(user.id, "https://idp.example.com/tenant/v2.0#AbC");
        assert_eq!(user.login, "alice");
        assert_eq!(user.email.as_deref(), Some("alice@example.com"));
        assert_eq!(user.groups, vec!["eng".to_string()]);

        // Unverified: kept out of the identity (no allow-list may match it).
        let mut unverified = claims.clone();
        unverified.insert("email_verified".into(), Value::Bool(false));
        unverified.remove("preferred_username");
        let user = map_claims(&s, &unverified).unwrap();
        assert_eq!(user.email, None);
        assert_eq!(user.login, "AbC");
        // "true" as a string counts.
        unverified.insert("email_verified".into(), Value::String("true".into()));
        assert!(map_claims(&s, &unverified).unwrap().email.is_some());

        let mut no_sub = claims;
        no_sub.remove("sub");
        assert!(map_claims(&s, &no_sub).is_err());
    }
}
