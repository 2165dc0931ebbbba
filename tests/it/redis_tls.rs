//! Redis over TLS with an ACL user, as managed Redis services require: a real `redis-server`
//! with `--tls-port`, a test CA made with openssl, and verify and the CLI connecting with
//! `rediss://user:password@…`, `REDIS_CA_FILE` and, where the server asks for one, a client
//! certificate.

use mcp_oauth_gateway::audit::Events;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::dev_gateway::ChildGuard;
use crate::support::helpers::*;

fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(status.success(), "openssl {args:?}");
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, in `dir`.
fn make_certificates(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
        ],
    );
    for (name, ext) in [
        ("server", "subjectAltName=IP:127.0.0.1"),
        ("client", "extendedKeyUsage=clientAuth"),
    ] {
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                &format!("/CN={name}"),
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
            ],
        );
        std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &format!("{name}.ext"),
                "-out",
                &format!("{name}.crt"),
            ],
        );
    }
}

struct TlsRedis {
    _child: ChildGuard,
    port: u16,
}

/// redis-server with TLS only (no plain port) and an ACL user `gateway` (the default user off).
async fn tls_redis(dir: &Path, client_certs: bool) -> TlsRedis {
    let port = free_port();
    let path = |f: &str| dir.join(f).to_string_lossy().into_owned();
    let child = Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .args([
            "--tls-cert-file",
            &path("server.crt"),
            "--tls-key-file",
            &path("server.key"),
        ])
        .args(["--tls-ca-cert-file", &path("ca.crt")])
        .args([
            "--tls-auth-clients",
            if client_certs { "yes" } else { "no" },
        ])
        .args(["--save", "", "--appendonly", "no", "--dir", &path("")])
        .args(["--user", "default", "off"])
        .args([
            "--user",
            "gateway",
            "on",
            ">s3cret-password",
            "~oauth:*",
            "&oauth:*",
            "+@all",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server (Debian's is built with TLS)");
    tokio::time::sleep(Duration::from_millis(300)).await;
    TlsRedis {
        _child: ChildGuard(child),
        port,
    }
}

fn tls_env(
    redis: &TlsRedis,
    dir: &Path,
    client_cert: bool,
) -> mcp_oauth_gateway::config::ConfigSource {
    let file = |f: &str| -> String { dir.join(f).to_string_lossy().into_owned() };
    let mut env = mcp_oauth_gateway::config::ConfigSource::from_pairs([
        ("JWT_ALGORITHM", "RS256".to_string()),
        ("JWT_PRIVATE_KEY_B64", rsa_key_b64().to_string()),
        ("BASE_DOMAIN", "example.com".to_string()),
        ("LISTEN_ADDR", "127.0.0.1:0".to_string()),
        ("ALLOWED_GITHUB_USERS", "alice".to_string()),
        (
            "REDIS_URL",
            format!("rediss://gateway:s3cret-password@127.0.0.1:{}", redis.port),
        ),
        ("REDIS_CA_FILE", file("ca.crt")),
    ]);
    if client_cert {
        env = env
            .with("REDIS_CLIENT_CERT_FILE", file("client.crt"))
            .with("REDIS_CLIENT_KEY_FILE", file("client.key"));
    }
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_and_the_cli_use_redis_over_tls_with_an_acl_user() {
    let dir = tempfile::tempdir().unwrap();
    make_certificates(dir.path());
    for client_certs in [false, true] {
        let redis = tls_redis(dir.path(), client_certs).await;
        let env = tls_env(&redis, dir.path(), client_certs);
        let settings = settings(&env);
        let store = mcp_oauth_gateway::store::RedisStore::connect_with(&settings).unwrap();
        let store: std::sync::Arc<dyn mcp_oauth_gateway::store::Store> = std::sync::Arc::new(store);
        let verify = Verify::start(&env, store.clone()).await;
        verify.wait_ready().await;
        let (token, jti) = mint_token(&verify.settings, &store, TokenSpec::default()).await;
        assert_eq!(
            verify.status(&token).await,
            200,
            "client certs: {client_certs}"
        );
        // The revocation feed runs over TLS too.
        assert!(store.revoke_token(&jti, &Events::none()).await.unwrap());
        verify
            .refuses_within(&token, 2, "revocation heard over TLS")
            .await;
        // The CLI, with the same settings.
        let out = run_cli_with(&env, &["--json", "stats"]);
        assert_success(&out, "mcp-gateway stats over TLS");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_ca_or_a_wrong_password_is_not_ready_never_a_silent_plain_connection() {
    let dir = tempfile::tempdir().unwrap();
    make_certificates(dir.path());
    let redis = tls_redis(dir.path(), false).await;
    for (var, value) in [
        ("REDIS_CA_FILE", None),
        (
            "REDIS_URL",
            Some(format!("rediss://gateway:wrong@127.0.0.1:{}", redis.port)),
        ),
    ] {
        let mut env = tls_env(&redis, dir.path(), false);
        match value {
            Some(v) => env = env.with(var, v),
            None => {
                env.env.remove(var);
            }
        }
        let settings = settings(&env);
        let store = mcp_oauth_gateway::store::RedisStore::connect_with(&settings).unwrap();
        let server = mcp_oauth_gateway::verify::VerifyServer::build(
            settings,
            std::sync::Arc::new(store),
            mcp_oauth_gateway::clock::system(),
        )
        .unwrap();
        let base = format!("http://{}", server.addr());
        tokio::spawn(server.run_until_stopped());
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let ready = http().get(format!("{base}/ready")).send().await.unwrap();
        assert_eq!(ready.status(), 503, "{var}");
    }
    // A CA file that does not exist stops the service before it starts.
    let env = tls_env(&redis, dir.path(), false).with("REDIS_CA_FILE", "/nonexistent/ca.crt");
    let err = mcp_oauth_gateway::config::Settings::load(&env).unwrap_err();
    assert_eq!(err.var, "REDIS_CA_FILE");
}
