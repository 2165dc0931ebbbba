//! `keys generate`, `generate-jwt-secret`, `keys rotate`.

use std::process::Command;

use serde_json::Value;

use super::*;
use crate::support::helpers::*;

#[test]
fn generate_jwt_secret_is_64_url_safe_characters() {
    let out = run(&["generate-jwt-secret"], &[]);
    assert!(out.status.success());
    let secret = stdout(&out).trim().to_string();
    assert_eq!(secret.len(), 64);
    assert!(
        secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    );
    assert_ne!(secret, stdout(&run(&["generate-jwt-secret"], &[])).trim());
}

#[test]
fn keys_generate_prints_env_lines_that_the_services_accept() {
    for alg in ["RS256", "ES256", "EdDSA", "HS256"] {
        let out = run(&["keys", "generate", "--alg", alg], &[]);
        assert!(
            out.status.success(),
            "{alg}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = stdout(&out);
        let pairs = mcp_oauth_gateway::cli::envfile::parse(&text);
        assert_eq!(pairs.len(), 2, "{alg}: {text}");
        assert_eq!(pairs[0], ("JWT_ALGORITHM".to_string(), alg.to_string()));
        let mut env: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        env.push(("BASE_DOMAIN", "example.com"));
        let check = Command::new(bin("mcp-gateway-verify"))
            .arg("--check-config")
            .env_clear()
            .envs(env)
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "{alg}: {}",
            String::from_utf8_lossy(&check.stderr)
        );
    }
    let bad = run(&["keys", "generate", "--alg", "none"], &[]);
    assert_eq!(bad.status.code(), Some(1));
}

#[test]
fn keys_generate_updates_an_env_file_in_place_privately() {
    let (_dir, env_file) = temp_file(
        ".env",
        "# my gateway\nBASE_DOMAIN=example.com\nJWT_ALGORITHM=HS256\n",
    );
    let out = run(
        &[
            "--env-file",
            env_file.to_str().unwrap(),
            "keys",
            "generate",
            "--alg",
            "ES256",
        ],
        &[],
    );
    assert!(out.status.success());
    let said = stdout(&out);
    assert!(said.contains("JWT_PRIVATE_KEY_B64"), "{said}");
    let text = std::fs::read_to_string(&env_file).unwrap();
    assert!(
        !said.contains(text.lines().last().unwrap()),
        "the key is never echoed"
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        &lines[..3],
        &[
            "# my gateway",
            "BASE_DOMAIN=example.com",
            "JWT_ALGORITHM=ES256"
        ]
    );
    assert!(lines[3].starts_with("JWT_PRIVATE_KEY_B64="));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&env_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_keeps_earlier_tokens_valid() {
    let redis = RedisServer::start().await;
    let env = format!("BASE_DOMAIN=example.com\nREDIS_URL={}\n", redis.url());
    let (dir, env_file) = temp_file(".env", env);
    let run = |args: &[&str]| {
        Command::new(bin("mcp-gateway"))
            .args(args)
            .current_dir(dir.path())
            .env_clear()
            .output()
            .unwrap()
    };
    ok(&run(&[
        "--env-file",
        ".env",
        "keys",
        "generate",
        "--alg",
        "ES256",
    ]));
    let mint = [
        "tokens",
        "mint",
        "--user-id",
        "1",
        "--user",
        "alice",
        "--client-id",
        "c",
        "--scope",
        "mcp",
        "--resource",
        RESOURCE,
    ];
    let old = ok(&run(&mint)).trim().to_string();
    ok(&run(&["keys", "rotate"]));
    let listed: Value = serde_json::from_str(&ok(&run(&["--json", "keys", "list"]))).unwrap();
    let roles: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, vec!["signing", "verification"]);
    let new = ok(&run(&mint)).trim().to_string();
    let kid = |t: &str| jsonwebtoken::decode_header(t).unwrap().kid.unwrap();
    assert_ne!(kid(&old), kid(&new));
    // Verify started from the rotated env file accepts both.
    let pairs = mcp_oauth_gateway::cli::envfile::read(&env_file).unwrap();
    let mut source = mcp_oauth_gateway::config::ConfigSource::from_pairs(pairs)
        .with("LISTEN_ADDR", "127.0.0.1:0");
    source = source.with("ALLOWED_GITHUB_USERS", "alice");
    let verify = Verify::start(&source, redis.store()).await;
    assert_eq!(verify.status(&old).await, 200);
    assert_eq!(verify.status(&new).await, 200);
}
