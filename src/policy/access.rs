//! Who may use the gateway and which hosts it guards: the allow-lists (`ALLOWED_USERS` /
//! `ALLOWED_GITHUB_USERS`, `ALLOWED_EMAILS`, `ALLOWED_EMAIL_DOMAINS`, `ALLOWED_GROUPS`) and
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
        let entries: Vec<&str> = split_list(raw).collect();
        if entries.contains(&"*") {
            return AllowList::Everyone;
        }
        // Logins compare case-insensitively; ids (an OpenID subject may be case-sensitive)
        // exactly.
        let (ids, logins): (Vec<&str>, Vec<&str>) = entries
            .into_iter()
            .partition(|e| e.get(..3).is_some_and(|p| p.eq_ignore_ascii_case("id:")));
        AllowList::Users {
            logins: logins.into_iter().map(str::to_ascii_lowercase).collect(),
            ids: ids.into_iter().map(|e| e[3..].to_string()).collect(),
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

/// Who the allow-lists are asked about: the account and what the upstream vouched for.
#[derive(Debug, Clone, Copy)]
pub struct Identity<'a> {
    /// Our `sub`: GitHub's numeric id, or `{issuer}#{subject}` for an OpenID provider.
    pub id: &'a str,
    pub login: &'a str,
    /// Only an address the upstream verified.
    pub email: Option<&'a str>,
    pub groups: &'a [String],
}

/// Every allow-list together: a user is admitted when any configured list names them (their
/// account, their verified e-mail, its domain, or one of their groups). None configured
/// admits nobody: a forgotten setting must not open the gateway to everyone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Admission {
    /// `ALLOWED_USERS` (or its older name `ALLOWED_GITHUB_USERS`): logins and `id:` entries.
    pub users: Option<AllowList>,
    /// `ALLOWED_EMAILS`: verified addresses, case-insensitive.
    pub emails: Vec<String>,
    /// `ALLOWED_EMAIL_DOMAINS`: `example.com` (exactly) or `*.example.com` (its subdomains),
    /// matched against the domain of a verified address.
    pub email_domains: Vec<HostPattern>,
    /// `ALLOWED_GROUPS`: group names or ids as the upstream sends them, exactly.
    pub groups: Vec<String>,
}

impl Admission {
    /// Whether any list is set (verify re-checks only then; unset means the authorization
    /// server admits nobody).
    pub fn is_configured(&self) -> bool {
        self.users.is_some()
            || !self.emails.is_empty()
            || !self.email_domains.is_empty()
            || !self.groups.is_empty()
    }

    pub fn admits(&self, who: &Identity<'_>) -> bool {
        if self
            .users
            .as_ref()
            .is_some_and(|l| l.allows(who.id, who.login))
        {
            return true;
        }
        if let Some(email) = who.email.map(str::trim).filter(|e| !e.is_empty()) {
            if self.emails.iter().any(|e| e.eq_ignore_ascii_case(email)) {
                return true;
            }
            // The part after the last `@`; an address without one has no domain.
            if let Some((local, domain)) = email.rsplit_once('@')
                && !local.is_empty()
                && !domain.is_empty()
            {
                let domain = domain.to_ascii_lowercase();
                // A port or a bracket cannot be part of a mail domain.
                if !domain.contains([':', '[', ']'])
                    && self.email_domains.iter().any(|p| p.matches(&domain))
                {
                    return true;
                }
            }
        }
        who.groups
            .iter()
            .any(|g| self.groups.iter().any(|allowed| allowed == g))
    }

    /// One line per configured list, for `--check-config`.
    pub fn describe(&self) -> Vec<String> {
        let mut lines = Vec::new();
        match &self.users {
            Some(AllowList::Everyone) => lines.push("users: everyone (*)".to_string()),
            Some(AllowList::Users { logins, ids }) => lines.push(format!(
                "users: {} login(s), {} id(s)",
                logins.len(),
                ids.len()
            )),
            None => {}
        }
        if !self.emails.is_empty() {
            lines.push(format!("verified e-mails: {}", self.emails.join(", ")));
        }
        if !self.email_domains.is_empty() {
            let domains: Vec<String> = self
                .email_domains
                .iter()
                .map(|p| match p {
                    HostPattern::Any => "*".to_string(),
                    HostPattern::Exact(d) => d.clone(),
                    HostPattern::Subdomains(d) => format!("*{d}"),
                })
                .collect();
            lines.push(format!("verified e-mail domains: {}", domains.join(", ")));
        }
        if !self.groups.is_empty() {
            lines.push(format!("groups: {}", self.groups.join(", ")));
        }
        if lines.is_empty() {
            lines.push("nobody (no ALLOWED_* list is set)".to_string());
        }
        lines
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
        let oidc = AllowList::parse("id:https://idp.example/t#AbC");
        assert!(oidc.allows("https://idp.example/t#AbC", "x"));
        assert!(!oidc.allows("https://idp.example/t#abc", "x"));
    }

    #[test]
    fn admission_by_email_domain_and_group() {
        let groups = vec!["eng".to_string()];
        let who = |email: Option<&'static str>, groups: &'static [String]| Identity {
            id: "1",
            login: "alice",
            email,
            groups,
        };
        assert!(!Admission::default().admits(&who(Some("a@example.com"), &[])));
        let by_domain = Admission {
            email_domains: vec![
                HostPattern::parse("example.com").unwrap(),
                HostPattern::parse("*.corp.example").unwrap(),
            ],
            ..Admission::default()
        };
        assert!(by_domain.admits(&who(Some("Alice@Example.COM"), &[])));
        assert!(by_domain.admits(&who(Some("a@eu.corp.example"), &[])));
        assert!(!by_domain.admits(&who(Some("a@corp.example"), &[])));
        assert!(!by_domain.admits(&who(Some("a@example.com.evil.org"), &[])));
        assert!(!by_domain.admits(&who(Some("a@evil.org@x"), &[])));
        assert!(!by_domain.admits(&who(Some("example.com"), &[])));
        assert!(!by_domain.admits(&who(Some("a@example.com:443"), &[])));
        assert!(!by_domain.admits(&who(None, &[])));
        let by_group = Admission {
            groups: groups.clone(),
            ..Admission::default()
        };
        let leaked: &'static [String] = Box::leak(groups.into_boxed_slice());
        assert!(by_group.admits(&who(None, leaked)));
        let other: &'static [String] = Box::leak(vec!["Eng".to_string()].into_boxed_slice());
        assert!(!by_group.admits(&who(None, other)));
    }
}
