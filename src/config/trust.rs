//! Trusted assertion issuers (`[[trusted_issuer]]`, or `TRUSTED_ISSUER_*` for one): the
//! enterprise identity providers whose Identity Assertion JWT Authorization Grants (ID-JAG)
//! `/token` accepts, and the workload platforms (Kubernetes, CI, SPIFFE) whose JWTs it
//! accepts for a workload, with the rules that decide who may use them and for which scopes.

use serde::Deserialize;

use super::ConfigError;
use super::raw::Raw;
use crate::policy::split_list;

/// What an issuer's assertions stand for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum IssuerKind {
    /// An enterprise IdP's ID-JAGs (`typ: oauth-id-jag+jwt`): a user, for a client.
    #[serde(rename = "id-jag")]
    IdJag,
    /// A workload platform's JWTs: the workload itself, no client, no user.
    #[serde(rename = "workload")]
    Workload,
}

impl IssuerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            IssuerKind::IdJag => "id-jag",
            IssuerKind::Workload => "workload",
        }
    }
}

/// Where an issuer's signing keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// Its `jwks_uri` (https), fetched with the metadata-document fetcher's guard and cached.
    Uri(url::Url),
    /// Discovered from its metadata (`{issuer}/.well-known/openid-configuration`, then
    /// `oauth-authorization-server`).
    Discover,
    /// A JWK Set read at startup (`jwks_file`): platforms whose keys are not served.
    Inline(serde_json::Value),
}

/// One trusted issuer.
#[derive(Debug, Clone, PartialEq)]
pub struct TrustedIssuer {
    /// `iss` exactly.
    pub issuer: String,
    pub kind: IssuerKind,
    pub keys: KeySource,
    /// What `aud` must name (one of): our issuer by default (and, for workloads, our token
    /// endpoint too).
    pub audience: Vec<String>,
    /// Workloads: the `sub` patterns admitted (`*` a wildcard: `system:serviceaccount:prod:*`);
    /// none admits every subject the other rules admit.
    pub subjects: Vec<String>,
    /// Workloads: claims that must hold exactly these values (`kubernetes.io` nested claims as
    /// `a.b` paths).
    pub required_claims: serde_json::Map<String, serde_json::Value>,
    /// The scopes its assertions may give at most; none: any scope (entitlements still apply).
    pub scopes: Option<Vec<String>>,
    /// ID-JAG: the clients (our `client_id`s) that may present its grants; none: any client
    /// that authenticates.
    pub clients: Vec<String>,
}

/// `[[trusted_issuer]]` as written in the TOML file (`issuer` and `kind` are required).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawTrustedIssuer {
    pub issuer: String,
    pub kind: Option<IssuerKind>,
    pub jwks_uri: Option<String>,
    pub jwks_file: Option<String>,
    pub audience: Vec<String>,
    pub subject: Vec<String>,
    pub required_claims: serde_json::Map<String, serde_json::Value>,
    pub scopes: Option<Vec<String>>,
    pub clients: Vec<String>,
}

impl TrustedIssuer {
    /// What `--check-config` says of it: its first line names it, the rest are its rules.
    pub fn describe(&self) -> Vec<String> {
        let keys = match &self.keys {
            KeySource::Uri(uri) => format!("keys from {uri}"),
            KeySource::Discover => "keys from its metadata's jwks_uri".to_string(),
            KeySource::Inline(set) => format!(
                "{} keys from jwks_file",
                set["keys"].as_array().map_or(0, Vec::len)
            ),
        };
        let mut lines = vec![
            format!("{} ({}), {keys}", self.issuer, self.kind.as_str()),
            format!("  aud must be one of: {}", self.audience.join(", ")),
        ];
        match self.kind {
            IssuerKind::IdJag => lines.push(format!(
                "  clients: {}; users: {{issuer}}#{{sub}}, every ALLOWED_* list applies",
                if self.clients.is_empty() {
                    "any that authenticates".to_string()
                } else {
                    self.clients.join(", ")
                }
            )),
            IssuerKind::Workload => {
                lines.push(format!(
                    "  subjects: {}; a workload is {}#{{sub}}",
                    if self.subjects.is_empty() {
                        "any".to_string()
                    } else {
                        self.subjects.join(", ")
                    },
                    self.issuer
                ));
                for (claim, value) in &self.required_claims {
                    lines.push(format!("  required claim: {claim} = {value}"));
                }
            }
        }
        lines.push(format!(
            "  scopes at most: {}",
            self.scopes
                .as_ref()
                .map_or("any (entitlements apply)".to_string(), |s| s.join(" "))
        ));
        lines
    }

    /// Whether `subject` is one this (workload) issuer admits.
    pub fn admits_subject(&self, subject: &str) -> bool {
        self.subjects.is_empty() || self.subjects.iter().any(|p| glob(p, subject))
    }

    /// The required claims `claims` lacks or holds otherwise, by name.
    pub fn unmet_claim<'a>(&'a self, claims: &serde_json::Value) -> Option<&'a str> {
        self.required_claims.iter().find_map(|(path, expected)| {
            (lookup(claims, path) != Some(expected)).then_some(path.as_str())
        })
    }
}

/// The claim at `path`: a member of that name, else a dotted path into nested objects whose
/// member names may hold dots themselves (`kubernetes.io.namespace` is `namespace` of the
/// `kubernetes.io` object).
fn lookup<'a>(value: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    if let Some(found) = value.get(path) {
        return Some(found);
    }
    path.match_indices('.').find_map(|(at, _)| {
        value
            .get(&path[..at])
            .and_then(|inner| lookup(inner, &path[at + 1..]))
    })
}

/// `*` matches any run of characters (none included); everything else matches itself.
fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

/// Keys are fetched over https only (on loopback, only with `CIMD_TEST_LOOPBACK_CA`, as
/// metadata documents are).
fn https_url(var: &str, value: &str) -> Result<url::Url, ConfigError> {
    let url = url::Url::parse(value)
        .map_err(|e| ConfigError::new(var, format!("{value:?} is not a URL: {e}")))?;
    if url.scheme() != "https" || url.host_str().is_none() {
        return Err(ConfigError::new(
            var,
            format!("{value:?} must be an https URL"),
        ));
    }
    Ok(url)
}

impl RawTrustedIssuer {
    fn validate(self, var: &str, our_issuer: &str) -> Result<TrustedIssuer, ConfigError> {
        let issuer = self.issuer.trim().to_string();
        if issuer.is_empty() {
            return Err(ConfigError::new(var, "issuer is required"));
        }
        https_url(var, &issuer)?;
        let kind = self
            .kind
            .ok_or_else(|| ConfigError::new(var, "kind is required: id-jag or workload"))?;
        let keys = match (self.jwks_uri, self.jwks_file) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    var,
                    "give jwks_uri or jwks_file, not both",
                ));
            }
            (Some(uri), None) => KeySource::Uri(https_url(var, uri.trim())?),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path.trim()).map_err(|e| {
                    ConfigError::new(var, format!("cannot read jwks_file {path}: {e}"))
                })?;
                let set: serde_json::Value = serde_json::from_str(&text)
                    .map_err(|e| ConfigError::new(var, format!("jwks_file {path}: {e}")))?;
                if !set["keys"].is_array() {
                    return Err(ConfigError::new(
                        var,
                        format!("jwks_file {path} is not a JWK Set (no \"keys\")"),
                    ));
                }
                KeySource::Inline(set)
            }
            (None, None) => KeySource::Discover,
        };
        let mut audience = self.audience;
        if audience.is_empty() {
            audience.push(our_issuer.to_string());
            if kind == IssuerKind::Workload {
                audience.push(format!("{our_issuer}/token"));
            }
        }
        if kind == IssuerKind::IdJag
            && (!self.subject.is_empty() || !self.required_claims.is_empty())
        {
            return Err(ConfigError::new(
                var,
                "subject and required_claims are rules for workload issuers",
            ));
        }
        if kind == IssuerKind::Workload && !self.clients.is_empty() {
            return Err(ConfigError::new(
                var,
                "clients is a rule for id-jag issuers (workloads present no client)",
            ));
        }
        if let Some(scopes) = &self.scopes
            && let Some(bad) = scopes.iter().find(|s| !crate::policy::is_scope_token(s))
        {
            return Err(ConfigError::new(var, format!("{bad:?} is not a scope")));
        }
        Ok(TrustedIssuer {
            issuer,
            kind,
            keys,
            audience,
            subjects: self.subject,
            required_claims: self.required_claims,
            scopes: self.scopes,
            clients: self.clients,
        })
    }
}

/// Every trusted issuer: the `[[trusted_issuer]]` tables and the one `TRUSTED_ISSUER` names.
pub(super) fn trusted_issuers(
    raw: &Raw,
    our_issuer: &str,
) -> Result<Vec<TrustedIssuer>, ConfigError> {
    let mut out = Vec::new();
    for table in raw.trust_tables::<RawTrustedIssuer>()? {
        out.push(table.validate("[[trusted_issuer]]", our_issuer)?);
    }
    if let Some(issuer) = raw.get("TRUSTED_ISSUER") {
        let list = |var: &str| {
            raw.get(var)
                .map(|v| split_list(v).map(String::from).collect())
        };
        let kind = raw.choice(
            "TRUSTED_ISSUER_KIND",
            &[
                ("id-jag", IssuerKind::IdJag),
                ("workload", IssuerKind::Workload),
            ],
        )?;
        let required_claims = match raw.get("TRUSTED_ISSUER_REQUIRED_CLAIMS") {
            None => serde_json::Map::new(),
            Some(json) => serde_json::from_str(json).map_err(|e| {
                ConfigError::new(
                    "TRUSTED_ISSUER_REQUIRED_CLAIMS",
                    format!("a JSON object of claim → value: {e}"),
                )
            })?,
        };
        let one = RawTrustedIssuer {
            issuer: issuer.to_string(),
            kind: Some(kind),
            jwks_uri: raw.get("TRUSTED_ISSUER_JWKS_URI").map(String::from),
            jwks_file: raw.get("TRUSTED_ISSUER_JWKS_FILE").map(String::from),
            audience: list("TRUSTED_ISSUER_AUDIENCE").unwrap_or_default(),
            subject: list("TRUSTED_ISSUER_SUBJECT").unwrap_or_default(),
            required_claims,
            scopes: list("TRUSTED_ISSUER_SCOPES"),
            clients: list("TRUSTED_ISSUER_CLIENTS").unwrap_or_default(),
        };
        out.push(one.validate("TRUSTED_ISSUER", our_issuer)?);
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(twice) = out.iter().find(|t| !seen.insert(t.issuer.clone())) {
        return Err(ConfigError::new(
            "[[trusted_issuer]]",
            format!("{} is trusted twice", twice.issuer),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::{glob, lookup};

    #[test]
    fn claim_paths_reach_into_dotted_member_names() {
        let claims = serde_json::json!({"kubernetes.io": {"namespace": "prod",
            "serviceaccount": {"name": "api"}}, "repository": "acme/site"});
        assert_eq!(
            lookup(&claims, "kubernetes.io.namespace"),
            Some(&"prod".into())
        );
        assert_eq!(
            lookup(&claims, "kubernetes.io.serviceaccount.name"),
            Some(&"api".into())
        );
        assert_eq!(lookup(&claims, "repository"), Some(&"acme/site".into()));
        assert_eq!(lookup(&claims, "kubernetes.io.missing"), None);
    }

    #[test]
    fn subject_globs() {
        assert!(glob(
            "system:serviceaccount:prod:*",
            "system:serviceaccount:prod:api"
        ));
        assert!(!glob(
            "system:serviceaccount:prod:*",
            "system:serviceaccount:dev:api"
        ));
        assert!(glob(
            "repo:acme/*:ref:refs/heads/main",
            "repo:acme/site:ref:refs/heads/main"
        ));
        assert!(!glob(
            "repo:acme/*:ref:refs/heads/main",
            "repo:acme/site:ref:refs/heads/dev"
        ));
        assert!(glob("exact", "exact"));
        assert!(!glob("exact", "exactly"));
        assert!(glob("*", ""));
        assert!(!glob("a*b*c", "acb"));
    }
}
