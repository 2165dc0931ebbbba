//! Protocol values parsed at the edge: the PKCE code challenge (RFC 7636) and the resource a
//! token is for (RFC 8707). Handlers get these types, never the raw parameter.

use subtle::ConstantTimeEq;

use crate::config::Settings;
use crate::token::sha256_b64url;

/// An S256 code challenge (the only method we accept): 43 base64url characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeChallenge(String);

impl CodeChallenge {
    /// `code_challenge` and `code_challenge_method` of an authorization request; the error
    /// is the `invalid_request` description.
    pub fn parse(challenge: Option<&str>, method: Option<&str>) -> Result<Self, &'static str> {
        let Some(challenge) = challenge else {
            return Err("PKCE is required: send code_challenge with method S256");
        };
        match method {
            Some("S256") => {}
            Some("plain") => return Err("code_challenge_method plain is not allowed; use S256"),
            _ => return Err("code_challenge_method must be S256"),
        }
        let well_formed = challenge.len() == 43
            && challenge
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !well_formed {
            return Err("code_challenge must be 43 base64url characters");
        }
        Ok(Self(challenge.to_string()))
    }

    pub fn into_string(self) -> String {
        self.0
    }

    /// Whether `verifier` (already checked well-formed) is the one `challenge` was made from,
    /// compared in constant time.
    pub fn verifies(challenge: &str, verifier: &str) -> bool {
        let computed = sha256_b64url(verifier.as_bytes());
        bool::from(computed.as_bytes().ct_eq(challenge.as_bytes()))
    }
}

/// RFC 7636 §4.1: a code verifier is 43–128 unreserved characters.
pub fn valid_verifier(verifier: &str) -> bool {
    (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// The resource a token is for (RFC 8707), in canonical form: one of our `RESOURCE_HOSTS`,
/// at `RESOURCE_PATH`, without query or fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource(String);

impl Resource {
    /// The error is the `invalid_target` description.
    pub fn parse(settings: &Settings, resource: &str) -> Result<Self, String> {
        let url = url::Url::parse(resource)
            .map_err(|_| format!("resource {resource:?} is not an absolute URI"))?;
        if !matches!(url.scheme(), "http" | "https")
            || url.fragment().is_some()
            || url.query().is_some()
        {
            return Err("resource must be an http(s) URI without query or fragment".into());
        }
        let host = url.host_str().unwrap_or("").to_ascii_lowercase();
        let host_port = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.clone(),
        };
        if !settings
            .resource_hosts
            .iter()
            .any(|p| p.matches(&host_port))
        {
            return Err(format!(
                "{host} is not a resource this server issues tokens for"
            ));
        }
        let path = match url.path() {
            "" => "/",
            p if p.len() > 1 => p.trim_end_matches('/'),
            p => p,
        };
        if path != settings.resource_path {
            return Err(format!(
                "resource path {path:?} is not the MCP endpoint {:?}",
                settings.resource_path
            ));
        }
        Ok(Self(format!("{}://{}{}", url.scheme(), host_port, path)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}
