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
    pub verify_port: u16,
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
            verify_port,
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
        wait_for(Duration::from_secs(10), || async {
            http()
                .get(&ready)
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        })
        .await
        .expect("mcp-gateway dev became ready");
        dev
    }
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
    let html = browser
        .get(&login_page)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
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
