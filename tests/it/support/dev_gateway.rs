//! `mcp-gateway dev` as a newcomer runs it (a child process), and the browser steps of its
//! login, shared by the tests that need a whole gateway in one process.

use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use crate::support::gateway::{approve_consent, hidden, location};
use crate::support::helpers::*;

/// Kills the child process when dropped.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub struct DevGateway {
    pub issuer: String,
    pub verify: String,
    _child: ChildGuard,
}

impl DevGateway {
    /// Spawns `mcp-gateway dev` on free loopback ports with only `env` set; hands back its
    /// stdout (the banner) and does not wait.
    pub fn spawn(env: &[(&str, &str)]) -> (Self, ChildStdout) {
        Self::spawn_with(env, &[])
    }

    /// [`DevGateway::spawn`] with more arguments (`--upstream`, `--mcp-listen`).
    pub fn spawn_with(env: &[(&str, &str)], args: &[&str]) -> (Self, ChildStdout) {
        let (auth_port, verify_port) = (free_port(), free_port());
        let mut child = Command::new(bin("mcp-gateway"))
            .args(["dev", "--listen", &format!("127.0.0.1:{auth_port}")])
            .args(["--verify-listen", &format!("127.0.0.1:{verify_port}")])
            .args(args)
            .current_dir(tempfile::tempdir().unwrap().path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("mcp-gateway dev starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let dev = DevGateway {
            issuer: format!("http://127.0.0.1:{auth_port}"),
            verify: format!("http://127.0.0.1:{verify_port}"),
            _child: ChildGuard(child),
        };
        (dev, stdout)
    }

    /// Spawns it and waits until verify is ready.
    pub async fn start(env: &[(&str, &str)]) -> Self {
        Self::start_with(env, &[]).await
    }

    /// [`DevGateway::start`] with more arguments.
    pub async fn start_with(env: &[(&str, &str)], args: &[&str]) -> Self {
        let (dev, stdout) = Self::spawn_with(env, args);
        // Drain the banner so the process never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut { stdout }, &mut std::io::sink()));
        let ready = format!("{}/ready", dev.verify);
        wait_serving(&ready, Duration::from_secs(10))
            .await
            .expect("mcp-gateway dev became ready");
        dev
    }

    /// [`DevGateway::start`] with `--upstream upstream` and its MCP proxy on a free loopback
    /// port: the gateway and that port.
    pub async fn start_upstream(upstream: &str) -> (Self, u16) {
        let mcp_port = free_port();
        let mcp_listen = format!("127.0.0.1:{mcp_port}");
        let args = ["--upstream", upstream, "--mcp-listen", &mcp_listen];
        (Self::start_with(&[], &args).await, mcp_port)
    }

    /// The `mcp-gateway dev` process.
    pub fn process(&mut self) -> &mut Child {
        &mut self._child.0
    }
}

/// A whole login against dev mode for `resource`, as `login`: registration of a public
/// client, authorize, consent, the development login, the code exchange. Returns the client
/// id and the access token.
pub async fn dev_login(issuer: &str, resource: &str, login: &str) -> (String, String) {
    use crate::support::gateway::{browser, pkce, query};
    use serde_json::{Value, json};
    let client: Value = body_json(http().post(format!("{issuer}/register")).json(
        &json!({"redirect_uris": ["http://127.0.0.1:9/cb"], "token_endpoint_auth_method": "none"}),
    ))
    .await;
    let client_id = client["client_id"].as_str().unwrap().to_string();
    let (verifier, challenge) = pkce();
    let mut url = url::Url::parse(&format!("{issuer}/authorize")).unwrap();
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &client_id)
        .append_pair("redirect_uri", "http://127.0.0.1:9/cb")
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256")
        .append_pair("resource", resource);
    let resp = consent_and_dev_login(&browser(), issuer, url.as_str(), login).await;
    assert_eq!(resp.status(), 302);
    let code = query(&url::Url::parse(&location(&resp)).unwrap(), "code").unwrap();
    let tokens: Value = body_json(http().post(format!("{issuer}/token")).form(&[
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("code_verifier", verifier.as_str()),
        ("client_id", client_id.as_str()),
        ("redirect_uri", "http://127.0.0.1:9/cb"),
    ]))
    .await;
    let access = tokens["access_token"]
        .as_str()
        .expect("an access token")
        .to_string();
    (client_id, access)
}

/// From an authorization URL: consent, then the development login as `login`. Returns the
/// final redirect (to the client, or to the second-factor step).
pub async fn consent_and_dev_login(
    browser: &reqwest::Client,
    issuer: &str,
    authorize_url: &str,
    login: &str,
) -> reqwest::Response {
    let resp = approve_consent(browser, issuer, authorize_url).await;
    let login_page = location(&resp);
    assert!(
        login_page.starts_with(&format!("{issuer}/dev/login")),
        "{login_page}"
    );
    let html = body_text(browser.get(&login_page)).await;
    let form = [
        ("state", hidden(&html, "state")),
        ("csrf_token", hidden(&html, "csrf_token")),
        ("login", login.to_string()),
    ];
    browser
        .post(format!("{issuer}/dev/login"))
        .form(&form)
        .send()
        .await
        .unwrap()
}

/// An MCP server stand-in for the dev proxy: `/mcp` answers with the headers it received (as
/// JSON); `/mcp/stream` sends one chunk, waits for the test's signal, then sends the last.
pub async fn echo_upstream() -> (
    String,
    tokio::sync::mpsc::UnboundedSender<()>,
    tokio::task::JoinHandle<()>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let rx = std::sync::Arc::new(tokio::sync::Mutex::new(rx));
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                continue;
            };
            let rx = rx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let mut len = 0;
                while !buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                    match tcp.read(&mut buf[len..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => len += n,
                    }
                }
                let head = String::from_utf8_lossy(&buf[..len]).to_string();
                let mut lines = head.lines();
                let path = lines
                    .next()
                    .and_then(|l| l.split_whitespace().nth(1))
                    .unwrap_or("")
                    .to_string();
                if path.starts_with("/mcp/stream") {
                    let _ = tcp
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
                        .await;
                    let first = "data: first\n\n";
                    let _ = tcp
                        .write_all(format!("{:x}\r\n{first}\r\n", first.len()).as_bytes())
                        .await;
                    let _ = tcp.flush().await;
                    rx.lock().await.recv().await;
                    let last = "data: last\n\n";
                    let _ = tcp
                        .write_all(format!("{:x}\r\n{last}\r\n0\r\n\r\n", last.len()).as_bytes())
                        .await;
                    return;
                }
                let headers: serde_json::Map<String, serde_json::Value> = lines
                    .take_while(|l| !l.is_empty())
                    .filter_map(|l| l.split_once(':'))
                    .map(|(k, v)| {
                        (
                            k.trim().to_ascii_lowercase(),
                            serde_json::Value::from(v.trim()),
                        )
                    })
                    .collect();
                let body = serde_json::json!({"path": path, "headers": headers}).to_string();
                let _ = tcp
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .await;
            });
        }
    });
    (format!("http://127.0.0.1:{port}/mcp"), tx, task)
}
