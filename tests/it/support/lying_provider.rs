//! A provider that lies: discovery, keys and a token endpoint whose `id_token` is wrong in one
//! way per test case, to show each check refuses the login. Its refresh tokens rotate as
//! strictly as a provider's can (Auth0 with no reuse interval): each works once, and the old one
//! is refused at once with `invalid_grant`; it can take its time (`refresh_delay_ms`) and answer
//! 429 with `Retry-After` (mode `throttle`) or 503 (mode `down`).

use std::sync::Mutex;

use actix_web::{HttpResponse, web};
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use super::gateway::Gateway;
use super::oidc_provider::CLIENT_ID;

/// What `/userinfo` answers, by the mode: the id_token's subject with a verified address, or
/// the lie of the mode.
async fn userinfo(lies: web::Data<Lies>) -> HttpResponse {
    let info = match *lies.mode.lock().unwrap() {
        "split_verified" | "unverified" => {
            json!({"sub": "u1", "email": "alice@example.com", "email_verified": true})
        }
        "userinfo_other_sub" => {
            json!({"sub": "u2", "email": "alice@example.com", "email_verified": true})
        }
        "userinfo_no_sub" => json!({"email": "alice@example.com", "email_verified": true}),
        "no_email" => json!({"sub": "u1", "email": "alice@example.com", "email_verified": true}),
        _ => json!({"sub": "u1"}),
    };
    HttpResponse::Ok().json(info)
}

pub struct Lies {
    pub issuer: String,
    pub mode: Mutex<&'static str>,
    /// Refresh tokens that still work (each works once).
    pub refresh_tokens: Mutex<std::collections::HashSet<String>>,
    /// Refresh-token grants received, answered or not.
    pub refresh_calls: std::sync::atomic::AtomicUsize,
    /// How long a refresh-token grant takes to answer.
    pub refresh_delay_ms: std::sync::atomic::AtomicU64,
    /// The nonce of each authorization request, newest last.
    pub nonces: Mutex<Vec<String>>,
    key: EncodingKey,
    jwk: Value,
    public_pem: String,
}

impl Lies {
    /// Answers in `mode` from the next request on.
    pub fn lie(&self, mode: &'static str) {
        *self.mode.lock().unwrap() = mode;
    }
}

/// The gateway in front of `lies` (our client `CLIENT_ID`, addresses of example.com allowed),
/// with `extra` settings on top.
pub async fn gateway(lies: &Lies, extra: &[(&str, &str)]) -> Gateway {
    let mut env = vec![
        ("UPSTREAM", "oidc"),
        ("OIDC_ISSUER", lies.issuer.as_str()),
        ("OIDC_CLIENT_ID", CLIENT_ID),
        ("OIDC_CLIENT_SECRET", "s"),
        ("ALLOWED_GITHUB_USERS", "<unset>"),
        ("ALLOWED_EMAIL_DOMAINS", "example.com"),
    ];
    env.extend_from_slice(extra);
    Gateway::start(&env).await
}

pub fn start() -> web::Data<Lies> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let raw = key.public_key_raw();
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let jwk = json!({"kty": "EC", "crv": "P-256", "kid": "k1", "use": "sig",
        "x": b64(&raw[1..33]), "y": b64(&raw[33..65])});
    let lies = web::Data::new(Lies {
        issuer,
        mode: Mutex::new("honest"),
        refresh_tokens: Mutex::new(std::collections::HashSet::new()),
        refresh_calls: std::sync::atomic::AtomicUsize::new(0),
        refresh_delay_ms: std::sync::atomic::AtomicU64::new(0),
        nonces: Mutex::new(Vec::new()),
        key: EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap(),
        jwk,
        public_pem: key.public_key_pem(),
    });
    super::serve(listener, lies.clone(), |routes| {
        routes
            .route(
                "/.well-known/openid-configuration",
                web::get().to(discovery),
            )
            .route("/jwks", web::get().to(jwks))
            .route("/authorize", web::get().to(authorize))
            .route("/token", web::post().to(token))
            .route("/userinfo", web::get().to(userinfo));
    });
    lies
}

async fn discovery(lies: web::Data<Lies>) -> HttpResponse {
    let i = &lies.issuer;
    HttpResponse::Ok().json(json!({
        "issuer": i,
        "authorization_endpoint": format!("{i}/authorize"),
        "token_endpoint": format!("{i}/token"),
        "jwks_uri": format!("{i}/jwks"),
        "userinfo_endpoint": format!("{i}/userinfo"),
        "id_token_signing_alg_values_supported": ["ES256"],
    }))
}

async fn jwks(lies: web::Data<Lies>) -> HttpResponse {
    HttpResponse::Ok().json(json!({"keys": [lies.jwk]}))
}

async fn authorize(
    lies: web::Data<Lies>,
    q: web::Query<std::collections::HashMap<String, String>>,
) -> HttpResponse {
    lies.nonces
        .lock()
        .unwrap()
        .push(q.get("nonce").cloned().unwrap_or_default());
    // RFC 9207: honest providers name themselves; a mix-up names another issuer.
    let iss = match *lies.mode.lock().unwrap() {
        "mixup" => "https://evil.example".to_string(),
        _ => lies.issuer.clone(),
    };
    let to = format!(
        "{}?code=lie-{}&state={}&iss={}",
        q["redirect_uri"],
        lies.nonces.lock().unwrap().len(),
        q["state"],
        url::form_urlencoded::byte_serialize(iss.as_bytes()).collect::<String>()
    );
    HttpResponse::Found()
        .insert_header(("Location", to))
        .finish()
}

async fn token(
    lies: web::Data<Lies>,
    form: web::Form<std::collections::HashMap<String, String>>,
) -> HttpResponse {
    let mode = *lies.mode.lock().unwrap();
    let refreshing = form.get("grant_type").map(String::as_str) == Some("refresh_token");
    if refreshing {
        lies.refresh_calls
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let delay = lies
            .refresh_delay_ms
            .load(std::sync::atomic::Ordering::SeqCst);
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
        match mode {
            "throttle" => {
                return HttpResponse::TooManyRequests()
                    .insert_header(("Retry-After", "7"))
                    .json(json!({"error": "too_many_requests"}));
            }
            "down" => return HttpResponse::ServiceUnavailable().finish(),
            _ => {}
        }
        let presented = form.get("refresh_token").cloned().unwrap_or_default();
        if !lies.refresh_tokens.lock().unwrap().remove(&presented) {
            return HttpResponse::BadRequest().json(
                json!({"error": "invalid_grant", "error_description": "unknown or already used"}),
            );
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let nonces = lies.nonces.lock().unwrap().clone();
    let nonce = match mode {
        // The id_token of an earlier login, replayed into this one.
        "replayed" => nonces[nonces.len() - 2].clone(),
        _ => nonces.last().cloned().unwrap_or_default(),
    };
    let mut claims = json!({
        "iss": lies.issuer, "sub": "u1", "aud": CLIENT_ID, "exp": now + 300,
        "iat": now, "nonce": nonce, "email": "alice@example.com", "email_verified": true,
    });
    match mode {
        "wrong_aud" => claims["aud"] = json!("another-client"),
        "wrong_iss" => claims["iss"] = json!("https://evil.example"),
        "no_nonce" => {
            claims.as_object_mut().unwrap().remove("nonce");
        }
        "expired" => {
            claims["exp"] = json!(now - 600);
            claims["iat"] = json!(now - 900);
        }
        "azp" => {
            claims["aud"] = json!([CLIENT_ID, "another-client"]);
            claims["azp"] = json!("another-client");
        }
        "many_aud_no_azp" => claims["aud"] = json!([CLIENT_ID, "another-client"]),
        // The id_token names an address without saying it is verified; userinfo vouches
        // for another one.
        "split_verified" => {
            claims.as_object_mut().unwrap().remove("email_verified");
            claims["email"] = json!("mallory@evil.test");
        }
        "unverified" => claims["email_verified"] = json!(false),
        "no_email" => {
            claims.as_object_mut().unwrap().remove("email");
            claims.as_object_mut().unwrap().remove("email_verified");
        }
        _ => {}
    }
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("k1".into());
    let id_token = match mode {
        // HS256 keyed with the provider's public key: alg confusion.
        "hs256" => {
            header = Header::new(Algorithm::HS256);
            header.kid = Some("k1".into());
            let key = EncodingKey::from_secret(lies.public_pem.as_bytes());
            jsonwebtoken::encode(&header, &claims, &key).unwrap()
        }
        "none" => {
            let b64 = |v: &Value| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .encode(serde_json::to_vec(v).unwrap())
            };
            format!(
                "{}.{}.",
                b64(&json!({"alg": "none", "kid": "k1"})),
                b64(&claims)
            )
        }
        "unknown_kid" => {
            header.kid = Some("not-published".into());
            jsonwebtoken::encode(&header, &claims, &lies.key).unwrap()
        }
        "forged" => {
            let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
            let key = EncodingKey::from_ec_pem(other.serialize_pem().as_bytes()).unwrap();
            jsonwebtoken::encode(&header, &claims, &key).unwrap()
        }
        _ => jsonwebtoken::encode(&header, &claims, &lies.key).unwrap(),
    };
    let refresh_token = format!("rt-{}", mcp_oauth_gateway::token::random_token());
    lies.refresh_tokens
        .lock()
        .unwrap()
        .insert(refresh_token.clone());
    HttpResponse::Ok().json(json!({
        "access_token": "upstream-access", "token_type": "Bearer", "expires_in": 300,
        "id_token": id_token, "refresh_token": refresh_token,
    }))
}
