//! The end-to-end stack the e2e tests share: the built `mcp-gateway-auth` and
//! `mcp-gateway-verify` binaries (one or more verify replicas) on a private `redis-server`, the
//! MCP "everything" server, the fake GitHub (`e2e/fake-github.mjs`), and in front of them one of
//! the proxies we ship a configuration for, run from that configuration as shipped with only
//! addresses substituted:
//!
//! - Traefik: `traefik/traefik.yml` + `traefik/dynamic.yml` (entry point address and file name
//!   substituted; the rest comes from environment variables the dynamic file reads)
//! - Caddy: `caddy/Caddyfile` (environment variables; `default_bind 127.0.0.1` added to the
//!   global options so it listens on loopback only)
//! - nginx: `nginx/mcp-gateway.conf` (listen address, server names and upstream addresses
//!   substituted), included from a minimal nginx.conf that keeps pid, logs and temp files in the
//!   stack's temp folder and runs nginx in the foreground as one process
//!
//! Names without DNS: the MCP host is `localhost`, the authorization server's host `127.0.0.1`,
//! both on the proxy's one port; so ISSUER_URL=http://127.0.0.1:P and the MCP URL is
//! http://localhost:P/mcp. Everything listens on loopback; every wait is bounded; every child
//! process is killed when the stack is dropped, and failures print the children's logs.
//!
//! Needs what `scripts/e2e-deps` installs. Missing pieces fail the test with that hint;
//! `MCP_GATEWAY_SKIP_E2E=1` skips the e2e tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::e2e_flows::run_json_command;
use super::procs::*;
use crate::support::helpers::*;

/// What to start; see [`Stack::builder`].
pub struct StackBuilder {
    proxy: Proxy,
    verify_replicas: usize,
    verify_env: Vec<(String, String)>,
    auth_env: Vec<(String, String)>,
    mcp_server: McpServer,
}

/// The MCP server behind the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum McpServer {
    /// `@modelcontextprotocol/server-everything` (speaks 2025-11-25).
    Everything,
    /// `e2e/mcp-2026-server.mjs` on `@modelcontextprotocol/server` 2.4.0: speaks 2026-07-28
    /// (and 2025-11-25 to older clients), with the tools `echo`, `get-env` and `get-sum`.
    Modern,
}

impl StackBuilder {
    /// Which MCP server the proxy fronts (default: server-everything).
    pub fn mcp_server(mut self, server: McpServer) -> Self {
        self.mcp_server = server;
        self
    }

    /// Several verify processes behind a per-request round-robin balancer
    /// (`e2e/round-robin.mjs`, standing in for a Kubernetes Service): the proxy's one
    /// forwardAuth address reaches them in turn.
    pub fn verify_replicas(mut self, n: usize) -> Self {
        assert!(n >= 1);
        self.verify_replicas = n;
        self
    }

    /// An environment variable for verify only (after, so over, the common ones).
    pub fn verify_env(mut self, name: &str, value: &str) -> Self {
        self.verify_env.push((name.to_string(), value.to_string()));
        self
    }

    /// An environment variable for auth only (after, so over, the common ones).
    pub fn auth_env(mut self, name: &str, value: &str) -> Self {
        self.auth_env.push((name.to_string(), value.to_string()));
        self
    }

    pub async fn start(self) -> Stack {
        Stack::start_with(self).await
    }
}

/// The whole gateway as deployed: a proxy in front of verify, auth and the MCP server.
pub struct Stack {
    pub proxy: Proxy,
    pub issuer: String,
    /// `http://localhost:{proxy_port}/mcp`
    pub mcp_url: String,
    pub proxy_port: u16,
    /// Each verify replica, directly (not through the balancer).
    pub verify_urls: Vec<String>,
    auth_url: String,
    /// What the proxy's forwardAuth calls: the one replica, or the balancer in front of them.
    verify_endpoint: String,
    /// Traefik's forwardAuth base URL: the one replica's TLS listener (HTTP/2, with the shipped
    /// configuration), else `verify_endpoint`.
    pub verify_auth_url: String,
    /// The private CA that signed verify's certificate (`mcp-gateway tls generate`).
    pub verify_tls: mcp_oauth_gateway::tls::Generated,
    procs: Vec<Proc>,
    /// Settings the services and the CLI share.
    common: Vec<(&'static str, String)>,
    pub redis: RedisServer,
    dir: tempfile::TempDir,
}

impl Stack {
    pub fn builder(proxy: Proxy) -> StackBuilder {
        StackBuilder {
            proxy,
            verify_replicas: 1,
            verify_env: Vec::new(),
            auth_env: Vec::new(),
            mcp_server: McpServer::Everything,
        }
    }

    /// Traefik in front of one verify, with the default settings, when the end-to-end tools
    /// (Traefik, and `extra`) are there ([`e2e_enabled`]); `None` when the tests are skipped.
    pub async fn start_if_enabled(extra: &[PathBuf]) -> Option<Stack> {
        let mut tools = vec![Proxy::Traefik.bin()];
        tools.extend_from_slice(extra);
        if !e2e_enabled(&tools) {
            return None;
        }
        Some(Stack::builder(Proxy::Traefik).start().await)
    }

    async fn start_with(opts: StackBuilder) -> Stack {
        let dir = tempfile::tempdir().expect("temp dir");
        let logs = dir.path().to_path_buf();
        let redis = RedisServer::start().await;
        let pport = free_port();
        let issuer = format!("http://127.0.0.1:{pport}");
        let mut procs = Vec::new();

        // The fake GitHub, on a port of its choosing.
        let mut cmd = clean_command(&node22());
        cmd.arg(e2e_dir().join("fake-github.mjs"))
            .arg("0")
            .env("FAKE_GITHUB_LOGIN", "alice")
            .env("FAKE_GITHUB_ID", "1001")
            .env("FAKE_GITHUB_CLIENT_ID", GITHUB_CLIENT_ID)
            .env("FAKE_GITHUB_CLIENT_SECRET", GITHUB_CLIENT_SECRET)
            .env("FAKE_GITHUB_CALLBACK", format!("{issuer}/callback"));
        let mut github = Proc::spawn("fake-github", cmd, &logs);
        let gport = github.listening_port(Duration::from_secs(15)).await;
        procs.push(github);
        let github_url = format!("http://127.0.0.1:{gport}");

        // The gateway services, on Redis, with one signing key.
        let common = vec![
            ("JWT_ALGORITHM", "RS256".to_string()),
            ("JWT_PRIVATE_KEY_B64", rsa_key_b64().to_string()),
            ("ISSUER_URL", issuer.clone()),
            ("REDIS_URL", redis.url()),
            ("RESOURCE_HOSTS", "localhost".to_string()),
            ("ALLOWED_GITHUB_USERS", "alice".to_string()),
            ("LOG_FORMAT", "text".to_string()),
            // The proxies run on loopback: only their X-Forwarded-For counts.
            ("TRUSTED_PROXIES", "127.0.0.1, ::1".to_string()),
            ("RUST_LOG", "info".to_string()),
        ];
        let aport = free_port();
        let mut cmd = clean_command(Path::new(env!("CARGO_BIN_EXE_mcp-gateway-auth")));
        cmd.envs(common.iter().map(|(k, v)| (*k, v.as_str())))
            .env("LISTEN_ADDR", format!("127.0.0.1:{aport}"))
            .env("GITHUB_CLIENT_ID", GITHUB_CLIENT_ID)
            .env("GITHUB_CLIENT_SECRET", GITHUB_CLIENT_SECRET)
            .env(
                "GITHUB_AUTHORIZE_URL",
                format!("{github_url}/login/oauth/authorize"),
            )
            .env(
                "GITHUB_TOKEN_URL",
                format!("{github_url}/login/oauth/access_token"),
            )
            .env("GITHUB_API_URL", &github_url)
            .envs(opts.auth_env.iter().map(|(k, v)| (k, v)));
        let mut auth = Proc::spawn("mcp-gateway-auth", cmd, &logs);
        let auth_url = format!("http://127.0.0.1:{aport}");
        wait_http(&mut auth, &format!("{auth_url}/ready"), Some(200), 20).await;
        procs.push(auth);

        // verify's certificate, as an operator makes it (Traefik's forwardAuth speaks HTTP/2 to
        // the one replica over TLS; the balancer in front of several speaks HTTP/1.1).
        let verify_tls = mcp_oauth_gateway::tls::generate(
            &logs.join("verify-tls"),
            &["127.0.0.1".to_string(), "localhost".to_string()],
        )
        .expect("verify's certificate");
        let mut verify_tls_url = None;
        let mut verify_urls = Vec::new();
        for i in 0..opts.verify_replicas {
            let vport = free_port();
            let mut cmd = clean_command(Path::new(env!("CARGO_BIN_EXE_mcp-gateway-verify")));
            cmd.envs(common.iter().map(|(k, v)| (*k, v.as_str())))
                .envs(opts.verify_env.iter().map(|(k, v)| (k, v)))
                .env("LISTEN_ADDR", format!("127.0.0.1:{vport}"));
            if opts.verify_replicas == 1 {
                let tport = free_port();
                cmd.env("VERIFY_TLS_CERT", &verify_tls.cert.cert)
                    .env("VERIFY_TLS_KEY", &verify_tls.cert.key)
                    .env("VERIFY_TLS_LISTEN_ADDR", format!("127.0.0.1:{tport}"));
                verify_tls_url = Some(format!("https://127.0.0.1:{tport}"));
            }
            let name = match opts.verify_replicas {
                1 => "mcp-gateway-verify".to_string(),
                _ => format!("mcp-gateway-verify-{}", i + 1),
            };
            let mut verify = Proc::spawn(&name, cmd, &logs);
            let verify_url = format!("http://127.0.0.1:{vport}");
            wait_http(&mut verify, &format!("{verify_url}/ready"), Some(200), 20).await;
            procs.push(verify);
            verify_urls.push(verify_url);
        }
        let verify_endpoint = if verify_urls.len() == 1 {
            verify_urls[0].clone()
        } else {
            let mut cmd = clean_command(&node22());
            cmd.arg(e2e_dir().join("round-robin.mjs"))
                .arg("0")
                .args(&verify_urls);
            let mut lb = Proc::spawn("verify-balancer", cmd, &logs);
            let port = lb.listening_port(Duration::from_secs(15)).await;
            procs.push(lb);
            format!("http://127.0.0.1:{port}")
        };

        // The MCP server, unchanged: it knows nothing of OAuth.
        let mport = free_port();
        let mut cmd = clean_command(&node22());
        let name = match opts.mcp_server {
            McpServer::Everything => {
                cmd.arg(server_everything()).arg("streamableHttp");
                "server-everything"
            }
            McpServer::Modern => {
                cmd.arg(e2e_dir().join("mcp-2026-server.mjs"));
                "mcp-2026-server"
            }
        };
        cmd.env("PORT", mport.to_string());
        let mut mcp = Proc::spawn(name, cmd, &logs);
        let mcp_backend = format!("http://127.0.0.1:{mport}");
        // GET /mcp without a session is a 400: any answer means it is up.
        wait_http(&mut mcp, &format!("{mcp_backend}/mcp"), None, 20).await;
        procs.push(mcp);

        let mut stack = Stack {
            proxy: opts.proxy,
            mcp_url: format!("http://localhost:{pport}/mcp"),
            issuer,
            proxy_port: pport,
            verify_urls,
            auth_url,
            verify_auth_url: verify_tls_url.unwrap_or_else(|| verify_endpoint.clone()),
            verify_tls,
            verify_endpoint,
            procs,
            common,
            redis,
            dir,
        };
        stack.start_proxy(opts.proxy, pport, &mcp_backend).await;
        stack
    }

    /// One more proxy of `kind` on its own port, in front of `backend` and this stack's verify
    /// and auth; returns its port (its MCP URL is `http://localhost:{port}/mcp`).
    pub async fn add_proxy(&mut self, kind: Proxy, backend: &str) -> u16 {
        let port = free_port();
        self.start_proxy(kind, port, backend).await;
        port
    }

    async fn start_proxy(&mut self, kind: Proxy, port: u16, backend: &str) {
        let dir = self.dir.path().join(format!("{}-{port}", kind.name()));
        std::fs::create_dir_all(&dir).expect("proxy folder");
        let name = format!("{}-{port}", kind.name());
        let mut cmd = clean_command(&kind.bin());
        match kind {
            Proxy::Traefik => {
                // Only the addresses are substituted; the rest comes from the environment.
                let conf = substitute(
                    "traefik/traefik.yml",
                    &read_repo_file("traefik/traefik.yml"),
                    &[
                        ("address: \":80\"", format!("address: \"127.0.0.1:{port}\"")),
                        (
                            "filename: /etc/traefik/dynamic.yml",
                            format!("filename: {}", repo().join("traefik/dynamic.yml").display()),
                        ),
                    ],
                );
                let path = dir.join("traefik.yml");
                std::fs::write(&path, conf).expect("write traefik.yml");
                cmd.arg(format!("--configFile={}", path.display()))
                    .env("MCP_HOST", "localhost")
                    .env("AUTH_HOST", "127.0.0.1")
                    .env("VERIFY_AUTH_URL", &self.verify_auth_url)
                    .env("VERIFY_CA", &self.verify_tls.ca_cert);
            }
            Proxy::Caddy => {
                // Site addresses and upstreams come from the environment; only a bind address
                // is added, so that Caddy listens on loopback alone.
                let conf = substitute(
                    "caddy/Caddyfile",
                    &read_repo_file("caddy/Caddyfile"),
                    &[(
                        "\tadmin off\n",
                        "\tadmin off\n\tdefault_bind 127.0.0.1\n".into(),
                    )],
                );
                let path = dir.join("Caddyfile");
                std::fs::write(&path, conf).expect("write Caddyfile");
                let home = dir.join("home");
                cmd.arg("run")
                    .arg("--config")
                    .arg(&path)
                    .arg("--adapter")
                    .arg("caddyfile")
                    .env("HOME", &home)
                    .env("XDG_DATA_HOME", home.join("data"))
                    .env("XDG_CONFIG_HOME", home.join("config"))
                    .env("MCP_HOST", format!("http://localhost:{port}"))
                    .env("AUTH_HOST", format!("http://127.0.0.1:{port}"));
            }
            Proxy::Nginx => {
                // nginx has no environment: the shipped file's addresses are replaced.
                let hostport = |url: &str| url.trim_start_matches("http://").to_string();
                let conf = substitute_counted(
                    "nginx/mcp-gateway.conf",
                    &read_repo_file("nginx/mcp-gateway.conf"),
                    &[
                        (
                            "\n    listen 80;",
                            format!("\n    listen 127.0.0.1:{port};"),
                            3,
                        ),
                        (
                            "server_name mcp.example.com;",
                            "server_name localhost;".into(),
                            1,
                        ),
                        (
                            "server_name auth.example.com;",
                            "server_name 127.0.0.1;".into(),
                            1,
                        ),
                        (
                            "server verify:8081;",
                            format!("server {};", hostport(&self.verify_endpoint)),
                            1,
                        ),
                        (
                            "server auth:8080;",
                            format!("server {};", hostport(&self.auth_url)),
                            1,
                        ),
                        (
                            "server mcp:3000;",
                            format!("server {};", hostport(backend)),
                            1,
                        ),
                    ],
                );
                std::fs::write(dir.join("mcp-gateway.conf"), conf).expect("write nginx conf");
                for sub in ["body", "proxy", "fastcgi", "uwsgi", "scgi"] {
                    std::fs::create_dir_all(dir.join("temp").join(sub)).expect("nginx temp");
                }
                let d = dir.display();
                let main = format!(
                    "# The test's nginx.conf around the shipped file: foreground, one process.\n\
                     daemon off;\nmaster_process off;\nworker_processes 1;\n\
                     pid {d}/nginx.pid;\nerror_log stderr notice;\n\
                     events {{ worker_connections 512; }}\n\
                     http {{\n\
                     \x20   access_log {d}/access.log;\n\
                     \x20   client_body_temp_path {d}/temp/body;\n\
                     \x20   proxy_temp_path {d}/temp/proxy;\n\
                     \x20   fastcgi_temp_path {d}/temp/fastcgi;\n\
                     \x20   uwsgi_temp_path {d}/temp/uwsgi;\n\
                     \x20   scgi_temp_path {d}/temp/scgi;\n\
                     \x20   include {d}/mcp-gateway.conf;\n\
                     }}\n"
                );
                let path = dir.join("nginx.conf");
                std::fs::write(&path, main).expect("write nginx.conf");
                cmd.arg("-e")
                    .arg("stderr")
                    .arg("-p")
                    .arg(&dir)
                    .arg("-c")
                    .arg(&path);
            }
        }
        cmd.env("MCP_URL", backend)
            .env("AUTH_URL", &self.auth_url)
            .env("VERIFY_URL", &self.verify_endpoint);
        let mut proc = Proc::spawn(&name, cmd, self.dir.path());
        // Up when its routes answer: metadata through to verify, and the authorization server.
        wait_http(
            &mut proc,
            &format!("http://localhost:{port}/.well-known/oauth-protected-resource/mcp"),
            Some(200),
            30,
        )
        .await;
        wait_http(
            &mut proc,
            &format!("http://127.0.0.1:{port}/.well-known/oauth-authorization-server"),
            Some(200),
            10,
        )
        .await;
        self.procs.push(proc);
    }

    /// `e2e/header-echo.mjs`: a backend that answers with the headers it received.
    pub async fn start_header_echo(&mut self) -> String {
        let mut cmd = clean_command(&node22());
        cmd.arg(e2e_dir().join("header-echo.mjs")).arg("0");
        let mut echo = Proc::spawn("header-echo", cmd, self.dir.path());
        let port = echo.listening_port(Duration::from_secs(15)).await;
        self.procs.push(echo);
        format!("http://127.0.0.1:{port}")
    }

    /// The operator CLI (`mcp-gateway`) with the services' settings, in the stack's folder.
    /// `name` in the stack's folder (where the CLI runs).
    pub fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    /// The one verify process.
    pub fn verify_proc(&mut self) -> &mut Proc {
        self.procs
            .iter_mut()
            .find(|p| p.name == "mcp-gateway-verify")
            .expect("one verify process")
    }

    /// Stops every verify process (the proxy's forwardAuth then reaches nothing).
    pub fn stop_verify(&mut self) {
        self.procs
            .retain(|p| !p.name.starts_with("mcp-gateway-verify"));
    }

    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = clean_command(Path::new(env!("CARGO_BIN_EXE_mcp-gateway")));
        cmd.current_dir(self.dir.path())
            .envs(self.common.iter().map(|(k, v)| (*k, v.as_str())))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("mcp-gateway runs")
    }

    /// `mcp-gateway tokens mint` for alice (GitHub id 1001) with client id `e2e-cli`, plus
    /// `args` (scope, resource, bindings); the token.
    pub fn mint(&self, args: &[&str]) -> String {
        let mut all = vec![
            "tokens",
            "mint",
            "--user-id",
            "1001",
            "--user",
            "alice",
            "--client-id",
            "e2e-cli",
        ];
        all.extend_from_slice(args);
        let out = self.cli(&all);
        assert!(
            out.status.success(),
            "mcp-gateway {all:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The last lines of every process's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut text = String::new();
        for p in &self.procs {
            text.push_str(&format!(
                "\n----- {} ({}) -----\n{}\n",
                p.name,
                p.log.display(),
                p.tail(60)
            ));
        }
        text
    }

    /// Runs a script of e2e/: Node 22 for `.mjs`, the MCP Python SDK's venv for `.py`; its
    /// last stdout line is JSON.
    pub async fn run_script(
        &self,
        script: &str,
        args: &[&str],
        limit_secs: u64,
    ) -> (Value, String) {
        let limit = Duration::from_secs(limit_secs);
        let mut cmd = if script.ends_with(".py") {
            let mut cmd = clean_command(&python_mcp());
            cmd.env("E2E_NODE", node22());
            cmd
        } else {
            clean_command(&node22())
        };
        cmd.arg(e2e_dir().join(script)).args(args);
        self.run_json(script, cmd, limit).await
    }

    /// [`Stack::run_script`] (Node 22) with `env` set for it.
    pub async fn run_script_env(
        &self,
        script: &str,
        args: &[&str],
        env: &[(&str, &str)],
        limit: Duration,
    ) -> (Value, String) {
        let mut cmd = clean_command(&node22());
        cmd.arg(e2e_dir().join(script))
            .args(args)
            .envs(env.iter().copied());
        self.run_json(script, cmd, limit).await
    }

    async fn run_json(&self, name: &str, cmd: Command, limit: Duration) -> (Value, String) {
        run_json_command(name, cmd, limit, || self.logs()).await
    }
}

fn read_repo_file(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Replaces each pattern, which must occur exactly once in `file`.
fn substitute(file: &str, text: &str, pairs: &[(&str, String)]) -> String {
    let counted: Vec<(&str, String, usize)> =
        pairs.iter().map(|(f, t)| (*f, t.clone(), 1)).collect();
    substitute_counted(file, text, &counted)
}

/// Replaces each pattern, which must occur exactly the given number of times in `file`.
fn substitute_counted(file: &str, text: &str, pairs: &[(&str, String, usize)]) -> String {
    let mut out = text.to_string();
    for (from, to, count) in pairs {
        assert_eq!(
            out.matches(from).count(),
            *count,
            "{file} must contain `{from}` exactly {count} time(s)"
        );
        out = out.replace(from, to);
    }
    out
}
