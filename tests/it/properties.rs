//! Property tests for every parser an attacker reaches: bearer extraction, forwarded headers,
//! path normalisation, redirect URIs, scopes, JWT headers, the registration body, config
//! values. Each checks that nothing panics, plus an invariant or a round trip. Case counts are
//! fixed so the whole file runs in a few seconds.

use std::collections::HashMap;
use std::net::IpAddr;

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use base64::Engine;
use mcp_oauth_gateway::auth::client_metadata::{ClientMetadata, validate};
use mcp_oauth_gateway::config::{ConfigSource, Settings};
use mcp_oauth_gateway::policy::{
    Call, HostPattern, ScopePolicy, ToolPolicy, is_scope_token, normalize_resource_uri,
    validate_redirect_uri,
};
use mcp_oauth_gateway::token::{KeySet, ValidationPolicy, validate as validate_token};
use mcp_oauth_gateway::verify::request::{ClientAddress, Target, bearer_token, normalize_path};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            map.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), value);
        }
    }
    map
}

const B64TOKEN: &str = "[A-Za-z0-9._~+/-]{1,64}=*";

proptest! {
    #![proptest_config(config())]

    #[test]
    fn bearer_extraction_never_panics_and_returns_only_b64tokens(value in proptest::collection::vec(any::<u8>(), 0..80)) {
        let map = headers(&[("authorization", &value)]);
        if let Some(token) = bearer_token(&map) {
            prop_assert!(!token.is_empty());
            prop_assert!(token.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b)));
        }
    }

    #[test]
    fn bearer_round_trip(token in B64TOKEN, scheme in "[bB][eE][aA][rR][eE][rR]", spaces in " {1,4}") {
        let value = format!("{scheme}{spaces}{token}");
        let map = headers(&[("authorization", value.as_bytes())]);
        prop_assert_eq!(bearer_token(&map), Some(token.as_str()));
        // Two credentials are no credential.
        let twice = headers(&[("authorization", value.as_bytes()), ("authorization", value.as_bytes())]);
        prop_assert_eq!(bearer_token(&twice), None);
    }

    #[test]
    fn forwarded_for_from_an_untrusted_peer_is_never_believed(xff in ".{0,60}", last in 1u8..255) {
        let addr = ClientAddress::new(vec!["10.0.0.0/8".parse().unwrap()]);
        let peer: IpAddr = format!("198.51.100.{last}").parse().unwrap();
        let map = headers(&[("x-forwarded-for", xff.as_bytes())]);
        prop_assert_eq!(addr.resolve(&map, Some(peer)), Some(peer));
        // From the trusted proxy the answer is never a trusted hop unless every hop is.
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        // (A value no header can carry, `\r1.1.1.1`, is not sent at all: the proxy is then the
        // client, whatever the string says.)
        if let Some(ip) = addr.resolve(&map, Some(proxy))
            && addr.is_trusted(&ip)
            && map.contains_key("x-forwarded-for")
        {
            let hops: Vec<&str> = xff.split(',').map(str::trim).collect();
            prop_assert!(hops.iter().all(|h| h.parse::<IpAddr>().map(|ip| addr.is_trusted(&ip)).unwrap_or(true)) || xff.is_empty());
        }
    }

    #[test]
    fn forwarded_target_never_panics_and_stays_within_resource_hosts(
        host in "[A-Za-z0-9.:\\[\\]-]{0,30}(,[ -~]{0,10})?",
        proto in "(https?|HTTPS|gopher|)",
        uri in "[ -~]{0,40}",
    ) {
        let patterns = vec![HostPattern::parse("*.example.com").unwrap()];
        let map = headers(&[
            ("x-forwarded-host", host.as_bytes()),
            ("x-forwarded-proto", proto.as_bytes()),
            ("x-forwarded-uri", uri.as_bytes()),
        ]);
        if let Some(target) = Target::from_headers(&map, &patterns) {
            prop_assert!(!target.host.bytes().any(|b| b.is_ascii_uppercase()));
            prop_assert!(patterns[0].matches(&target.host));
            if let Some(path) = target.path.as_deref() {
                prop_assert!(path.starts_with('/'));
            }
        }
    }

    #[test]
    fn normalised_paths_are_canonical(raw in "[ -~]{0,60}") {
        if let Some(path) = normalize_path(&raw) {
            let path = path.into_owned();
            prop_assert!(path.starts_with('/'));
            prop_assert!(!path.contains("//"), "{}", path);
            prop_assert!(!path.contains('\\'));
            prop_assert!(!upper_outside_escapes(&path), "{}", path);
            for segment in path.split('/') {
                prop_assert!(segment != ".." && segment != ".", "{}", path);
                prop_assert!(!segment.contains(';'));
            }
            // Idempotent: a normalised path normalises to itself.
            prop_assert_eq!(normalize_path(&path).map(|p| p.into_owned()), Some(path.clone()));
        }
    }

    #[test]
    fn a_protected_path_stays_protected_under_any_spelling(
        spelling in proptest::collection::vec((0u8..6, any::<bool>()), "/mcp/admin".len()),
        detour in 0u8..4,
        suffix in "(/[a-z0-9]{1,6}){0,2}",
        query in "(\\?[ -~]{0,8})?",
    ) {
        let policy = ScopePolicy::parse("/mcp/admin=mcp:admin").unwrap();
        let raw = spelled("/mcp/admin", &spelling);
        let raw = match detour {
            1 => raw.replacen("/admin", "/x/../admin", 1),
            2 => raw.replacen("/admin", "/./admin", 1),
            3 => raw.replacen("/admin", "/admin;v=1", 1),
            _ => raw,
        };
        let raw = format!("{raw}{suffix}{query}");
        let path = normalize_path(&raw);
        // An unreadable path applies every rule; a readable one must match the rule.
        let required = policy.required_for("mcp.example.com", path.as_deref());
        prop_assert_eq!(required, vec!["mcp:admin"], "{} -> {:?}", raw, path);
    }

    #[test]
    fn normalised_resource_uris_are_canonical(raw in "[ -~]{0,60}") {
        if let Some(uri) = normalize_resource_uri(&raw) {
            // Idempotent: a normalised URI normalises to itself.
            prop_assert_eq!(normalize_resource_uri(&uri), Some(uri.clone()), "{}", raw);
            let (scheme, rest) = uri.split_once(':').unwrap();
            prop_assert!(scheme.bytes().all(|b| !b.is_ascii_uppercase()));
            let path = rest.strip_prefix("//").map_or(rest, |r| r.find('/').map_or("", |i| &r[i..]));
            let path = path.split('?').next().unwrap_or("");
            prop_assert!(!path.contains("//"), "{} -> {}", raw, uri);
            prop_assert!(!path.contains('\\'), "{} -> {}", raw, uri);
            for segment in path.split('/') {
                prop_assert!(segment != ".." && segment != ".", "{} -> {}", raw, uri);
            }
        }
    }

    #[test]
    fn a_protected_resource_stays_protected_under_any_spelling(
        spelling in proptest::collection::vec((0u8..6, any::<bool>()), "/secret/key".len()),
        scheme in proptest::collection::vec(any::<bool>(), 4),
        host in "(|localhost|LOCALHOST|LocalHost)",
        detour in 0u8..4,
        suffix in "(/[a-z0-9]{1,6}){0,2}",
    ) {
        let policy = ToolPolicy::parse("resources/read file:///secret/*=mcp:admin", "github").unwrap();
        let mut raw: String = "file"
            .chars()
            .zip(&scheme)
            .map(|(c, up)| if *up { c.to_ascii_uppercase() } else { c })
            .collect();
        raw.push_str("://");
        raw.push_str(&host);
        let path = spelled("/secret/key", &spelling);
        let path = match detour {
            1 => path.replacen("/key", "/x/../key", 1),
            2 => path.replacen("/key", "/./key", 1),
            3 => format!("/public/..{path}"),
            _ => path,
        };
        raw.push_str(&path);
        raw.push_str(&suffix);
        let call = Call { method: "resources/read", name: Some(&raw) };
        let requirement = policy.requirement(Some(call));
        prop_assert_eq!(requirement.scopes, vec!["mcp:admin"], "{} -> {:?}", raw, normalize_resource_uri(&raw));
    }

    #[test]
    fn redirect_uris_that_pass_are_https_loopback_or_private_use(raw in "[ -~]{0,50}", scheme in "(https?|com\\.example\\.app|javascript|data|)") {
        let uri = format!("{scheme}://{raw}");
        for candidate in [raw.as_str(), uri.as_str()] {
            if validate_redirect_uri(candidate).is_ok() && candidate != "urn:ietf:wg:oauth:2.0:oob" {
                let url = url::Url::parse(candidate).unwrap();
                prop_assert!(url.fragment().is_none());
                if url.scheme() == "http" {
                    let host = url.host_str().unwrap_or("");
                    prop_assert!(matches!(host, "localhost" | "127.0.0.1" | "[::1]"), "{}", candidate);
                }
                prop_assert!(!matches!(url.scheme(), "javascript" | "data" | "file"));
            }
        }
    }

    #[test]
    fn scope_rules_parse_or_fail_cleanly(raw in "[ -~]{0,60}") {
        if let Ok(policy) = ScopePolicy::parse(&raw) {
            for scope in policy.all_scopes() {
                prop_assert!(is_scope_token(&scope));
            }
        }
    }

    #[test]
    // Scope tokens without the rule grammar's separators (`,`, `;`, `=`).
    fn scope_round_trip(scopes in proptest::collection::vec("[!#-+\\--:<>-\\[\\]-~]{1,12}", 1..5)) {
        let policy = ScopePolicy::parse(&scopes.join(" ")).unwrap();
        let mut unique: Vec<String> = Vec::new();
        for s in &scopes {
            if !unique.contains(s) {
                unique.push(s.clone());
            }
        }
        prop_assert_eq!(policy.all_scopes(), unique.clone());
        let required: Vec<String> = policy.required_for("h", None).into_iter().map(str::to_string).collect();
        prop_assert_eq!(required, unique);
    }

    #[test]
    fn jwt_headers_from_anyone_are_refused_without_panicking(
        header in proptest::collection::hash_map("[a-z]{1,4}", "[ -~]{0,12}", 0..5),
        alg in "(none|HS256|RS256|ES256|EdDSA|hs256|)",
        typ in "(at\\+jwt|JWT|jwt|)",
        crit in any::<bool>(),
        payload in "[ -~]{0,40}",
        signature in "[A-Za-z0-9_-]{0,40}",
    ) {
        let keys = test_keys();
        let mut map: serde_json::Map<String, serde_json::Value> =
            header.into_iter().map(|(k, v)| (k, v.into())).collect();
        map.insert("alg".into(), alg.into());
        map.insert("typ".into(), typ.into());
        if crit {
            map.insert("crit".into(), serde_json::json!(["exp"]));
        }
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let token = format!(
            "{}.{}.{signature}",
            b64(serde_json::Value::Object(map).to_string().as_bytes()),
            b64(payload.as_bytes())
        );
        let policy = ValidationPolicy::new("https://auth.example.com");
        prop_assert!(validate_token(&token, &keys, &policy, 1_800_000_000).is_err());
        prop_assert!(validate_token(&payload, &keys, &policy, 1_800_000_000).is_err());
    }

    #[test]
    fn registration_bodies_never_panic(body in "[ -~]{0,80}") {
        let _ = serde_json::from_str::<ClientMetadata>(&body);
    }

    #[test]
    fn registration_metadata_that_passes_is_within_bounds(
        redirect_uris in proptest::collection::vec("(https://[a-z.]{1,10}/cb|http://(localhost|127\\.0\\.0\\.1|localhost\\.evil\\.com|10\\.0\\.0\\.1):[0-9]{2,4}/cb|[ -~]{0,20})", 0..4),
        contacts in proptest::collection::vec("[ -~\\n]{0,40}", 0..13),
        name in "[ -~\\u{0}-\\u{1f}]{0,40}",
        method in "(none|client_secret_basic|client_secret_post|private_key_jwt|)",
        scope in "(mcp|mcp admin|[ -~]{0,10})",
    ) {
        let metadata = ClientMetadata {
            redirect_uris: Some(redirect_uris.clone()),
            contacts: Some(contacts.clone()),
            client_name: Some(name.clone()),
            token_endpoint_auth_method: (!method.is_empty()).then(|| method.clone()),
            scope: Some(scope),
            ..Default::default()
        };
        if validate(metadata, &["mcp".to_string()]).is_ok() {
            prop_assert!(!redirect_uris.is_empty());
            for uri in &redirect_uris {
                prop_assert!(validate_redirect_uri(uri).is_ok());
            }
            prop_assert!(contacts.len() <= 10);
            prop_assert!(contacts.iter().all(|c| c.len() <= 512 && !c.chars().any(char::is_control)));
            prop_assert!(!name.chars().any(char::is_control));
        }
    }

    #[test]
    fn config_values_are_accepted_or_refused_with_a_named_variable(
        key in prop::sample::select(vec![
            "REQUIRED_SCOPES", "RESOURCE_HOSTS", "TRUSTED_PROXIES", "ACCESS_TOKEN_LIFETIME",
            "VERIFY_CACHE_TTL", "LISTEN_ADDR", "RESOURCE_PATH", "ALLOWED_GITHUB_USERS",
            "TOKEN_CUSTOM_CLAIMS", "REDIS_FAILURE_MODE", "SCOPES_SUPPORTED", "MFA_MAX_FAILURES",
            "ISSUER_URL", "LOG_FORMAT", "TOKEN_BIND_IP", "RATE_LIMIT_TOKEN",
        ]),
        value in "[ -~]{0,40}",
    ) {
        let mut env: HashMap<&str, String> = HashMap::from([
            ("GATEWAY_JWT_SECRET", "0123456789abcdef0123456789abcdef".to_string()),
            ("JWT_ALGORITHM", "HS256".to_string()),
            ("BASE_DOMAIN", "example.com".to_string()),
        ]);
        env.insert(key, value);
        let source = ConfigSource::from_pairs(env.iter().map(|(k, v)| (*k, v.as_str())));
        if let Err(e) = Settings::load(&source) {
            let line = e.to_string();
            prop_assert!(!line.contains('\n'), "{}", line);
            prop_assert!(line.contains(key) || line.contains("JWT") || line.contains("ISSUER"), "{}", line);
        }
    }
}

/// Whether `path` has an upper-case letter other than the hex digits of a kept `%XX` escape.
fn upper_outside_escapes(path: &str) -> bool {
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            i += 3;
            continue;
        }
        if bytes[i].is_ascii_uppercase() {
            return true;
        }
        i += 1;
    }
    false
}

/// `text`, each character spelled as `spelling` says ([`spell`]).
fn spelled(text: &str, spelling: &[(u8, bool)]) -> String {
    text.chars()
        .zip(spelling)
        .map(|(c, (how, upper))| spell(c, *how, *upper))
        .collect()
}

/// One character of a path, spelled in one of the ways a backend treats as the same.
fn spell(c: char, how: u8, upper: bool) -> String {
    let c = if upper { c.to_ascii_uppercase() } else { c };
    match (c, how) {
        ('/', 1) => "%2F".into(),
        ('/', 2) => "%5c".into(),
        ('/', 3) => "\\".into(),
        ('/', 4) => "//".into(),
        (c, 1) | (c, 2) => format!("%{:02X}", c as u32),
        (c, 3) => format!("%{:02x}", c as u32),
        (c, _) => c.to_string(),
    }
}

fn test_keys() -> KeySet {
    use mcp_oauth_gateway::token::KeyMaterial;
    KeySet::new(
        Some(KeyMaterial::hmac_secret(b"0123456789abcdef0123456789abcdef").unwrap()),
        vec![],
    )
    .unwrap()
}
