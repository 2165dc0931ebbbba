//! Client metadata (RFC 7591 §2), validated the same way for a registration (`POST
//! /register`, `PUT /register/{id}`) and for a Client ID Metadata Document: redirect URIs by
//! the rules of [`crate::policy::redirect`], the token endpoint auth methods the caller
//! allows, grant and response types, scopes we support, and the texts shown on our pages
//! (bounded, no control characters, no bidirectional controls).

use serde::Deserialize;

use super::OAuthError;
use crate::policy::{Scope, is_scope_token, validate_redirect_uri};
use crate::records::ClientRecord;

/// The JWT bearer grant (RFC 7523), which ID-JAGs are presented with.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

const MAX_TEXT: usize = 512;
const MAX_REDIRECT_URIS: usize = 20;
const MAX_CONTACTS: usize = 10;

/// Client metadata as a client sends it.
#[derive(Debug, Default, Deserialize)]
pub struct ClientMetadata {
    pub client_id: Option<String>,
    pub redirect_uris: Option<Vec<String>>,
    pub token_endpoint_auth_method: Option<String>,
    pub grant_types: Option<Vec<String>>,
    pub response_types: Option<Vec<String>>,
    pub client_name: Option<String>,
    pub client_uri: Option<String>,
    pub logo_uri: Option<String>,
    pub scope: Option<String>,
    pub contacts: Option<Vec<String>>,
    pub software_id: Option<String>,
    pub software_version: Option<String>,
    /// RFC 9449 §5.2: every token request of this client carries a DPoP proof.
    pub dpop_bound_access_tokens: Option<bool>,
}

/// Unicode's bidirectional formatting characters (embeddings, overrides, isolates, marks).
pub fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}')
}

/// How a registering client may authenticate at `/token`, the first the default.
const REGISTRATION_AUTH_METHODS: &[&str] = &["client_secret_basic", "client_secret_post", "none"];

/// Validated metadata, with RFC 7591 defaults applied; `scopes_supported` is what a client
/// may register.
pub fn validate(
    metadata: ClientMetadata,
    scopes_supported: &[String],
) -> Result<ValidMetadata, OAuthError> {
    validate_for(metadata, scopes_supported, REGISTRATION_AUTH_METHODS)
}

/// [`validate`] with the token endpoint auth methods allowed, the first the default.
pub fn validate_for(
    metadata: ClientMetadata,
    scopes_supported: &[String],
    auth_methods: &[&str],
) -> Result<ValidMetadata, OAuthError> {
    let grant_types = metadata
        .grant_types
        .unwrap_or_else(|| vec!["authorization_code".into(), "refresh_token".into()]);
    let redirects = grant_types.iter().any(|g| g == "authorization_code");
    let redirect_uris = metadata.redirect_uris.unwrap_or_default();
    if redirect_uris.is_empty() && redirects {
        return Err(OAuthError::invalid_redirect_uri(
            "redirect_uris is required",
        ));
    }
    if redirect_uris.len() > MAX_REDIRECT_URIS {
        return Err(OAuthError::invalid_redirect_uri("too many redirect_uris"));
    }
    for uri in &redirect_uris {
        if uri.len() > 2048 {
            return Err(OAuthError::invalid_redirect_uri("redirect URI too long"));
        }
        validate_redirect_uri(uri).map_err(OAuthError::invalid_redirect_uri)?;
    }
    let method = metadata
        .token_endpoint_auth_method
        .unwrap_or_else(|| auth_methods.first().copied().unwrap_or("none").into());
    if !auth_methods.contains(&method.as_str()) {
        return Err(OAuthError::invalid_client_metadata(format!(
            "token_endpoint_auth_method {method:?} is not supported"
        )));
    }
    // client_credentials is never registered: only the operator creates such clients. The
    // JWT bearer grant (ID-JAG) needs a client that authenticates.
    let confidential = method != "none";
    if let Some(bad) = grant_types.iter().find(|g| {
        !(matches!(g.as_str(), "authorization_code" | "refresh_token")
            || (confidential && g.as_str() == JWT_BEARER))
    }) {
        return Err(OAuthError::invalid_client_metadata(format!(
            "grant_types may contain only authorization_code, refresh_token and (for a client \
             that authenticates) {JWT_BEARER}, not {bad:?}"
        )));
    }
    if grant_types.is_empty() {
        return Err(OAuthError::invalid_client_metadata(
            "grant_types must name at least one grant",
        ));
    }
    let response_types = metadata.response_types.unwrap_or_else(|| {
        if redirects {
            vec!["code".into()]
        } else {
            Vec::new()
        }
    });
    if response_types.iter().any(|r| r != "code") || (redirects && response_types.is_empty()) {
        return Err(OAuthError::invalid_client_metadata(
            "response_types may contain only code",
        ));
    }
    if let Some(scope) = &metadata.scope
        && let Some(s) = Scope::parse(scope)
            .first_not(|s| is_scope_token(s) && scopes_supported.iter().any(|x| x == s))
    {
        return Err(OAuthError::invalid_client_metadata(format!(
            "scope {s:?} is not supported"
        )));
    }
    let text = |name: &str, value: Option<String>| -> Result<Option<String>, OAuthError> {
        match value {
            Some(v) if v.len() > MAX_TEXT || v.chars().any(char::is_control) => {
                Err(OAuthError::invalid_client_metadata(format!(
                    "{name} is too long or has control characters"
                )))
            }
            // A name that reorders the text around it could make the consent page say
            // something else than it does (U+202E turns "nimda" into "admin").
            Some(v) if v.chars().any(is_bidi_control) => Err(OAuthError::invalid_client_metadata(
                format!("{name} has bidirectional control characters"),
            )),
            other => Ok(other.filter(|v| !v.is_empty())),
        }
    };
    let web_uri = |name: &str, value: Option<String>| -> Result<Option<String>, OAuthError> {
        let value = text(name, value)?;
        if let Some(v) = &value {
            let ok = url::Url::parse(v).is_ok_and(|u| matches!(u.scheme(), "https" | "http"));
            if !ok {
                return Err(OAuthError::invalid_client_metadata(format!(
                    "{name} must be an http(s) URL"
                )));
            }
        }
        Ok(value)
    };
    Ok(ValidMetadata {
        redirect_uris,
        token_endpoint_auth_method: method,
        grant_types,
        response_types,
        client_name: text("client_name", metadata.client_name)?,
        client_uri: web_uri("client_uri", metadata.client_uri)?,
        logo_uri: web_uri("logo_uri", metadata.logo_uri)?,
        scope: text("scope", metadata.scope)?,
        contacts: {
            let contacts = metadata.contacts.unwrap_or_default();
            if contacts.len() > MAX_CONTACTS {
                return Err(OAuthError::invalid_client_metadata(format!(
                    "contacts may list at most {MAX_CONTACTS} addresses"
                )));
            }
            contacts
                .into_iter()
                .map(|c| text("contacts", Some(c)))
                .filter_map(Result::transpose)
                .collect::<Result<Vec<_>, _>>()?
        },
        software_id: text("software_id", metadata.software_id)?,
        software_version: text("software_version", metadata.software_version)?,
        dpop_bound_access_tokens: metadata.dpop_bound_access_tokens.unwrap_or(false),
    })
}

/// Registration metadata that passed [`validate`].
pub struct ValidMetadata {
    redirect_uris: Vec<String>,
    token_endpoint_auth_method: String,
    grant_types: Vec<String>,
    response_types: Vec<String>,
    client_name: Option<String>,
    client_uri: Option<String>,
    logo_uri: Option<String>,
    scope: Option<String>,
    contacts: Vec<String>,
    software_id: Option<String>,
    software_version: Option<String>,
    dpop_bound_access_tokens: bool,
}

impl ValidMetadata {
    /// A public client: it authenticates with `none` (PKCE alone).
    pub fn is_public(&self) -> bool {
        self.token_endpoint_auth_method == "none"
    }

    /// A new record of this metadata for `client_id`: no secret and no registration token,
    /// issued at 0, never expiring, from no address; the caller sets what its kind of client
    /// has of those.
    pub fn into_record(self, client_id: String) -> ClientRecord {
        let mut record = ClientRecord {
            client_id,
            ..ClientRecord::default()
        };
        self.apply(&mut record);
        record
    }

    pub fn apply(self, record: &mut ClientRecord) {
        record.redirect_uris = self.redirect_uris;
        record.token_endpoint_auth_method = self.token_endpoint_auth_method;
        record.grant_types = self.grant_types;
        record.response_types = self.response_types;
        record.client_name = self.client_name;
        record.client_uri = self.client_uri;
        record.logo_uri = self.logo_uri;
        record.scope = self.scope;
        record.contacts = self.contacts;
        record.software_id = self.software_id;
        record.software_version = self.software_version;
        record.dpop_bound_access_tokens = self.dpop_bound_access_tokens;
    }
}
