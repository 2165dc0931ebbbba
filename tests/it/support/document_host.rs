//! A host of Client ID Metadata Documents for the tests: a real HTTPS server on loopback with
//! a certificate from a CA made for the test (its PEM is what `CIMD_TEST_LOOPBACK_CA` names).
//! Each path answers what the test set (status, headers, body, a delay), and counts its hits,
//! so a test sees how often the gateway fetched. It has the real hosts' quirks on demand:
//! caching headers, redirects, oversized bodies, 5xx, slowness.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;

use super::gateway::Gateway;

/// Where the test documents' clients redirect.
pub const CALLBACK: &str = "http://127.0.0.1/callback";

/// The client a document names, as the gateway's helpers take it: public, the document's URL
/// its id.
pub fn document_client(client_id: &str) -> Value {
    json!({"client_id": client_id, "token_endpoint_auth_method": "none"})
}

#[derive(Clone, Debug)]
pub struct Route {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub delay: Duration,
    /// Sent chunked, with no Content-Length (a body that only says its size as it comes).
    pub chunked: bool,
}

impl Route {
    pub fn json(body: &Value, cache_control: &str) -> Self {
        Route {
            status: 200,
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("cache-control".into(), cache_control.into()),
            ],
            body: body.to_string().into_bytes(),
            delay: Duration::ZERO,
            chunked: false,
        }
    }

    pub fn status(status: u16) -> Self {
        Route {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            delay: Duration::ZERO,
            chunked: false,
        }
    }

    pub fn redirect(to: &str) -> Self {
        Route {
            status: 302,
            headers: vec![("location".into(), to.into())],
            body: Vec::new(),
            delay: Duration::ZERO,
            chunked: false,
        }
    }

    pub fn chunked(mut self) -> Self {
        self.chunked = true;
        self
    }

    pub fn delayed(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

type Routes = Arc<Mutex<HashMap<String, Route>>>;
type Hits = Arc<Mutex<HashMap<String, usize>>>;

/// A request as a dynamic route sees it.
pub struct Request {
    pub method: String,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as a form.
    pub fn form(&self) -> HashMap<String, String> {
        url::form_urlencoded::parse(&self.body)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }
}

/// A route that answers from the request (a token endpoint).
pub type Handler = Arc<dyn Fn(&Request) -> Route + Send + Sync>;
type Handlers = Arc<Mutex<HashMap<String, Handler>>>;

pub struct DocumentHost {
    pub port: u16,
    /// The test CA's certificate (PEM), for `CIMD_TEST_LOOPBACK_CA`.
    pub ca_file: PathBuf,
    routes: Routes,
    handlers: Handlers,
    hits: Hits,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Drop for DocumentHost {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl DocumentHost {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "mcp-gateway test CA");
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
        let leaf_key = rcgen::KeyPair::generate().expect("leaf key");
        let leaf_params =
            rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .expect("leaf");
        let leaf = leaf_params
            .signed_by(&leaf_key, &ca, &ca_key)
            .expect("leaf certificate");
        let ca_file = dir.path().join("test-ca.pem");
        std::fs::write(&ca_file, ca.pem()).expect("write CA");

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
            )
            .expect("server certificate");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let routes: Routes = Arc::default();
        let handlers: Handlers = Arc::default();
        let hits: Hits = Arc::default();
        let (r, d, h) = (routes.clone(), handlers.clone(), hits.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, routes, handlers, hits) =
                    (acceptor.clone(), r.clone(), d.clone(), h.clone());
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        let _ = serve(tls, routes, handlers, hits).await;
                    }
                });
            }
        });
        DocumentHost {
            port,
            ca_file,
            routes,
            handlers,
            hits,
            task,
            _dir: dir,
        }
    }

    /// `https://localhost:{port}{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.port)
    }

    pub fn set(&self, path: &str, route: Route) {
        self.routes
            .lock()
            .expect("routes")
            .insert(path.to_string(), route);
    }

    /// Answers requests to `path` (any method) with `handler`.
    pub fn handle(&self, path: &str, handler: Handler) {
        self.handlers
            .lock()
            .expect("handlers")
            .insert(path.to_string(), handler);
    }

    /// Serves a public client's document at `path` (its `client_id` is its URL).
    pub fn publish(&self, path: &str, redirect_uris: &[&str], cache_control: &str) -> String {
        let id = self.url(path);
        self.set(
            path,
            Route::json(&public_document(&id, redirect_uris), cache_control),
        );
        id
    }

    /// A public client's document at `path` (redirecting to [`CALLBACK`]) as a route with
    /// `cache_control`, served from now on: its client id, and the route to serve again.
    pub fn serve_document(&self, path: &str, cache_control: &str) -> (String, Route) {
        let id = self.url(path);
        let route = Route::json(&public_document(&id, &[CALLBACK]), cache_control);
        self.set(path, route.clone());
        (id, route)
    }

    /// The gateway, trusting this host's test CA, with `extra` settings.
    pub async fn gateway(&self, extra: &[(&str, &str)]) -> Gateway {
        let ca = self.ca_file.to_string_lossy().to_string();
        let mut env: Vec<(&str, &str)> = vec![("CIMD_TEST_LOOPBACK_CA", ca.as_str())];
        env.extend_from_slice(extra);
        Gateway::start(&env).await
    }

    pub fn hits(&self, path: &str) -> usize {
        self.hits
            .lock()
            .expect("hits")
            .get(path)
            .copied()
            .unwrap_or(0)
    }
}

/// A public client's metadata document, as Claude's or VS Code's.
pub fn public_document(client_id: &str, redirect_uris: &[&str]) -> Value {
    json!({
        "client_id": client_id,
        "client_name": "Document Client",
        "client_uri": "https://example.com",
        "redirect_uris": redirect_uris,
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
    })
}

async fn serve(
    mut tls: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    routes: Routes,
    handlers: Handlers,
    hits: Hits,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = tls.read(&mut chunk).await?;
        if n == 0 || buf.len() > 64 * 1024 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    let mut lines = head.lines();
    let mut first = lines.next().unwrap_or("").split_whitespace();
    let method = first.next().unwrap_or("GET").to_string();
    let path = first.next().unwrap_or("/").to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0)
        .min(1 << 20);
    let mut body = buf[end..].to_vec();
    while body.len() < length {
        let n = tls.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    *hits.lock().expect("hits").entry(path.clone()).or_default() += 1;
    let handler = handlers.lock().expect("handlers").get(&path).cloned();
    let route = match handler {
        Some(handler) => handler(&Request {
            method,
            headers,
            body,
        }),
        None => routes
            .lock()
            .expect("routes")
            .get(&path)
            .cloned()
            .unwrap_or_else(|| Route::status(404)),
    };
    tokio::time::sleep(route.delay).await;
    let length = if route.chunked {
        "transfer-encoding: chunked".to_string()
    } else {
        format!("content-length: {}", route.body.len())
    };
    let mut out = format!(
        "HTTP/1.1 {} X\r\n{length}\r\nconnection: close\r\n",
        route.status
    );
    for (k, v) in &route.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    tls.write_all(out.as_bytes()).await?;
    if route.chunked {
        for piece in route.body.chunks(1024) {
            tls.write_all(format!("{:x}\r\n", piece.len()).as_bytes())
                .await?;
            tls.write_all(piece).await?;
            tls.write_all(b"\r\n").await?;
        }
        tls.write_all(b"0\r\n\r\n").await?;
    } else {
        tls.write_all(&route.body).await?;
    }
    tls.shutdown().await
}

/// An ES256 key a `private_key_jwt` client signs its assertions with.
pub struct ClientKey {
    pub kid: String,
    pem: String,
    x: String,
    y: String,
}

impl ClientKey {
    pub fn generate(kid: &str) -> Self {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("EC key");
        let raw = key.public_key_raw();
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        ClientKey {
            kid: kid.to_string(),
            pem: key.serialize_pem(),
            x: b64(&raw[1..33]),
            y: b64(&raw[33..65]),
        }
    }

    /// The public key as a JWK.
    pub fn jwk(&self) -> Value {
        json!({"kty": "EC", "crv": "P-256", "x": self.x, "y": self.y, "kid": self.kid, "alg": "ES256", "use": "sig"})
    }

    /// The private key, PKCS#8 PEM (what `mcp-gateway login --private-key` reads).
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// `claims` signed with this key under `header` (its `kid` set to this key's).
    pub fn sign(&self, mut header: jsonwebtoken::Header, claims: &Value) -> String {
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(
            &header,
            claims,
            &jsonwebtoken::EncodingKey::from_ec_pem(self.pem.as_bytes()).expect("EC PEM"),
        )
        .expect("sign")
    }

    /// A client assertion (RFC 7523) for `client_id` to `aud`, with these extra claims.
    pub fn assertion(&self, client_id: &str, aud: &str, extra: Value) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs() as i64;
        let mut claims = json!({
            "iss": client_id, "sub": client_id, "aud": aud,
            "iat": now, "exp": now + 120,
            "jti": uuid::Uuid::new_v4().to_string(),
        });
        if let (Some(c), Some(e)) = (claims.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                c.insert(k.clone(), v.clone());
            }
        }
        self.sign(
            jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256),
            &claims,
        )
    }
}
