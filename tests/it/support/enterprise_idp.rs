//! A stand-in enterprise identity provider (Okta, Entra) for the tests of Enterprise-Managed
//! Authorization: a real HTTPS server on loopback ([`DocumentHost`], its test CA) with
//! OpenID discovery, a JWK set of its own rotating ES256 keys, users who sign in (an ID token
//! for the MCP client), and the RFC 8693 token exchange that turns that ID token into an
//! Identity Assertion JWT Authorization Grant for our authorization server, as Okta's does:
//! client authentication required, the ID token's `aud` must be the client, `audience` and
//! `resource` required, the scope cut to what its admin allows the user. The same server
//! plays a workload platform (a Kubernetes cluster's service-account issuer) when the test
//! trusts it as `kind = workload` and signs with [`EnterpriseIdp::workload_jwt`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine;
use jsonwebtoken::{Algorithm, Header};
use serde_json::{Value, json};

use super::document_host::{ClientKey, DocumentHost, Request, Route};

pub const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const ID_JAG: &str = "urn:ietf:params:oauth:token-type:id-jag";
pub const ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
/// The MCP client's credentials at the IdP (not at our authorization server).
pub const IDP_CLIENT_ID: &str = "0oa-mcp-client";
pub const IDP_CLIENT_SECRET: &str = "idp-client-secret";

/// A user of the IdP: its `sub`, and the scopes its admin lets it take to our server.
#[derive(Clone, Debug)]
struct User {
    sub: String,
    login: String,
    email: String,
    groups: Vec<String>,
    scopes: Vec<String>,
}

#[derive(Default)]
struct Inner {
    /// Newest last; the newest signs.
    keys: Vec<ClientKey>,
    /// ID tokens issued, by token.
    id_tokens: HashMap<String, User>,
    /// Which client id at our authorization server this MCP client has (the IdP admin's
    /// mapping, made out of band).
    as_client_id: String,
    /// How many exchanges it answered.
    exchanges: usize,
}

pub struct EnterpriseIdp {
    pub host: DocumentHost,
    pub issuer: String,
    inner: Arc<Mutex<Inner>>,
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

fn error(status: u16, code: &str, description: &str) -> Route {
    let mut route = Route::json(
        &json!({"error": code, "error_description": description}),
        "no-store",
    );
    route.status = status;
    route
}

impl EnterpriseIdp {
    pub async fn start() -> Self {
        let host = DocumentHost::start().await;
        let issuer = host.url("");
        let inner = Arc::new(Mutex::new(Inner {
            keys: vec![ClientKey::generate("idp-key-1")],
            ..Inner::default()
        }));
        let idp = EnterpriseIdp {
            issuer: issuer.clone(),
            host,
            inner,
        };
        idp.host.set(
            "/.well-known/openid-configuration",
            Route::json(
                &json!({
                    "issuer": issuer,
                    "authorization_endpoint": format!("{issuer}/authorize"),
                    "token_endpoint": format!("{issuer}/token"),
                    "jwks_uri": format!("{issuer}/jwks"),
                    "grant_types_supported": ["authorization_code", TOKEN_EXCHANGE],
                    "identity_chaining_requested_token_types_supported": [ID_JAG],
                    "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
                }),
                "max-age=300",
            ),
        );
        idp.publish_keys();
        let (inner, issuer) = (idp.inner.clone(), idp.issuer.clone());
        idp.host.handle(
            "/token",
            Arc::new(move |req: &Request| exchange(&inner, &issuer, req)),
        );
        idp
    }

    /// Our authorization server's client id for the MCP client (the IdP admin's mapping).
    pub fn map_client(&self, as_client_id: &str) {
        self.inner.lock().expect("idp").as_client_id = as_client_id.to_string();
    }

    fn publish_keys(&self) {
        let keys: Vec<Value> = self
            .inner
            .lock()
            .expect("idp")
            .keys
            .iter()
            .map(ClientKey::jwk)
            .collect();
        self.host
            .set("/jwks", Route::json(&json!({"keys": keys}), "max-age=3600"));
    }

    /// A new signing key, published beside the old one (which stays until retired).
    pub fn rotate(&self) {
        {
            let mut inner = self.inner.lock().expect("idp");
            let n = inner.keys.len() + 1;
            inner
                .keys
                .push(ClientKey::generate(&format!("idp-key-{n}")));
        }
        self.publish_keys();
    }

    /// The JWKS requests the IdP answered.
    pub fn jwks_fetches(&self) -> usize {
        self.host.hits("/jwks")
    }

    pub fn exchanges(&self) -> usize {
        self.inner.lock().expect("idp").exchanges
    }

    /// `login` signs in (with its admin allowing it `scopes`): its ID token for the MCP
    /// client, and its `sub`.
    pub fn sign_in(&self, login: &str, groups: &[&str], scopes: &[&str]) -> (String, String) {
        let user = User {
            sub: format!("00u{login}"),
            login: login.to_string(),
            email: format!("{login}@corp.example"),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
        };
        let t = now();
        let id_token = self.sign(
            Some("JWT"),
            &json!({
                "iss": self.issuer, "sub": user.sub, "aud": IDP_CLIENT_ID,
                "iat": t, "exp": t + 3600, "email": user.email, "email_verified": true,
                "preferred_username": user.login,
            }),
        );
        let sub = user.sub.clone();
        self.inner
            .lock()
            .expect("idp")
            .id_tokens
            .insert(id_token.clone(), user);
        (id_token, sub)
    }

    /// `claims` signed by the IdP's newest key, with `typ` (none: no `typ`).
    pub fn sign(&self, typ: Option<&str>, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.typ = typ.map(str::to_string);
        let inner = self.inner.lock().expect("idp");
        inner.keys.last().expect("a key").sign(header, claims)
    }

    /// An ID-JAG as the exchange would issue it for `sub` (`client_id` the mapped one, for
    /// our issuer `aud` and `resource`), with `changes` merged over those claims (a `null`
    /// removes one).
    pub fn id_jag(&self, sub: &str, aud: &str, resource: &str, changes: Value) -> String {
        let t = now();
        let client_id = self.inner.lock().expect("idp").as_client_id.clone();
        let mut claims = json!({
            "iss": self.issuer, "sub": sub, "aud": aud, "client_id": client_id,
            "jti": uuid::Uuid::new_v4().to_string(), "iat": t, "exp": t + 300,
            "resource": resource, "scope": "mcp",
            "email": format!("{}@corp.example", sub.trim_start_matches("00u")),
            "email_verified": true,
            "preferred_username": sub.trim_start_matches("00u"),
        });
        merge(&mut claims, changes);
        self.sign(Some("oauth-id-jag+jwt"), &claims)
    }

    /// A workload's JWT as a Kubernetes API server signs a projected service-account token:
    /// `typ: JWT`, `sub` the service account, `aud` what the pod asked for, the
    /// `kubernetes.io` claims, with `changes` merged over them.
    pub fn workload_jwt(
        &self,
        namespace: &str,
        account: &str,
        aud: &str,
        changes: Value,
    ) -> String {
        let t = now();
        let mut claims = json!({
            "iss": self.issuer,
            "sub": format!("system:serviceaccount:{namespace}:{account}"),
            "aud": [aud], "iat": t, "nbf": t, "exp": t + 600,
            "jti": uuid::Uuid::new_v4().to_string(),
            "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": account, "uid": "7f1a"}},
        });
        merge(&mut claims, changes);
        self.sign(Some("JWT"), &claims)
    }

    /// The exchange a client makes (RFC 8693, credentials in the form as the MCP SDKs send
    /// them): the ID-JAG, or the IdP's error.
    pub async fn exchange(
        &self,
        id_token: &str,
        audience: &str,
        resource: &str,
        scope: Option<&str>,
    ) -> Result<String, Value> {
        let http = reqwest::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(&std::fs::read(&self.host.ca_file).expect("CA"))
                    .expect("CA PEM"),
            )
            .build()
            .expect("client");
        let mut form = vec![
            ("grant_type", TOKEN_EXCHANGE),
            ("requested_token_type", ID_JAG),
            ("subject_token", id_token),
            ("subject_token_type", ID_TOKEN),
            ("audience", audience),
            ("resource", resource),
            ("client_id", IDP_CLIENT_ID),
            ("client_secret", IDP_CLIENT_SECRET),
        ];
        if let Some(scope) = scope {
            form.push(("scope", scope));
        }
        let answer: Value = http
            .post(format!("{}/token", self.issuer))
            .form(&form)
            .send()
            .await
            .expect("IdP answers")
            .json()
            .await
            .expect("IdP JSON");
        match answer["access_token"].as_str() {
            Some(jag) if answer["issued_token_type"] == ID_JAG => Ok(jag.to_string()),
            _ => Err(answer),
        }
    }

    /// Settings that make the gateway trust this IdP as `kind` (and its test CA).
    pub fn trust(&self, kind: &str) -> Vec<(&'static str, String)> {
        vec![
            ("TRUSTED_ISSUER", self.issuer.clone()),
            ("TRUSTED_ISSUER_KIND", kind.to_string()),
            (
                "CIMD_TEST_LOOPBACK_CA",
                self.host.ca_file.to_string_lossy().to_string(),
            ),
        ]
    }
}

/// `changes` over `claims`: each member replaces, `null` removes.
fn merge(claims: &mut Value, changes: Value) {
    if let (Some(c), Some(changes)) = (claims.as_object_mut(), changes.as_object()) {
        for (k, v) in changes {
            if v.is_null() {
                c.remove(k);
            } else {
                c.insert(k.clone(), v.clone());
            }
        }
    }
}

/// `POST /token`: the RFC 8693 exchange of an ID token for an ID-JAG.
fn exchange(inner: &Arc<Mutex<Inner>>, issuer: &str, req: &Request) -> Route {
    if req.method != "POST" {
        return error(405, "invalid_request", "POST only");
    }
    let form = req.form();
    let get = |name: &str| form.get(name).map(String::as_str).unwrap_or("");
    let (id, secret) = match req
        .header("authorization")
        .and_then(|h| h.strip_prefix("Basic "))
    {
        Some(b) => {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
                .and_then(|d| String::from_utf8(d).ok())
                .unwrap_or_default();
            let (i, s) = decoded.split_once(':').unwrap_or(("", ""));
            (i.to_string(), s.to_string())
        }
        None => (
            get("client_id").to_string(),
            get("client_secret").to_string(),
        ),
    };
    if id != IDP_CLIENT_ID || secret != IDP_CLIENT_SECRET {
        return error(401, "invalid_client", "client authentication failed");
    }
    if get("grant_type") != TOKEN_EXCHANGE {
        return error(400, "unsupported_grant_type", "token exchange only");
    }
    if get("requested_token_type") != ID_JAG || get("subject_token_type") != ID_TOKEN {
        return error(400, "invalid_request", "an ID token for an ID-JAG only");
    }
    let (audience, resource) = (get("audience"), get("resource"));
    if audience.is_empty() || resource.is_empty() {
        return error(400, "invalid_request", "audience and resource are required");
    }
    let mut state = inner.lock().expect("idp");
    let Some(user) = state.id_tokens.get(get("subject_token")).cloned() else {
        return error(
            400,
            "invalid_grant",
            "the subject token is not one this IdP issued",
        );
    };
    let asked: Vec<&str> = get("scope").split_whitespace().collect();
    let scopes: Vec<&str> = if asked.is_empty() {
        user.scopes.iter().map(String::as_str).collect()
    } else {
        asked
            .into_iter()
            .filter(|s| user.scopes.iter().any(|u| u == s))
            .collect()
    };
    let t = now();
    let claims = json!({
        "iss": issuer, "sub": user.sub, "aud": audience, "client_id": state.as_client_id,
        "jti": uuid::Uuid::new_v4().to_string(), "iat": t, "exp": t + 300,
        "resource": resource, "scope": scopes.join(" "),
        "email": user.email, "email_verified": true, "preferred_username": user.login,
        "groups": user.groups, "amr": ["pwd", "mfa"],
    });
    let mut header = Header::new(Algorithm::ES256);
    header.typ = Some("oauth-id-jag+jwt".into());
    let jag = state.keys.last().expect("a key").sign(header, &claims);
    state.exchanges += 1;
    Route::json(
        &json!({"issued_token_type": ID_JAG, "access_token": jag, "token_type": "N_A",
                "expires_in": 300, "scope": scopes.join(" ")}),
        "no-store",
    )
}
