//! Who may use the gateway and which hosts it guards: `ALLOWED_GITHUB_USERS` and
//! `RESOURCE_HOSTS` entries.

use crate::config::split_list;

/// `ALLOWED_GITHUB_USERS`: GitHub logins, compared trimmed and case-insensitively, and
/// `id:583231` entries naming the immutable numeric account id (`sub`), which a renamed and
/// re-registered login cannot take over. Empty allows nobody; `*` allows everyone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowList {
    Everyone,
    Users {
        logins: Vec<String>,
        ids: Vec<String>,
    },
}

impl AllowList {
    pub fn parse(raw: &str) -> Self {
        let entries: Vec<String> = split_list(raw).map(|n| n.to_ascii_lowercase()).collect();
        if entries.iter().any(|n| n == "*") {
            return AllowList::Everyone;
        }
        let (ids, logins): (Vec<String>, Vec<String>) =
            entries.into_iter().partition(|e| e.starts_with("id:"));
        AllowList::Users {
            logins,
            ids: ids
                .into_iter()
                .map(|e| e.trim_start_matches("id:").to_string())
                .collect(),
        }
    }

    /// Whether the account with id `id` (our `sub`) and login `login` may use the gateway.
    pub fn allows(&self, id: &str, login: &str) -> bool {
        match self {
            AllowList::Everyone => true,
            AllowList::Users { logins, ids } => {
                let login = login.trim();
                ids.iter().any(|i| i == id.trim())
                    || logins.iter().any(|n| n.eq_ignore_ascii_case(login))
            }
        }
    }
}

/// One `RESOURCE_HOSTS` entry: `mcp.example.com`, `*.example.com` (subdomains, not the apex),
/// or `*` (any host). Matched against the host without its port unless the pattern has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    Any,
    Exact(String),
    Subdomains(String),
}

impl HostPattern {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim().to_ascii_lowercase();
        if raw == "*" {
            return Ok(HostPattern::Any);
        }
        let (suffix, wildcard) = match raw.strip_prefix("*.") {
            Some(rest) => (rest.to_string(), true),
            None => (raw.clone(), false),
        };
        let valid = !suffix.is_empty()
            && suffix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
            && !suffix.starts_with('.')
            && !suffix.ends_with('.');
        if !valid {
            return Err(format!("{raw:?} is not a host name or *.domain pattern"));
        }
        Ok(if wildcard {
            HostPattern::Subdomains(format!(".{suffix}"))
        } else {
            HostPattern::Exact(suffix)
        })
    }

    /// `host` is lower-case, possibly with a `:port`.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Any => true,
            HostPattern::Exact(name) => {
                host == name || (!name.contains(':') && strip_port(host) == name)
            }
            HostPattern::Subdomains(dot_suffix) => {
                let h = if dot_suffix.contains(':') {
                    host
                } else {
                    strip_port(host)
                };
                h.len() > dot_suffix.len() && h.ends_with(dot_suffix.as_str())
            }
        }
    }
}

/// The host part of `host[:port]`, IPv6 literals included.
pub fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_semantics() {
        assert!(!AllowList::parse("").allows("1", "alice"));
        assert!(AllowList::parse("*").allows("1", "anyone"));
        let list = AllowList::parse(" Alice , bob");
        assert!(list.allows("1", "alice"));
        assert!(list.allows("2", "BOB "));
        assert!(!list.allows("3", "carol"));
        let by_id = AllowList::parse("id:583231, bob");
        assert!(by_id.allows("583231", "renamed-alice"));
        assert!(!by_id.allows("583232", "583231"));
        assert!(!by_id.allows("9", "id:583231"));
    }
}
