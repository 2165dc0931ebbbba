//! Who may use the gateway and which hosts it guards: the allow-lists (`ALLOWED_USERS` /
//! `ALLOWED_GITHUB_USERS`, `ALLOWED_EMAILS`, `ALLOWED_EMAIL_DOMAINS`, `ALLOWED_GROUPS`) and
//! `RESOURCE_HOSTS` entries.

use super::split_list;

/// Who an account belongs to upstream, as allow-lists name it: `github` (numeric ids, and the
/// development login's `dev-` ids, which stand in for GitHub) or `oidc` (`{issuer}#{subject}`
/// ids). Derived from the id alone, so the authorization server and verify agree without a claim.
pub fn upstream_of(id: &str) -> &'static str {
    if id.contains('#') { "oidc" } else { "github" }
}

/// How the `sub` of a client acting as itself (`client_credentials`) begins.
pub const CLIENT_SUBJECT_PREFIX: &str = "client:";

/// The upstream names a login entry may be qualified with (`github:carol`, `oidc:carol`).
pub const UPSTREAM_NAMES: &[&str] = &["github", "oidc"];

/// A login name on one upstream: `github:carol` and `oidc:carol` are different people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    pub upstream: &'static str,
    /// As configured (trimmed by the list syntax); compared ASCII-case-insensitively.
    pub name: String,
}

impl Login {
    /// `github:carol`, `oidc:carol`, or a bare `carol` on `default_upstream`.
    pub fn parse(entry: &str, default_upstream: &'static str) -> Self {
        if let Some((prefix, name)) = entry.split_once(':')
            && let Some(upstream) = UPSTREAM_NAMES
                .iter()
                .find(|u| u.eq_ignore_ascii_case(prefix))
            && !name.is_empty()
        {
            return Login {
                upstream,
                name: name.to_string(),
            };
        }
        Login {
            upstream: default_upstream,
            name: entry.to_string(),
        }
    }

    /// Exactly this name, ASCII case aside: a presented name is never trimmed, so `carol ` is
    /// not `carol`, and no Unicode folding makes another spelling equal.
    pub fn matches(&self, who: &Identity<'_>) -> bool {
        self.upstream == who.upstream && self.name.eq_ignore_ascii_case(who.login)
    }
}

impl std::fmt::Display for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.upstream, self.name)
    }
}

/// `ALLOWED_USERS` (or `ALLOWED_GITHUB_USERS`): logins of one upstream (`github:carol`,
/// `oidc:carol`, or bare for the first provider of `UPSTREAM`) and `id:583231` entries naming
/// the immutable account id (`sub`: GitHub's numeric id, `{issuer}#{subject}`), which a renamed
/// and re-registered login cannot take over. Empty allows nobody; `*` allows everyone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowList {
    Everyone,
    Users {
        logins: Vec<Login>,
        ids: Vec<String>,
    },
}

impl AllowList {
    pub fn parse(raw: &str, default_upstream: &'static str) -> Self {
        let entries: Vec<&str> = split_list(raw).collect();
        if entries.contains(&"*") {
            return AllowList::Everyone;
        }
        let mut out = AllowList::Users {
            logins: Vec::new(),
            ids: Vec::new(),
        };
        for entry in entries {
            out.add(entry, default_upstream);
        }
        out
    }

    /// Adds one entry (`id:…`, `upstream:login` or a bare login).
    fn add(&mut self, entry: &str, default_upstream: &'static str) {
        let AllowList::Users { logins, ids } = self else {
            return;
        };
        // Ids compare exactly (an OpenID subject may be case-sensitive); logins ignoring ASCII
        // case. A client acting as itself (`client:{id}`) and a workload or OpenID account
        // (`{issuer}#{subject}`) are named by their id as it is.
        match entry.get(..3) {
            Some(p) if p.eq_ignore_ascii_case("id:") => ids.push(entry[3..].to_string()),
            _ if entry.starts_with(CLIENT_SUBJECT_PREFIX) || entry.contains('#') => {
                ids.push(entry.to_string())
            }
            _ => logins.push(Login::parse(entry, default_upstream)),
        }
    }

    /// Whether `who` may use the gateway.
    pub fn allows(&self, who: &Identity<'_>) -> bool {
        match self {
            AllowList::Everyone => true,
            AllowList::Users { logins, ids } => {
                ids.iter().any(|i| i == who.id) || logins.iter().any(|l| l.matches(who))
            }
        }
    }

    fn describe(&self) -> String {
        match self {
            AllowList::Everyone => "everyone (*)".to_string(),
            AllowList::Users { logins, ids } => {
                let mut names: Vec<String> = logins.iter().map(Login::to_string).collect();
                names.extend(ids.iter().map(|i| format!("id:{i}")));
                names.join(", ")
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
    /// [`upstream_of`] the id.
    pub upstream: &'static str,
    /// Only an address the upstream verified.
    pub email: Option<&'a str>,
    pub groups: &'a [String],
}

impl<'a> Identity<'a> {
    pub fn new(id: &'a str, login: &'a str, email: Option<&'a str>, groups: &'a [String]) -> Self {
        Self {
            id,
            login,
            upstream: upstream_of(id),
            email,
            groups,
        }
    }

    /// A subject of any kind: a client acting as itself (`client:{id}`) or a workload is on
    /// no upstream, so no login entry (`github:…`, `oidc:…`, a bare name) ever names it; only
    /// its id does.
    pub fn of_subject(
        id: &'a str,
        login: &'a str,
        email: Option<&'a str>,
        groups: &'a [String],
        kind: crate::token::SubjectType,
    ) -> Self {
        let mut who = Self::new(id, login, email, groups);
        who.upstream = match kind {
            crate::token::SubjectType::User => who.upstream,
            crate::token::SubjectType::Client => "client",
            crate::token::SubjectType::Workload => "workload",
        };
        who
    }
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
        if self.users.as_ref().is_some_and(|l| l.allows(who)) {
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
        if let Some(users) = &self.users {
            lines.push(format!("users: {}", users.describe()));
        }
        if !self.emails.is_empty() {
            lines.push(format!("verified e-mails: {}", self.emails.join(", ")));
        }
        if !self.email_domains.is_empty() {
            let domains: Vec<String> = self
                .email_domains
                .iter()
                .map(HostPattern::to_string)
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

    /// The same on one line, for a rule or a grant.
    pub fn summary(&self) -> String {
        self.describe().join("; ")
    }

    /// A list of principals in the form `SCOPE_GRANTS` and `TOOL_POLICY` write after their
    /// `=` or `@`: `@alice` or `alice` (a login of the first upstream), `github:alice`,
    /// `oidc:alice`, `id:583231`, `group:ops`, `email:a@example.com`, `domain:example.com`
    /// (or `domain:*.example.com`), `*` (everyone).
    pub fn parse_principals(raw: &str, default_upstream: &'static str) -> Result<Self, String> {
        let mut out = Admission::default();
        for entry in split_list(raw) {
            let entry = entry.strip_prefix('@').unwrap_or(entry);
            let (kind, value) = entry.split_once(':').unwrap_or(("", entry));
            match kind.to_ascii_lowercase().as_str() {
                _ if entry == "*" => out.users = Some(AllowList::Everyone),
                "group" if !value.is_empty() => out.groups.push(value.to_string()),
                "email" if value.contains('@') => out.emails.push(value.to_ascii_lowercase()),
                "domain" => {
                    let value = value.trim_start_matches('@');
                    match HostPattern::parse(value)? {
                        HostPattern::Any => {
                            return Err(
                                "domain:* would name every address; write * for everyone".into()
                            );
                        }
                        pattern => out.email_domains.push(pattern),
                    }
                }
                "group" | "email" => return Err(format!("{entry:?} names nothing")),
                _ => out
                    .users
                    .get_or_insert_with(|| AllowList::Users {
                        logins: Vec::new(),
                        ids: Vec::new(),
                    })
                    .add(entry, default_upstream),
            }
        }
        if out == Admission::default() {
            return Err("names nobody".into());
        }
        Ok(out)
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

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostPattern::Any => f.write_str("*"),
            HostPattern::Exact(d) => f.write_str(d),
            HostPattern::Subdomains(d) => write!(f, "*{d}"),
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

    fn who<'a>(id: &'a str, login: &'a str) -> Identity<'a> {
        Identity::new(id, login, None, &[])
    }

    #[test]
    fn allow_list_semantics() {
        assert!(!AllowList::parse("", "github").allows(&who("1", "alice")));
        assert!(AllowList::parse("*", "github").allows(&who("1", "anyone")));
        let list = AllowList::parse(" Alice , bob", "github");
        assert!(list.allows(&who("1", "alice")));
        assert!(list.allows(&who("2", "BOB")));
        assert!(!list.allows(&who("3", "carol")));
        // A presented name is compared as it is: no trimming, no Unicode folding.
        assert!(!list.allows(&who("2", "BOB ")));
        assert!(!list.allows(&who("2", "bob\u{a0}")));
        assert!(!list.allows(&who("2", "\u{1d41b}ob")));
        let by_id = AllowList::parse("id:583231, bob", "github");
        assert!(by_id.allows(&who("583231", "renamed-alice")));
        assert!(!by_id.allows(&who("583232", "583231")));
        assert!(!by_id.allows(&who("9", "id:583231")));
        let oidc = AllowList::parse("id:https://idp.example/t#AbC", "github");
        assert!(oidc.allows(&who("https://idp.example/t#AbC", "x")));
        assert!(!oidc.allows(&who("https://idp.example/t#abc", "x")));
        // A login names one upstream's account: the bare form means the first upstream.
        let carol = AllowList::parse("carol, oidc:dave", "github");
        assert!(carol.allows(&who("7", "carol")));
        assert!(!carol.allows(&who("https://idp.example#c", "carol")));
        assert!(carol.allows(&who("https://idp.example#d", "dave")));
        assert!(!carol.allows(&who("8", "dave")));
        let on_oidc = AllowList::parse("carol, GitHub:erin", "oidc");
        assert!(on_oidc.allows(&who("https://idp.example#c", "Carol")));
        assert!(!on_oidc.allows(&who("7", "carol")));
        assert!(on_oidc.allows(&who("9", "erin")));
    }

    #[test]
    fn principal_lists() {
        let p = Admission::parse_principals(
            "@alice, group:ops, domain:*.corp.example, email:B@x.org, id:42",
            "github",
        )
        .unwrap();
        let groups = vec!["ops".to_string()];
        assert!(p.admits(&who("1", "alice")));
        assert!(p.admits(&who("42", "whoever")));
        assert!(p.admits(&Identity::new("2", "x", None, &groups)));
        assert!(p.admits(&Identity::new("2", "x", Some("a@eu.corp.example"), &[])));
        assert!(p.admits(&Identity::new("2", "x", Some("b@x.org"), &[])));
        assert!(!p.admits(&Identity::new("2", "x", Some("a@corp.example"), &[])));
        let spaced = vec!["ops ".to_string(), "ops\u{a0}".to_string()];
        assert!(!p.admits(&Identity::new("2", "x", None, &spaced)));
        assert!(Admission::parse_principals("", "github").is_err());
        assert!(Admission::parse_principals("group:", "github").is_err());
        assert!(Admission::parse_principals("email:nobody", "github").is_err());
        assert!(Admission::parse_principals("domain:*", "github").is_err());
        assert!(
            Admission::parse_principals("*", "github")
                .unwrap()
                .admits(&who("1", "z"))
        );
    }

    #[test]
    fn admission_by_email_domain_and_group() {
        let groups = vec!["eng".to_string()];
        let who = |email: Option<&'static str>, groups: &'static [String]| {
            Identity::new("1", "alice", email, groups)
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

#[cfg(test)]
mod machine_subjects {
    use super::*;
    use crate::token::SubjectType;

    #[test]
    fn machine_subjects_are_named_by_their_ids_and_never_by_a_login() {
        let workload_id = "https://k8s.example#system:serviceaccount:prod:api";
        let who =
            Admission::parse_principals(&format!("client:bot, {workload_id}"), "github").unwrap();
        let bot = Identity::of_subject("client:bot", "client:bot", None, &[], SubjectType::Client);
        let workload =
            Identity::of_subject(workload_id, workload_id, None, &[], SubjectType::Workload);
        assert!(who.admits(&bot));
        assert!(who.admits(&workload));
        assert!(!who.admits(&Identity::new("client:other", "x", None, &[])));
        // A login entry of any upstream never names a client or a workload.
        let logins = Admission::parse_principals("github:bot, oidc:bot, bot", "github").unwrap();
        let named_bot = Identity::of_subject("client:b", "bot", None, &[], SubjectType::Client);
        assert!(!logins.admits(&named_bot));
        assert!(logins.admits(&Identity::new("1", "bot", None, &[])));
    }
}
