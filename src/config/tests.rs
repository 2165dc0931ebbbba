//! The settings' parsing and validation.

use super::*;

fn hs_source() -> ConfigSource {
    ConfigSource::from_pairs([
        ("JWT_ALGORITHM", "HS256"),
        (
            "GATEWAY_JWT_SECRET",
            "0123456789abcdef0123456789abcdef-test",
        ),
        ("BASE_DOMAIN", "example.com"),
    ])
}

#[test]
fn upstreams_allow_lists_and_upstream_tokens_are_validated() {
    let with = |pairs: &[(&str, &str)]| {
        let mut source = hs_source();
        for (k, v) in pairs {
            source = source.with(*k, *v);
        }
        Settings::load(&source)
    };
    let oidc = [
        ("OIDC_ISSUER", "https://login.example.com/t/v2.0"),
        ("OIDC_CLIENT_ID", "gw"),
        ("OIDC_CLIENT_SECRET", "s"),
    ];
    // The providers configured are the upstreams, GitHub alone by default.
    assert_eq!(with(&[]).unwrap().upstreams, vec![Provider::Github]);
    let s = with(&oidc).unwrap();
    assert_eq!(s.upstreams, vec![Provider::Oidc]);
    let o = s.oidc.unwrap();
    assert_eq!(o.scopes, ["openid", "email", "profile", "offline_access"]);
    assert_eq!(o.display_name, "login.example.com");
    let mut both = oidc.to_vec();
    both.push(("UPSTREAM", "oidc, github"));
    assert_eq!(
        with(&both).unwrap().upstreams,
        vec![Provider::Oidc, Provider::Github]
    );
    let err = |pairs: &[(&str, &str)]| with(pairs).unwrap_err().var;
    assert_eq!(err(&[("UPSTREAM", "saml")]), "UPSTREAM");
    assert_eq!(err(&[("UPSTREAM", "oidc")]), "OIDC_ISSUER");
    let mut plain = oidc.to_vec();
    plain[0] = ("OIDC_ISSUER", "http://idp.example.com");
    assert_eq!(err(&plain), "OIDC_ISSUER");
    let mut no_secret = oidc.to_vec();
    no_secret.pop();
    assert_eq!(err(&no_secret), "OIDC_CLIENT_SECRET");
    let mut jwt = oidc.to_vec();
    jwt.push(("OIDC_CLIENT_AUTH_METHOD", "private_key_jwt"));
    assert_eq!(err(&jwt), "OIDC_PRIVATE_KEY_FILE");
    let mut ours = oidc.to_vec();
    ours.push(("OIDC_AUTH_PARAMS", "nonce=1"));
    assert_eq!(err(&ours), "OIDC_AUTH_PARAMS");

    assert_eq!(
        err(&[("ALLOWED_EMAIL_DOMAINS", "*")]),
        "ALLOWED_EMAIL_DOMAINS"
    );
    assert_eq!(
        err(&[("ALLOWED_USERS", "a"), ("ALLOWED_GITHUB_USERS", "b")]),
        "ALLOWED_USERS"
    );
    assert_eq!(err(&[("ALLOWED_EMAILS", "nobody")]), "ALLOWED_EMAILS");
    let s = with(&[
        ("ALLOWED_EMAIL_DOMAINS", "@Example.com"),
        ("ALLOWED_GROUPS", "eng"),
    ])
    .unwrap();
    assert!(s.admission.is_configured());
    assert_eq!(s.admission.groups, ["eng"]);

    for header in ["Authorization", "X-User-Token", "bad header"] {
        assert_eq!(
            err(&[
                ("FORWARD_UPSTREAM_TOKEN", "true"),
                ("UPSTREAM_TOKEN_HEADER", header)
            ]),
            "UPSTREAM_TOKEN_HEADER"
        );
    }
    let s = with(&[("FORWARD_UPSTREAM_TOKEN", "github-mcp.example.com")]).unwrap();
    assert!(s.upstream_token.forwards_to("github-mcp.example.com"));
    assert!(!s.upstream_token.forwards_to("other.example.com"));
    assert!(!with(&[]).unwrap().upstream_token.enabled());
    assert_eq!(
        err(&[("UPSTREAM_TOKEN_KEY", "c2hvcnQ=")]),
        "UPSTREAM_TOKEN_KEY"
    );
    // Derived from the signing key when not given: auth and verify agree.
    assert!(with(&[]).unwrap().upstream_sealer().is_some());
}

#[test]
fn defaults_follow_base_domain() {
    let s = Settings::load(&hs_source()).unwrap();
    assert_eq!(s.issuer, "https://auth.example.com");
    assert!(s.resource_hosts[0].matches("mcp.example.com"));
    assert!(!s.resource_hosts[0].matches("example.com"));
    assert!(!s.resource_hosts[0].matches("mcp.example.com.evil.net"));
    assert_eq!(s.resource_path, "/mcp");
    assert_eq!(s.access_token_lifetime, Duration::from_secs(30 * 86_400));
    assert_eq!(s.failure_mode, FailureMode::Closed);
    assert!(!s.admission.is_configured());
}

#[test]
fn bad_values_name_the_variable() {
    for (var, value) in [
        ("ACCESS_TOKEN_LIFETIME", "soon"),
        ("LISTEN_ADDR", "nowhere"),
        ("REDIS_FAILURE_MODE", "open"),
        ("TRUSTED_PROXIES", "10.0.0.0/33"),
        ("TOKEN_CUSTOM_CLAIMS", "[1]"),
        ("JWT_ALGORITHM", "none"),
        ("ISSUER_URL", "ftp://x"),
        ("TOKEN_BIND_IP", "maybe"),
        ("REQUIRED_SCOPES", "a=\"b\""),
        ("DPOP_IAT_WINDOW", "0"),
        ("DPOP_IAT_WINDOW", "301"),
        ("DPOP_NONCE_KEY", "c2hvcnQ="),
        ("DPOP_NONCE", "maybe"),
        ("DPOP_REPLAY_CAPACITY", "-1"),
    ] {
        let err = Settings::load(&hs_source().with(var, value)).unwrap_err();
        assert_eq!(err.var, var, "{err}");
    }
}

#[test]
fn short_hmac_secret_is_refused() {
    let err = Settings::load(&hs_source().with("GATEWAY_JWT_SECRET", "short")).unwrap_err();
    assert_eq!(err.var, "GATEWAY_JWT_SECRET");
}

#[test]
fn secrets_stay_out_of_debug() {
    let s = Settings::load(
        &hs_source()
            .with("REDIS_URL", "redis://:hunter2hunter2@127.0.0.1:6379")
            .with("GITHUB_CLIENT_SECRET", "ghsecretvalue"),
    )
    .unwrap();
    let dbg = format!("{s:?}");
    assert!(!dbg.contains("hunter2"));
    assert!(!dbg.contains("ghsecretvalue"));
    assert!(!dbg.contains("0123456789abcdef"));
}

#[test]
fn every_setting_read_is_known_to_the_file_check() {
    let source = [
        include_str!("mod.rs"),
        include_str!("audit.rs"),
        include_str!("cimd.rs"),
        include_str!("keys.rs"),
        include_str!("raw.rs"),
        include_str!("redis.rs"),
        include_str!("scopes.rs"),
        include_str!("upstream.rs"),
    ]
    .concat();
    for call in [
        "raw.get(\"",
        "raw.get_raw(\"",
        "raw.bool(\"",
        "raw.duration(\"",
        "raw.number(\"",
        "raw.number_u32(\"",
    ] {
        for piece in source.split(call).skip(1) {
            let name = piece.split('"').next().unwrap();
            if name
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                && !name.is_empty()
            {
                assert!(
                    KNOWN_SETTINGS.contains(&name),
                    "{name} is read but not in KNOWN_SETTINGS"
                );
            }
        }
    }
}

/// A `gateway.toml` holding `toml` in a new temporary directory: the directory (removed on drop)
/// and the file's path.
fn config_file(toml: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, toml).unwrap();
    (dir, path)
}

#[test]
fn a_typo_in_the_config_file_is_an_error_naming_it() {
    let (_dir, file) = config_file(
        "gateway_jwt_secret = \"0123456789abcdef0123456789abcdef\"\njwt_algorithm = \"HS256\"\nissuer_ulr = \"https://auth.example.com\"\n",
    );
    let mut source = ConfigSource::from_pairs::<&str, &str>([]);
    source.file = Some(file);
    let err = Settings::load(&source).unwrap_err();
    assert_eq!(err.var, "--config");
    assert!(err.reason.contains("\"issuer_ulr\""), "{err}");
}

#[test]
fn durations() {
    assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
    assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
    assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(172_800));
    assert!(parse_duration("1w").is_err());
}

#[test]
fn toml_file_is_overlaid_by_environment() {
    let (_dir, path) = config_file(
        "base_domain = \"file.example\"\naccess_token_lifetime = 120\nrequired_scopes = \"mcp\"\n",
    );
    let mut source = hs_source().with("ACCESS_TOKEN_LIFETIME", "60");
    source.env.remove("BASE_DOMAIN");
    source.file = Some(path);
    let s = Settings::load(&source).unwrap();
    assert_eq!(s.base_domain, "file.example");
    assert_eq!(s.access_token_lifetime, Duration::from_secs(60));
    assert!(!s.required_scopes.is_empty());
}

#[test]
fn trusted_issuers_come_from_tables_or_the_environment_and_are_checked() {
    let (_dir, jwks) = config_file(
        r#"{"keys": [{"kty": "EC", "crv": "P-256", "kid": "k",
        "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
        "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#,
    );
    let toml = format!(
        r#"
[[trusted_issuer]]
issuer = "https://acme.okta.com"
kind = "id-jag"
clients = ["claude-work"]
scopes = ["mcp"]

[[trusted_issuer]]
issuer = "https://kubernetes.default.svc"
kind = "workload"
jwks_file = "{}"
subject = ["system:serviceaccount:prod:*"]
required_claims = {{ "kubernetes.io.namespace" = "prod" }}
"#,
        jwks.display()
    );
    let (_d2, path) = config_file(&toml);
    let mut source = hs_source().with("ISSUER_URL", "https://auth.example.com");
    source.file = Some(path.clone());
    let s = Settings::load(&source).unwrap();
    let [okta, k8s] = &s.trusted_issuers[..] else {
        panic!("{:?}", s.trusted_issuers)
    };
    assert_eq!(okta.kind, IssuerKind::IdJag);
    assert_eq!(okta.keys, KeySource::Discover);
    assert_eq!(okta.audience, ["https://auth.example.com"]);
    assert_eq!(okta.clients, ["claude-work"]);
    assert_eq!(k8s.kind, IssuerKind::Workload);
    assert!(matches!(k8s.keys, KeySource::Inline(_)));
    assert_eq!(
        k8s.audience,
        ["https://auth.example.com", "https://auth.example.com/token"]
    );
    assert!(k8s.admits_subject("system:serviceaccount:prod:api"));
    assert!(!k8s.admits_subject("system:serviceaccount:dev:api"));
    assert!(okta.describe()[0].contains("id-jag"));

    // One issuer in the environment.
    let env = hs_source()
        .with("TRUSTED_ISSUER", "https://login.example.com/tenant/v2.0")
        .with("TRUSTED_ISSUER_KIND", "id-jag")
        .with("TRUSTED_ISSUER_JWKS_URI", "https://login.example.com/keys")
        .with("TRUSTED_ISSUER_SCOPES", "mcp, mcp:read");
    let s = Settings::load(&env).unwrap();
    assert_eq!(s.trusted_issuers.len(), 1);
    assert_eq!(
        s.trusted_issuers[0].scopes.as_deref().unwrap(),
        ["mcp", "mcp:read"]
    );

    for (bad, says) in [
        (
            vec![
                ("TRUSTED_ISSUER", "http://idp.example.com"),
                ("TRUSTED_ISSUER_KIND", "id-jag"),
            ],
            "https",
        ),
        (
            vec![
                ("TRUSTED_ISSUER", "https://idp.example.com"),
                ("TRUSTED_ISSUER_KIND", "saml"),
            ],
            "TRUSTED_ISSUER_KIND",
        ),
        (
            vec![
                ("TRUSTED_ISSUER", "https://idp.example.com"),
                ("TRUSTED_ISSUER_KIND", "id-jag"),
                ("TRUSTED_ISSUER_SUBJECT", "x*"),
            ],
            "workload",
        ),
        (
            vec![
                ("TRUSTED_ISSUER", "https://idp.example.com"),
                ("TRUSTED_ISSUER_KIND", "workload"),
                ("TRUSTED_ISSUER_REQUIRED_CLAIMS", "not json"),
            ],
            "JSON",
        ),
        (
            vec![
                ("TRUSTED_ISSUER", "https://idp.example.com"),
                ("TRUSTED_ISSUER_KIND", "workload"),
                ("TRUSTED_ISSUER_JWKS_URI", "https://idp.example.com/keys"),
                ("TRUSTED_ISSUER_JWKS_FILE", "/x"),
            ],
            "not both",
        ),
    ] {
        let mut source = hs_source();
        for (k, v) in &bad {
            source = source.with(*k, *v);
        }
        let err = Settings::load(&source).unwrap_err();
        assert!(err.to_string().contains(says), "{bad:?}: {err}");
    }
    // The environment's issuer replaces the file's tables, as TOOL_POLICY does.
    let mut both = hs_source()
        .with("TRUSTED_ISSUER", "https://acme.okta.com")
        .with("TRUSTED_ISSUER_KIND", "workload");
    both.file = Some(path);
    let s = Settings::load(&both).unwrap();
    assert_eq!(s.trusted_issuers.len(), 1);
    assert_eq!(s.trusted_issuers[0].kind, IssuerKind::Workload);
    // The same issuer twice.
    let table = "[[trusted_issuer]]\nissuer = \"https://a.example\"\nkind = \"id-jag\"\n";
    let (_d3, path) = config_file(&format!("{table}{table}"));
    let mut twice = hs_source();
    twice.file = Some(path);
    let err = Settings::load(&twice).unwrap_err().to_string();
    assert!(err.contains("twice"), "{err}");
    // A table without its kind, or with a field we do not know.
    for (table, says) in [
        ("issuer = \"https://a.example\"\n", "kind is required"),
        (
            "issuer = \"https://a.example\"\nkind = \"id-jag\"\njwks = \"x\"\n",
            "jwks",
        ),
    ] {
        let (_d4, path) = config_file(&format!("[[trusted_issuer]]\n{table}"));
        let mut source = hs_source();
        source.file = Some(path);
        let err = Settings::load(&source).unwrap_err().to_string();
        assert!(err.contains(says), "{table}: {err}");
    }
}

#[test]
fn dpop_settings_are_checked() {
    let s = Settings::load(&hs_source()).unwrap();
    assert!(s.dpop_nonces().is_none());
    assert_eq!(s.dpop_iat_window, Duration::from_secs(300));
    let s = Settings::load(&hs_source().with("DPOP_NONCE", "true")).unwrap();
    let nonces = s.dpop_nonces().expect("derived from the signing key");
    // Another process with the same signing key accepts this one's nonces.
    let other = Settings::load(&hs_source().with("DPOP_NONCE", "true")).unwrap();
    assert!(
        other
            .dpop_nonces()
            .unwrap()
            .accepts(&nonces.issue(1_000), 1_010)
    );
}
