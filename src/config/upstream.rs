//! Who logs users in (`UPSTREAM`: GitHub, any OpenID Connect provider, or both with a chooser
//! page), how an OpenID provider's claims map to our identity (`OIDC_*`), who is admitted
//! (`ALLOWED_*`), and whether the upstream's own access token is handed to MCP servers
//! (`FORWARD_UPSTREAM_TOKEN`).

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;

use super::raw::Raw;
use super::{ConfigError, Secret};
use crate::policy::split_list;
use crate::policy::{Admission, AllowList, HostPattern};

/// An upstream identity provider users can sign in with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Github,
    Oidc,
}

impl Provider {
    /// The name in `UPSTREAM`, in `/callback/{name}` and in `amr`.
    pub fn name(self) -> &'static str {
        match self {
            Provider::Github => "github",
            Provider::Oidc => "oidc",
        }
    }
}

/// How we authenticate to the OpenID provider's token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OidcClientAuth {
    /// HTTP Basic with the client secret (RFC 6749 §2.3.1), the default.
    SecretBasic,
    /// `client_id` and `client_secret` in the form body.
    SecretPost,
    /// A JWT signed with our private key (RFC 7523, OpenID Connect Core §9).
    PrivateKeyJwt,
}

impl OidcClientAuth {
    /// Every method, the default (`client_secret_basic`) first.
    pub const ALL: [Self; 3] = [Self::SecretBasic, Self::SecretPost, Self::PrivateKeyJwt];

    pub fn name(self) -> &'static str {
        match self {
            OidcClientAuth::SecretBasic => "client_secret_basic",
            OidcClientAuth::SecretPost => "client_secret_post",
            OidcClientAuth::PrivateKeyJwt => "private_key_jwt",
        }
    }
}

/// Whether an `email` claim counts as verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmailTrust {
    /// Only with `email_verified: true` (the default; Google, Keycloak, Okta, Auth0 send it).
    Claim,
    /// Always: for providers that only ever release verified addresses and send no
    /// `email_verified` (set it only when that is true of yours).
    Always,
    /// Never: the e-mail is passed on but no allow-list matches it.
    Never,
}

/// `OIDC_*`: one OpenID Connect provider.
#[derive(Debug, Clone)]
pub struct OidcSettings {
    /// `OIDC_ISSUER`: compared exactly with discovery's `issuer` and every `id_token`'s `iss`.
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Option<Secret<String>>,
    pub client_auth: OidcClientAuth,
    /// `OIDC_PRIVATE_KEY_FILE` (PEM; RSA, P-256 or Ed25519) for `private_key_jwt`, with
    /// `OIDC_PRIVATE_KEY_ID` as the JWT's `kid`.
    pub private_key_pem: Option<Secret<Vec<u8>>>,
    pub private_key_id: Option<String>,
    /// `OIDC_SCOPES` (default `openid email profile`; `openid` is always sent).
    pub scopes: Vec<String>,
    /// `OIDC_REFRESH` (default true): ask for `offline_access`, keep the provider's refresh
    /// token (encrypted) and refresh the upstream session at each of our refreshes.
    pub refresh: bool,
    /// `OIDC_DISPLAY_NAME`: what the chooser and consent pages call the provider.
    pub display_name: String,
    /// `OIDC_SUBJECT_CLAIM` (default `sub`; `oid` for Microsoft Entra ID).
    pub subject_claim: String,
    /// `OIDC_USERNAME_CLAIM` (default `preferred_username`, then `email`, then the subject).
    pub username_claim: String,
    /// `OIDC_GROUPS_CLAIM` (default `groups`).
    pub groups_claim: String,
    /// `OIDC_EMAIL_VERIFIED` (default `claim`).
    pub email_trust: EmailTrust,
    /// `OIDC_USERINFO` (default false): also read the userinfo endpoint; its claims fill what
    /// the `id_token` lacks (its `sub` must equal the `id_token`'s).
    pub userinfo: bool,
    /// `OIDC_REQUIRED_CLAIMS`: `claim=value` pairs every `id_token` must carry (`hd=example.com`
    /// for a Google Workspace domain, `tid=…` for one Entra tenant).
    pub required_claims: Vec<(String, String)>,
    /// `OIDC_AUTH_PARAMS`: extra `name=value` parameters for the provider's authorization
    /// request (`hd=example.com`, `prompt=select_account`).
    pub auth_params: Vec<(String, String)>,
    /// `OIDC_TIMEOUT` (default 10 s) for each call to the provider.
    pub timeout: Duration,
}

/// `FORWARD_UPSTREAM_TOKEN`, `UPSTREAM_TOKEN_HEADER`, `UPSTREAM_TOKEN_KEY`.
#[derive(Debug, Clone)]
pub struct UpstreamTokenSettings {
    /// The resource hosts whose MCP servers get the user's upstream access token (empty =
    /// none, the default).
    pub hosts: Vec<HostPattern>,
    /// The header it travels in (default `X-Upstream-Token`).
    pub header: String,
    /// 32 bytes for AES-256-GCM; unset: derived from the signing key (auth and verify must
    /// then share it, as `mcp-gateway dev` does).
    pub key: Option<Secret<[u8; 32]>>,
}

impl UpstreamTokenSettings {
    pub fn forwards_to(&self, host: &str) -> bool {
        self.hosts.iter().any(|p| p.matches(host))
    }

    pub fn enabled(&self) -> bool {
        !self.hosts.is_empty()
    }
}

pub(super) struct Upstreams {
    pub providers: Vec<Provider>,
    pub oidc: Option<OidcSettings>,
    pub admission: Admission,
    pub upstream_token: UpstreamTokenSettings,
}

pub(super) fn upstreams(raw: &Raw) -> Result<Upstreams, ConfigError> {
    let oidc_configured = raw.get("OIDC_ISSUER").is_some();
    let providers = match raw.get("UPSTREAM") {
        Some(list) => {
            let mut providers = Vec::new();
            for name in split_list(list) {
                let provider = match name.to_ascii_lowercase().as_str() {
                    "github" => Provider::Github,
                    "oidc" => Provider::Oidc,
                    other => {
                        return Err(ConfigError::new(
                            "UPSTREAM",
                            format!("{other:?} is not one of github, oidc"),
                        ));
                    }
                };
                if !providers.contains(&provider) {
                    providers.push(provider);
                }
            }
            if providers.is_empty() {
                return Err(ConfigError::new("UPSTREAM", "names no provider"));
            }
            providers
        }
        None => {
            let mut providers = Vec::new();
            if raw.get("GITHUB_CLIENT_ID").is_some() || !oidc_configured {
                providers.push(Provider::Github);
            }
            if oidc_configured {
                providers.push(Provider::Oidc);
            }
            providers
        }
    };
    let oidc = if providers.contains(&Provider::Oidc) {
        Some(oidc(raw)?)
    } else {
        None
    };
    let default_upstream = providers.first().map_or("github", |p| p.name());
    Ok(Upstreams {
        admission: admission(raw, default_upstream)?,
        providers,
        oidc,
        upstream_token: upstream_token(raw)?,
    })
}

fn pairs(raw: &Raw, var: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let Some(list) = raw.get(var) else {
        return Ok(Vec::new());
    };
    split_list(list)
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) if !k.is_empty() && !v.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(ConfigError::new(var, format!("{pair:?} is not name=value"))),
        })
        .collect()
}

fn oidc(raw: &Raw) -> Result<OidcSettings, ConfigError> {
    let issuer = raw
        .get("OIDC_ISSUER")
        .ok_or_else(|| ConfigError::new("OIDC_ISSUER", "required for the OpenID Connect login"))?
        .trim()
        .to_string();
    match url::Url::parse(&issuer) {
        Ok(u)
            if matches!(u.scheme(), "https" | "http")
                && u.host_str().is_some()
                && u.query().is_none()
                && u.fragment().is_none() =>
        {
            if u.scheme() == "http" && !crate::policy::is_loopback(&u) {
                return Err(ConfigError::new(
                    "OIDC_ISSUER",
                    "must be https (plain http only for a loopback test provider)",
                ));
            }
        }
        _ => {
            return Err(ConfigError::new(
                "OIDC_ISSUER",
                format!("{issuer:?} is not an https URL without query or fragment"),
            ));
        }
    }
    let client_id = raw
        .get("OIDC_CLIENT_ID")
        .ok_or_else(|| ConfigError::new("OIDC_CLIENT_ID", "required for the OpenID Connect login"))?
        .to_string();
    let client_secret = raw
        .get("OIDC_CLIENT_SECRET")
        .map(|s| Secret::new(s.to_string()));
    let methods = OidcClientAuth::ALL.map(|method| (method.name(), method));
    let client_auth = raw.choice("OIDC_CLIENT_AUTH_METHOD", &methods)?;
    let private_key_file = raw.get("OIDC_PRIVATE_KEY_FILE").map(PathBuf::from);
    let private_key_pem = match (&private_key_file, client_auth) {
        (Some(path), _) => {
            let pem = std::fs::read(path).map_err(|e| {
                ConfigError::new("OIDC_PRIVATE_KEY_FILE", format!("{}: {e}", path.display()))
            })?;
            if crate::token::assertion_key(&pem).is_none() {
                return Err(ConfigError::new(
                    "OIDC_PRIVATE_KEY_FILE",
                    "not a PEM private key (RSA, P-256 or Ed25519)",
                ));
            }
            Some(Secret::new(pem))
        }
        (None, OidcClientAuth::PrivateKeyJwt) => {
            return Err(ConfigError::new(
                "OIDC_PRIVATE_KEY_FILE",
                "required with OIDC_CLIENT_AUTH_METHOD=private_key_jwt",
            ));
        }
        (None, _) => None,
    };
    if client_auth != OidcClientAuth::PrivateKeyJwt && client_secret.is_none() {
        return Err(ConfigError::new(
            "OIDC_CLIENT_SECRET",
            format!(
                "required with OIDC_CLIENT_AUTH_METHOD={}",
                client_auth.name()
            ),
        ));
    }
    let mut scopes: Vec<String> =
        split_list(raw.get("OIDC_SCOPES").unwrap_or("openid email profile"))
            .map(str::to_string)
            .collect();
    if !scopes.iter().any(|s| s == "openid") {
        scopes.insert(0, "openid".to_string());
    }
    let refresh = raw.bool("OIDC_REFRESH", true)?;
    if refresh && !scopes.iter().any(|s| s == "offline_access") {
        scopes.push("offline_access".to_string());
    }
    let email_trust = raw.choice(
        "OIDC_EMAIL_VERIFIED",
        &[
            ("claim", EmailTrust::Claim),
            ("always", EmailTrust::Always),
            ("never", EmailTrust::Never),
        ],
    )?;
    let claim = |var: &str, default: &str| -> Result<String, ConfigError> {
        let name = raw.get(var).unwrap_or(default).trim().to_string();
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(ConfigError::new(var, "must be one claim name"));
        }
        Ok(name)
    };
    let display_name = raw
        .get("OIDC_DISPLAY_NAME")
        .map(str::to_string)
        .unwrap_or_else(|| {
            url::Url::parse(&issuer)
                .ok()
                .and_then(|u| u.host_str().map(str::to_string))
                .unwrap_or_else(|| "OpenID Connect".to_string())
        });
    let auth_params = pairs(raw, "OIDC_AUTH_PARAMS")?;
    const OURS: &[&str] = &[
        "response_type",
        "client_id",
        "redirect_uri",
        "scope",
        "state",
        "nonce",
        "code_challenge",
        "code_challenge_method",
    ];
    if let Some((name, _)) = auth_params.iter().find(|(k, _)| OURS.contains(&k.as_str())) {
        return Err(ConfigError::new(
            "OIDC_AUTH_PARAMS",
            format!("{name:?} is set by the gateway itself"),
        ));
    }
    Ok(OidcSettings {
        issuer,
        client_id,
        client_secret,
        client_auth,
        private_key_pem,
        private_key_id: raw.get("OIDC_PRIVATE_KEY_ID").map(str::to_string),
        scopes,
        refresh,
        display_name,
        subject_claim: claim("OIDC_SUBJECT_CLAIM", "sub")?,
        username_claim: claim("OIDC_USERNAME_CLAIM", "preferred_username")?,
        groups_claim: claim("OIDC_GROUPS_CLAIM", "groups")?,
        email_trust,
        userinfo: raw.bool("OIDC_USERINFO", false)?,
        required_claims: pairs(raw, "OIDC_REQUIRED_CLAIMS")?,
        auth_params,
        timeout: raw
            .duration("OIDC_TIMEOUT", 10)?
            .max(Duration::from_secs(1)),
    })
}

fn admission(raw: &Raw, default_upstream: &'static str) -> Result<Admission, ConfigError> {
    let users = match (
        raw.get_raw("ALLOWED_USERS"),
        raw.get_raw("ALLOWED_GITHUB_USERS"),
    ) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::new(
                "ALLOWED_USERS",
                "set either ALLOWED_USERS or its older name ALLOWED_GITHUB_USERS, not both",
            ));
        }
        (Some(list), None) | (None, Some(list)) => Some(AllowList::parse(list, default_upstream)),
        (None, None) => None,
    };
    let list = |var: &str| -> Vec<String> {
        raw.get(var)
            .map(|l| split_list(l).map(str::to_string).collect())
            .unwrap_or_default()
    };
    let mut emails = list("ALLOWED_EMAILS");
    for email in &mut emails {
        if !email.contains('@') {
            return Err(ConfigError::new(
                "ALLOWED_EMAILS",
                format!("{email:?} is not an e-mail address"),
            ));
        }
        *email = email.to_ascii_lowercase();
    }
    let email_domains = list("ALLOWED_EMAIL_DOMAINS")
        .iter()
        .map(|d| {
            let d = d.trim_start_matches('@');
            match HostPattern::parse(d) {
                Ok(HostPattern::Any) => Err(
                    "\"*\" would admit every address; use ALLOWED_USERS=* for everyone".to_string(),
                ),
                Ok(p) if d.contains(':') => Err(format!("{p:?}: a mail domain has no port")),
                other => other,
            }
            .map_err(|e| ConfigError::new("ALLOWED_EMAIL_DOMAINS", e))
        })
        .collect::<Result<_, _>>()?;
    Ok(Admission {
        users,
        emails,
        email_domains,
        groups: list("ALLOWED_GROUPS"),
    })
}

fn upstream_token(raw: &Raw) -> Result<UpstreamTokenSettings, ConfigError> {
    let hosts = match raw.get("FORWARD_UPSTREAM_TOKEN").map(str::trim) {
        None => Vec::new(),
        Some(v) if v.eq_ignore_ascii_case("false") || v == "0" || v.eq_ignore_ascii_case("no") => {
            Vec::new()
        }
        Some(v) if v.eq_ignore_ascii_case("true") || v == "1" || v.eq_ignore_ascii_case("yes") => {
            vec![HostPattern::Any]
        }
        Some(list) => split_list(list)
            .map(|h| {
                HostPattern::parse(h).map_err(|e| ConfigError::new("FORWARD_UPSTREAM_TOKEN", e))
            })
            .collect::<Result<_, _>>()?,
    };
    let header = raw
        .get("UPSTREAM_TOKEN_HEADER")
        .unwrap_or("X-Upstream-Token")
        .to_string();
    let valid_name = actix_web::http::header::HeaderName::from_bytes(header.as_bytes()).is_ok();
    let ours = ["authorization", "cookie", "host"]
        .iter()
        .any(|h| header.eq_ignore_ascii_case(h))
        || header.to_ascii_lowercase().starts_with("x-user-")
        || header.to_ascii_lowercase().starts_with("x-auth-");
    if !valid_name || ours {
        return Err(ConfigError::new(
            "UPSTREAM_TOKEN_HEADER",
            format!(
                "{header:?} is not a header name of its own (not Authorization, Cookie, Host, X-User-*, X-Auth-*)"
            ),
        ));
    }
    let key = match raw.get("UPSTREAM_TOKEN_KEY") {
        None => None,
        Some(b64) => Some(Secret::new(key32("UPSTREAM_TOKEN_KEY", b64)?)),
    };
    Ok(UpstreamTokenSettings { hosts, header, key })
}

/// A 32-byte key written in base64 (standard or URL-safe).
pub(super) fn key32(var: &str, b64: &str) -> Result<[u8; 32], ConfigError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(b64.trim()))
        .map_err(|_| ConfigError::new(var, "not base64"))?;
    bytes
        .try_into()
        .map_err(|_| ConfigError::new(var, "must be 32 bytes (openssl rand -base64 32)"))
}
