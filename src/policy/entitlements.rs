//! Scope entitlements: which users may hold which scope (`SCOPE_GRANTS`, `[[scope_grant]]`).
//!
//! In OAuth a scope is what a client may do *for* the user; what the user may do at all is an
//! entitlement, and the gateway owns it. The authorization server issues the requested scopes
//! ∩ the user's entitlements, at every login and again at every refresh; a scope no grant
//! names stays open to every admitted user (so a gateway without grants behaves as before).
//!
//! Environment form, grants separated by `;`, each `SCOPE=PRINCIPAL,…` in the principal syntax
//! of [`Admission::parse_principals`]:
//!
//! ```text
//! mcp:admin=@alice,group:ops; mcp:write=domain:example.com
//! ```
//!
//! With a `SCOPE_HIERARCHY`, holding a scope means holding what it implies: a user granted
//! `mcp:admin` is entitled to the scopes `mcp:admin` implies, and a scope is open to a user
//! only if every scope it implies is too (an open `mcp:all > mcp:admin` must not hand out a
//! restricted `mcp:admin`).

use serde::Deserialize;

use super::access::{Admission, AllowList, HostPattern, Identity};
use super::{Scope, ScopeHierarchy};

/// One grant: who may hold `scope`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeGrant {
    pub scope: String,
    pub who: Admission,
}

/// A `[[scope_grant]]` table of a TOML file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawScopeGrant {
    pub scope: String,
    /// Logins (`alice`, `github:alice`, `oidc:alice`) and `id:` entries.
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub emails: Vec<String>,
    #[serde(default)]
    pub email_domains: Vec<String>,
}

/// Every grant; a scope with none is open.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entitlements {
    grants: Vec<ScopeGrant>,
}

/// What a request asked for, cut to what the user may hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Narrowed {
    pub granted: Scope,
    /// The requested scopes left out, in request order.
    pub withheld: Vec<String>,
}

impl Entitlements {
    pub fn new(grants: Vec<ScopeGrant>) -> Self {
        Self { grants }
    }

    /// The environment form.
    pub fn parse(raw: &str, default_upstream: &'static str) -> Result<Vec<ScopeGrant>, String> {
        raw.split(';')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|part| {
                let (scope, who) = part
                    .split_once('=')
                    .ok_or_else(|| format!("grant {part:?} is not SCOPE=WHO,…"))?;
                let scope = scope.trim();
                if !super::is_scope_token(scope) {
                    return Err(format!("{scope:?} is not a valid scope token"));
                }
                let who = Admission::parse_principals(who, default_upstream)
                    .map_err(|e| format!("grant {part:?}: {e}"))?;
                Ok(ScopeGrant {
                    scope: scope.to_string(),
                    who,
                })
            })
            .collect()
    }

    /// `[[scope_grant]]` tables.
    pub fn from_tables(
        tables: Vec<RawScopeGrant>,
        default_upstream: &'static str,
    ) -> Result<Vec<ScopeGrant>, String> {
        tables
            .into_iter()
            .map(|t| {
                let label = format!("[[scope_grant]] scope = {:?}", t.scope);
                if !super::is_scope_token(&t.scope) {
                    return Err(format!("{label}: not a valid scope token"));
                }
                let mut who = Admission::default();
                if !t.users.is_empty() {
                    who.users = Some(AllowList::parse(&t.users.join(","), default_upstream));
                }
                who.groups = t.groups;
                for email in t.emails {
                    if !email.contains('@') {
                        return Err(format!("{label}: {email:?} is not an e-mail address"));
                    }
                    who.emails.push(email.to_ascii_lowercase());
                }
                for domain in t.email_domains {
                    match HostPattern::parse(domain.trim_start_matches('@')) {
                        Ok(HostPattern::Any) => {
                            return Err(format!("{label}: \"*\" would name every address"));
                        }
                        Ok(p) => who.email_domains.push(p),
                        Err(e) => return Err(format!("{label}: {e}")),
                    }
                }
                if who == Admission::default() {
                    return Err(format!("{label}: names nobody"));
                }
                Ok(ScopeGrant {
                    scope: t.scope,
                    who,
                })
            })
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.grants.is_empty()
    }

    /// Every scope some grant names.
    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.grants.iter().map(|g| g.scope.as_str())
    }

    fn restricted(&self, scope: &str) -> bool {
        self.grants.iter().any(|g| g.scope == scope)
    }

    /// Whether `who` may hold `scope` by the grants alone: it is open, or a grant for it (or
    /// for a scope that implies it) names them.
    fn granted_directly(
        &self,
        hierarchy: &ScopeHierarchy,
        scope: &str,
        who: &Identity<'_>,
    ) -> bool {
        !self.restricted(scope)
            || self
                .grants
                .iter()
                .any(|g| hierarchy.implies(&g.scope, scope) && g.who.admits(who))
    }

    /// Whether `who` may hold `scope`: by the grants, and so may they every scope it implies
    /// (holding it gives those at every check).
    pub fn allows(&self, hierarchy: &ScopeHierarchy, scope: &str, who: &Identity<'_>) -> bool {
        self.granted_directly(hierarchy, scope, who)
            && hierarchy
                .implied(scope)
                .all(|implied| self.granted_directly(hierarchy, implied, who))
    }

    /// `requested` ∩ what `who` is entitled to.
    pub fn narrow(
        &self,
        hierarchy: &ScopeHierarchy,
        requested: &Scope,
        who: &Identity<'_>,
    ) -> Narrowed {
        let granted = requested.filter(|s| self.allows(hierarchy, s, who));
        let withheld = requested.beyond(&granted.iter().map(str::to_string).collect::<Vec<_>>());
        Narrowed { granted, withheld }
    }

    /// Who may hold `scope`, in words, when some grant restricts it (the consent page says so
    /// beside the scope).
    pub fn restricted_to(&self, hierarchy: &ScopeHierarchy, scope: &str) -> Option<String> {
        let restricting: Vec<&str> = std::iter::once(scope)
            .chain(hierarchy.implied(scope))
            .filter(|s| self.restricted(s))
            .collect();
        if restricting.is_empty() {
            return None;
        }
        let who: Vec<String> = self
            .grants
            .iter()
            .filter(|g| restricting.iter().any(|r| hierarchy.implies(&g.scope, r)))
            .map(|g| g.who.summary())
            .collect();
        Some(who.join("; "))
    }

    /// One line per grant, for `--check-config`.
    pub fn describe(&self) -> Vec<String> {
        self.grants
            .iter()
            .map(|g| format!("{} only for [{}]", g.scope, g.who.summary()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id<'a>(login: &'a str, groups: &'a [String]) -> Identity<'a> {
        Identity::new("1", login, None, groups)
    }

    #[test]
    fn requested_is_cut_to_what_the_user_may_hold() {
        let grants = Entitlements::new(
            Entitlements::parse(
                "mcp:admin=@alice,group:ops; mcp:write=domain:example.com",
                "github",
            )
            .unwrap(),
        );
        let h = ScopeHierarchy::default();
        let ops = vec!["ops".to_string()];
        let all = Scope::parse("mcp mcp:write mcp:admin");
        let n = grants.narrow(&h, &all, &id("bob", &[]));
        assert_eq!(n.granted.to_string(), "mcp");
        assert_eq!(n.withheld, ["mcp:write", "mcp:admin"]);
        assert_eq!(
            grants
                .narrow(&h, &all, &id("alice", &[]))
                .granted
                .to_string(),
            "mcp mcp:admin"
        );
        assert_eq!(
            grants
                .narrow(&h, &all, &id("carol", &ops))
                .granted
                .to_string(),
            "mcp mcp:admin"
        );
        let mail = Identity::new("1", "dan", Some("dan@example.com"), &[]);
        assert_eq!(
            grants.narrow(&h, &all, &mail).granted.to_string(),
            "mcp mcp:write"
        );
        // Groups are compared exactly as sent.
        let spaced = vec!["ops ".to_string()];
        assert_eq!(
            grants
                .narrow(&h, &all, &id("eve", &spaced))
                .granted
                .to_string(),
            "mcp"
        );
    }

    #[test]
    fn hierarchies_grant_what_a_scope_implies_and_never_smuggle_a_restricted_one() {
        let h = ScopeHierarchy::parse("mcp:all > mcp:admin > mcp:write").unwrap();
        let grants = Entitlements::new(
            Entitlements::parse("mcp:admin=group:ops; mcp:write=@bob", "github").unwrap(),
        );
        let ops = vec!["ops".to_string()];
        // mcp:admin granted: mcp:write comes with it.
        assert!(grants.allows(&h, "mcp:write", &id("carol", &ops)));
        assert!(grants.allows(&h, "mcp:write", &id("bob", &[])));
        assert!(!grants.allows(&h, "mcp:admin", &id("bob", &[])));
        // mcp:all is open, but it implies the restricted mcp:admin.
        assert!(!grants.allows(&h, "mcp:all", &id("bob", &[])));
        assert!(grants.allows(&h, "mcp:all", &id("carol", &ops)));
        assert_eq!(
            grants.restricted_to(&h, "mcp:all").as_deref(),
            Some("groups: ops; users: github:bob")
        );
        assert_eq!(grants.restricted_to(&h, "mcp"), None);
    }

    #[test]
    fn bad_grants_are_refused() {
        for bad in ["mcp:admin", "mcp:admin=", "bad\"scope=@a", "x=group:"] {
            assert!(Entitlements::parse(bad, "github").is_err(), "{bad}");
        }
        let tables = vec![RawScopeGrant {
            scope: "mcp:admin".into(),
            users: vec![],
            groups: vec![],
            emails: vec![],
            email_domains: vec![],
        }];
        assert!(Entitlements::from_tables(tables, "github").is_err());
    }
}
