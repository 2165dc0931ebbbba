//! Access-token claims: RFC 9068 JWT profile plus the gateway's identity and binding claims.

use serde::{Deserialize, Serialize};

/// `aud` is a string or an array of strings (RFC 7519 §4.1.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        let slice: &[String] = match self {
            Audience::One(a) => std::slice::from_ref(a),
            Audience::Many(v) => v,
        };
        slice.iter().map(String::as_str)
    }

    pub fn contains(&self, value: &str) -> bool {
        self.iter().any(|a| a == value)
    }

    pub fn from_list(mut list: Vec<String>) -> Self {
        if list.len() == 1 {
            Audience::One(list.remove(0))
        } else {
            Audience::Many(list)
        }
    }
}

/// RFC 7800 confirmation claim. `x5t#S256` is RFC 8705's certificate thumbprint, `jkt` the
/// RFC 7638 thumbprint of the client's DPoP key (RFC 9449 §6.1); a token may carry both.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    #[serde(rename = "x5t#S256", default, skip_serializing_if = "Option::is_none")]
    pub x5t_s256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jkt: Option<String>,
}

/// The claims of a gateway access token.
///
/// Tokens of the original gateway lack some of these; everything but `iss`, `sub`, `exp` and
/// `jti` is optional when reading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub sub: String,
    pub aud: Audience,
    pub exp: i64,
    #[serde(default)]
    pub iat: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    pub jti: String,
    #[serde(default)]
    pub client_id: String,
    /// Space-separated scopes (RFC 9068 §2.2.3.1).
    #[serde(default)]
    pub scope: String,
    #[serde(default)]
    pub username: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The user's groups at the upstream, when it names any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Authentication methods (RFC 8176): `github`, and `otp` after a second factor.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub amr: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Confirmation>,
    /// What the subject is: a user (the claim is left out), a client acting as itself
    /// (`client_credentials`), or a workload (a platform's assertion).
    #[serde(default, skip_serializing_if = "SubjectType::is_user")]
    pub subject_type: SubjectType,
    /// Client IP the token was issued to, when `TOKEN_BIND_IP` was on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind_ip: Option<String>,
    /// base64url(SHA-256(User-Agent)) at issuance, when `TOKEN_BIND_UA` was on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind_ua: Option<String>,
    /// `TOKEN_CUSTOM_CLAIMS` and anything else not named above.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// Claim names the gateway sets itself; custom claims never override them.
pub const REGISTERED_CLAIMS: &[&str] = &[
    "iss",
    "sub",
    "aud",
    "exp",
    "iat",
    "nbf",
    "jti",
    "client_id",
    "scope",
    "username",
    "email",
    "name",
    "groups",
    "amr",
    "cnf",
    "bind_ip",
    "bind_ua",
    "subject_type",
];

/// What a token's subject is (the `subject_type` claim; absent, a user).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubjectType {
    /// A person, signed in upstream or vouched for by an enterprise IdP (ID-JAG).
    #[default]
    User,
    /// A client acting as itself (`client_credentials`): `sub` is `client:{client_id}`.
    Client,
    /// A workload vouched for by its platform: `sub` is `{issuer}#{subject}`.
    Workload,
}

impl SubjectType {
    pub fn as_str(self) -> &'static str {
        match self {
            SubjectType::User => "user",
            SubjectType::Client => "client",
            SubjectType::Workload => "workload",
        }
    }

    pub fn is_user(&self) -> bool {
        *self == SubjectType::User
    }
}

impl AccessClaims {
    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.scope.split(' ').filter(|s| !s.is_empty())
    }

    pub fn has_amr(&self, method: &str) -> bool {
        self.amr.iter().any(|m| m == method)
    }
}
