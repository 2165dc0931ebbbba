//! `REQUIRED_SCOPES`: the scopes a request needs by host and path prefix, and the RFC 6749
//! scope-token grammar every scope setting is checked against.

use super::access::strip_port;
use super::split_list;

/// `REQUIRED_SCOPES`: scopes every token must carry, globally or under a host/path prefix.
///
/// Grammar: rules separated by `;`, each `[prefix=]scope scope …` where prefix is `host`,
/// `host/path` or `/path`. All rules that match a request apply (their scopes add up).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScopePolicy {
    rules: Vec<ScopeRule>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ScopeRule {
    /// Lower-case host the rule is limited to.
    host: Option<String>,
    /// Path prefix, normalised as request paths are ([`crate::forwarded::normalize_path`]).
    path: Option<String>,
    scopes: Vec<String>,
}

impl ScopePolicy {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut rules = Vec::new();
        for part in raw.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (host, path, scopes) = match part.split_once('=') {
                Some((prefix, scopes)) => {
                    let prefix = prefix.trim();
                    if prefix.is_empty() {
                        return Err(format!("rule {part:?} has an empty prefix"));
                    }
                    let (host, path) = match prefix.find('/') {
                        Some(0) => (None, Some(prefix)),
                        Some(at) => (Some(&prefix[..at]), Some(&prefix[at..])),
                        None => (Some(prefix), None),
                    };
                    let path = path
                        .map(|p| {
                            crate::forwarded::normalize_path(p)
                                .map(|p| p.into_owned())
                                .ok_or_else(|| format!("rule {part:?} has an unreadable path"))
                        })
                        .transpose()?;
                    (host.map(str::to_ascii_lowercase), path, scopes)
                }
                None => (None, None, part),
            };
            let scopes: Vec<String> = split_list(scopes).map(str::to_string).collect();
            if scopes.is_empty() {
                return Err(format!("rule {part:?} names no scope"));
            }
            if let Some(bad) = scopes.iter().find(|s| !is_scope_token(s)) {
                return Err(format!(
                    "{bad:?} is not a valid scope token (RFC 6749 §3.3)"
                ));
            }
            rules.push(ScopeRule { host, path, scopes });
        }
        Ok(Self { rules })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The scopes a request to `host` + `path` needs, without duplicates. `path` comes from
    /// [`crate::forwarded::normalize_path`]; with no readable path (`None`), every path
    /// rule applies: an unreadable path must not skip a rule.
    pub fn required_for(&self, host: &str, path: Option<&str>) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for rule in &self.rules {
            let host_ok = rule
                .host
                .as_deref()
                .is_none_or(|h| strip_port(host) == h || host == h);
            let path_ok = match (rule.path.as_deref(), path) {
                (None, _) | (Some(_), None) => true,
                (Some(prefix), Some(path)) => path.starts_with(prefix),
            };
            if host_ok && path_ok {
                for s in &rule.scopes {
                    if !out.contains(&s.as_str()) {
                        out.push(s);
                    }
                }
            }
        }
        out
    }

    /// Every scope any rule names.
    pub fn all_scopes(&self) -> Vec<String> {
        unique(self.rules.iter().flat_map(|r| r.scopes.iter()))
    }
}

/// `scopes` in order, each once.
pub(crate) fn unique<'a>(scopes: impl Iterator<Item = &'a String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in scopes {
        if !out.contains(s) {
            out.push(s.clone());
        }
    }
    out
}

/// A `scope` value (RFC 6749 §3.3) parsed once at the edge: its tokens in order, each once.
/// Written back out space-separated ([`std::fmt::Display`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope(Vec<String>);

impl Scope {
    /// Splits on spaces; empty tokens and repeats are dropped.
    pub fn parse(raw: &str) -> Self {
        let mut tokens: Vec<String> = Vec::new();
        for t in raw.split(' ').filter(|t| !t.is_empty()) {
            if !tokens.iter().any(|x| x == t) {
                tokens.push(t.to_string());
            }
        }
        Self(tokens)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    pub fn contains(&self, token: &str) -> bool {
        self.0.iter().any(|t| t == token)
    }

    /// The first token `allowed` refuses.
    pub fn first_not(&self, allowed: impl Fn(&str) -> bool) -> Option<&str> {
        self.iter().find(|t| !allowed(t))
    }

    /// The tokens `keep` accepts, in order.
    pub fn filter(&self, keep: impl Fn(&str) -> bool) -> Scope {
        Scope(self.0.iter().filter(|t| keep(t)).cloned().collect())
    }

    /// Tokens of `self` that `other` lacks, in order.
    pub fn beyond(&self, other: &[String]) -> Vec<String> {
        self.iter()
            .filter(|t| !other.iter().any(|o| o == t))
            .map(str::to_string)
            .collect()
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join(" "))
    }
}

/// RFC 6749 §3.3 scope-token: printable ASCII except space, `"` and `\`.
pub fn is_scope_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_values_parse_once() {
        let s = Scope::parse(" mcp  mcp:admin mcp ");
        assert_eq!(s.to_string(), "mcp mcp:admin");
        assert!(s.contains("mcp:admin") && !s.contains("mcp:write"));
        assert_eq!(s.first_not(|t| t == "mcp"), Some("mcp:admin"));
        assert_eq!(s.beyond(&["mcp".to_string()]), vec!["mcp:admin"]);
        assert!(Scope::parse("   ").is_empty());
    }

    #[test]
    fn scope_policy_by_prefix() {
        let p =
            ScopePolicy::parse("mcp; admin.example.com=mcp:admin; /mcp/tools=mcp:write").unwrap();
        assert_eq!(p.required_for("a.example.com", Some("/mcp")), vec!["mcp"]);
        assert_eq!(
            p.required_for("a.example.com", None),
            vec!["mcp", "mcp:write"],
            "no readable path: every path rule"
        );
        assert_eq!(
            p.required_for("admin.example.com:443", Some("/mcp")),
            vec!["mcp", "mcp:admin"]
        );
        assert_eq!(
            p.required_for("a.example.com", Some("/mcp/tools/x")),
            vec!["mcp", "mcp:write"]
        );
        // Rule prefixes are normalised as request paths are: case, escapes, separators.
        let p = ScopePolicy::parse("/mcp/Tools=mcp:admin; Admin.Example.com/A%2fB=x").unwrap();
        let path = |raw| crate::forwarded::normalize_path(raw).unwrap().into_owned();
        for raw in [
            "/MCP/TOOLS",
            "/mcp%2Ftools",
            "/mcp%5Ctools/x",
            "/mcp/./TOOLS",
        ] {
            assert_eq!(
                p.required_for("a", Some(&path(raw))),
                vec!["mcp:admin"],
                "{raw}"
            );
        }
        assert_eq!(
            p.required_for("admin.example.com", Some(&path("/a/b/c"))),
            vec!["x"]
        );
        assert!(ScopePolicy::parse("/bad%zz=x").is_err());
    }
}
