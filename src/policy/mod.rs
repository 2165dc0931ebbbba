//! Authorization policy beyond "a valid token": scope hierarchies (a broader scope implies
//! narrower ones, as the MCP authorization spec asks resource servers to honour) and per-tool
//! rules, "who may call which tool", decided at ForwardAuth from the JSON-RPC method and the
//! tool, resource or prompt name (MCP 2026-07-28 `Mcp-Method`/`Mcp-Name`, or the forwarded
//! body). Pure types: parsed and validated once at startup, evaluated without allocation.
//!
//! Environment form (`TOOL_POLICY`), rules separated by `;`:
//!
//! ```text
//! tools/call delete_*=mcp:admin; tools/call deploy=mcp:write @alice,id:583231; resources/read file:///secret/*=mcp:admin
//! ```
//!
//! Each rule is `METHOD [NAME]=SCOPE… [@USER,…]`; METHOD and NAME are exact or glob (`*` any
//! run of characters, `?` one), compared case-insensitively. In a `--config` TOML file the same
//! rules may be written as tables (`[[tool_policy]]` with `method`, `name`, `scopes`, `users`).
//! `SCOPE_HIERARCHY`: chains separated by `;`, `mcp:admin > mcp:write > mcp:read` (each scope
//! implies those to its right).

use std::collections::{HashMap, HashSet};

use serde::Deserialize;

mod access;
mod scopes;

mod entitlements;
pub mod redirect;
mod uri;

pub use access::{
    Admission, AllowList, CLIENT_SUBJECT_PREFIX, HostPattern, Identity, Login, UPSTREAM_NAMES,
    strip_port, upstream_of,
};
pub use entitlements::{Entitlements, Narrowed, RawScopeGrant, ScopeGrant};
pub use redirect::{OOB_REDIRECT, is_loopback, redirect_matches, validate_redirect_uri};
pub use scopes::{Scope, ScopePolicy, is_scope_token};
pub use uri::normalize_resource_uri;

/// Splits a list written with commas and/or white space (every list setting's syntax).
pub fn split_list(raw: &str) -> impl Iterator<Item = &str> {
    raw.split(|c: char| c == ',' || c.is_whitespace())
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// `SCOPE_HIERARCHY`: which scopes a granted scope implies, transitively.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScopeHierarchy {
    implies: HashMap<String, HashSet<String>>,
}

impl ScopeHierarchy {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut direct: HashMap<String, HashSet<String>> = HashMap::new();
        for chain in raw.split(';').map(str::trim).filter(|c| !c.is_empty()) {
            let scopes: Vec<&str> = chain.split('>').map(str::trim).collect();
            if scopes.len() < 2 {
                return Err(format!(
                    "{chain:?} is not a chain like \"mcp:admin > mcp:write\""
                ));
            }
            if let Some(bad) = scopes.iter().find(|s| !is_scope_token(s)) {
                return Err(format!("{bad:?} is not a valid scope token"));
            }
            for pair in scopes.windows(2) {
                direct
                    .entry(pair[0].to_string())
                    .or_default()
                    .insert(pair[1].to_string());
            }
        }
        // Transitive closure; a cycle would make two scopes the same, which is a typo.
        let mut implies = HashMap::new();
        for scope in direct.keys() {
            let mut seen = HashSet::new();
            let mut todo: Vec<&String> = direct[scope].iter().collect();
            while let Some(next) = todo.pop() {
                if next == scope {
                    return Err(format!("{scope:?} implies itself (a cycle)"));
                }
                if seen.insert(next.clone())
                    && let Some(more) = direct.get(next)
                {
                    todo.extend(more.iter());
                }
            }
            implies.insert(scope.clone(), seen);
        }
        Ok(Self { implies })
    }

    pub fn is_empty(&self) -> bool {
        self.implies.is_empty()
    }

    /// `a ⊇ b, c; …`, sorted, for `--check-config`.
    pub fn describe(&self) -> String {
        let mut lines: Vec<String> = self
            .implies
            .iter()
            .map(|(scope, implied)| {
                let mut implied: Vec<&str> = implied.iter().map(String::as_str).collect();
                implied.sort_unstable();
                format!("{scope} ⊇ {}", implied.join(", "))
            })
            .collect();
        lines.sort();
        lines.join("; ")
    }

    /// Whether holding `broad` gives `narrow` (itself, or by implication).
    pub fn implies(&self, broad: &str, narrow: &str) -> bool {
        broad == narrow
            || self
                .implies
                .get(broad)
                .is_some_and(|set| set.contains(narrow))
    }

    /// The scopes `scope` implies (not itself).
    pub fn implied<'a>(&'a self, scope: &str) -> impl Iterator<Item = &'a str> {
        self.implies
            .get(scope)
            .into_iter()
            .flat_map(|set| set.iter().map(String::as_str))
    }

    /// Whether `granted` (the token's scopes) include `needed`, directly or by implication.
    pub fn satisfies<'a>(&self, granted: impl IntoIterator<Item = &'a str>, needed: &str) -> bool {
        granted
            .into_iter()
            .any(|g| g == needed || self.implies.get(g).is_some_and(|set| set.contains(needed)))
    }
}

/// What to do when a rule needs the tool name and the request does not say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MissingName {
    #[default]
    Deny,
    Allow,
}

/// A case-insensitive pattern: exact, or with `*` and `?`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    pattern: String,
    /// ASCII patterns of the common shapes, matched without the general loop.
    shape: Shape,
}

/// The shape of an ASCII pattern (the pattern is lower-case).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// No wildcard: equal, ignoring ASCII case.
    Exact,
    /// `prefix*` with no other wildcard: the literal before the `*` leads.
    Prefix,
    /// Anything else, or not ASCII.
    General,
}

impl Glob {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        if raw.is_empty() || raw.chars().any(char::is_control) {
            return Err(format!("{raw:?} is not a name or pattern"));
        }
        let pattern = raw.to_lowercase();
        let shape = if !pattern.is_ascii() {
            Shape::General
        } else if !Self::is_pattern(&pattern) {
            Shape::Exact
        } else if pattern.ends_with('*') && !Self::is_pattern(&pattern[..pattern.len() - 1]) {
            Shape::Prefix
        } else {
            Shape::General
        };
        Ok(Self { pattern, shape })
    }

    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// Whether `pattern` has a wildcard (else it matches one text only).
    pub fn is_pattern(pattern: &str) -> bool {
        pattern.contains(['*', '?'])
    }

    /// [`Glob::matches`] for a text lower-cased already ([`folded`]): plain byte comparisons.
    fn matches_folded(&self, text: &str) -> bool {
        match self.shape {
            Shape::Exact => text == self.pattern,
            Shape::Prefix => text
                .as_bytes()
                .starts_with(&self.pattern.as_bytes()[..self.pattern.len() - 1]),
            Shape::General => self.matches(text),
        }
    }

    /// Whether `text` matches; `text` is compared lower-cased, as the pattern is. ASCII (every
    /// MCP method and nearly every tool name) is matched byte by byte without allocating.
    pub fn matches(&self, text: &str) -> bool {
        // A non-ASCII text can still equal an ASCII pattern once lower-cased ('K', the Kelvin
        // sign, is 'k'): those go the general way.
        match self.shape {
            Shape::Exact if text.is_ascii() => {
                return text.eq_ignore_ascii_case(&self.pattern);
            }
            Shape::Prefix if text.is_ascii() => {
                let literal = &self.pattern.as_bytes()[..self.pattern.len() - 1];
                return text
                    .as_bytes()
                    .get(..literal.len())
                    .is_some_and(|head| head.eq_ignore_ascii_case(literal));
            }
            _ => {}
        }
        if text.is_ascii() && self.pattern.is_ascii() {
            // The pattern is lower-case already.
            return glob_match(
                self.pattern.as_bytes(),
                text.as_bytes(),
                (b'*', b'?'),
                |p, t| p == t.to_ascii_lowercase(),
            );
        }
        let text: Vec<char> = text.to_lowercase().chars().collect();
        let pattern: Vec<char> = self.pattern.chars().collect();
        glob_match(&pattern, &text, ('*', '?'), |p, t| p == t)
    }
}

/// Iterative wildcard matching with backtracking on the last `*` (linear in practice); `eq`
/// compares a pattern element with a text element.
fn glob_match<T: Copy + PartialEq>(
    pattern: &[T],
    text: &[T],
    (star_sym, one_sym): (T, T),
    eq: impl Fn(T, T) -> bool,
) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        // A wildcard is a wildcard first: a text with a literal `*` or `?` in it must not
        // match it character for character and escape the rest of the pattern.
        if p < pattern.len() && pattern[p] == star_sym {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && (pattern[p] == one_sym || eq(pattern[p], text[t])) {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|c| *c == star_sym)
}

/// One rule: a method (and a name) that needs scopes, and optionally only some users or groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolRule {
    pub method: Glob,
    pub name: Option<Glob>,
    pub scopes: Vec<String>,
    /// Who may make the call at all (users, ids, groups, e-mails), whatever their scopes.
    pub who: Option<Admission>,
}

/// The rules as a `[[tool_policy]]` table in a TOML file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawToolRule {
    pub method: String,
    pub name: Option<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
}

/// `TOOL_POLICY`: per-method, per-tool rules. All rules that match a request apply (their
/// scopes add up); a request no rule matches needs nothing more than any valid token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolPolicy {
    pub rules: Vec<ToolRule>,
    pub missing_name: MissingName,
    /// Built from `rules` at the first decision (the rules do not change after that).
    index: std::sync::OnceLock<RuleIndex>,
}

/// Which rules can match a call, found without trying each: by exact method, and by exact
/// method and exact name; rules with a wildcard method are tried for every call. The found
/// rules are still matched one by one, so the index only ever narrows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct RuleIndex {
    /// Exact method → rules with no name or a name pattern.
    by_method: HashMap<String, Vec<usize>, foldhash::fast::RandomState>,
    /// Exact method → exact name → rules.
    by_name: HashMap<
        String,
        HashMap<String, Vec<usize>, foldhash::fast::RandomState>,
        foldhash::fast::RandomState,
    >,
    /// Rules whose method is a pattern.
    wild: Vec<usize>,
    /// Exact method → `wild` and its `by_method` rules, in rule order: the candidates of a
    /// call no exact-name rule names, without building the list per request.
    merged: HashMap<String, Vec<usize>, foldhash::fast::RandomState>,
}

impl RuleIndex {
    fn new(rules: &[ToolRule]) -> Self {
        let mut index = RuleIndex::default();
        for (i, rule) in rules.iter().enumerate() {
            let method = rule.method.as_str();
            if Glob::is_pattern(method) {
                index.wild.push(i);
                continue;
            }
            match rule.name.as_ref().map(Glob::as_str) {
                Some(name) if !Glob::is_pattern(name) => index
                    .by_name
                    .entry(method.to_string())
                    .or_default()
                    .entry(name.to_string())
                    .or_default()
                    .push(i),
                _ => index
                    .by_method
                    .entry(method.to_string())
                    .or_default()
                    .push(i),
            }
        }
        let methods: Vec<String> = index
            .by_method
            .keys()
            .chain(index.by_name.keys())
            .cloned()
            .collect();
        for method in methods {
            let mut list = index.wild.clone();
            list.extend(index.by_method.get(&method).into_iter().flatten());
            list.sort_unstable();
            list.dedup();
            index.merged.insert(method, list);
        }
        index
    }
}

/// `resources/read`, `resources/subscribe`, …: calls whose name is a URI.
fn is_resource_method(method: &str) -> bool {
    method
        .get(..10)
        .is_some_and(|m| m.eq_ignore_ascii_case("resources/"))
}

/// `text` lower-cased as [`Glob::matches`] compares it, borrowed when it already is.
fn folded(text: &str) -> std::borrow::Cow<'_, str> {
    if text.is_ascii() {
        if text.bytes().any(|b| b.is_ascii_uppercase()) {
            std::borrow::Cow::Owned(text.to_ascii_lowercase())
        } else {
            std::borrow::Cow::Borrowed(text)
        }
    } else {
        std::borrow::Cow::Owned(text.to_lowercase())
    }
}

/// One JSON-RPC call of a request, as far as the policy cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Call<'a> {
    pub method: &'a str,
    /// `params.name` (tools, prompts) or `params.uri` (resources); `None` when unknown.
    pub name: Option<&'a str>,
}

/// What the policy requires of one call.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Requirement<'p> {
    pub scopes: Vec<&'p str>,
    /// Who the matching rules are limited to (all must admit the caller).
    pub who: Vec<&'p Admission>,
    /// A rule needs the name and the request does not give it (and the policy denies that).
    pub name_missing: bool,
}

impl<'p> Requirement<'p> {
    /// `rule` applies too: its scopes are needed (each named once) and its `who` must admit.
    fn add(&mut self, rule: &'p ToolRule) {
        for scope in &rule.scopes {
            if !self.scopes.contains(&scope.as_str()) {
                self.scopes.push(scope);
            }
        }
        if let Some(who) = &rule.who {
            self.who.push(who);
        }
    }
}

impl ToolPolicy {
    /// `default_upstream` is what a bare login names (the first of `UPSTREAM`).
    pub fn parse(raw: &str, default_upstream: &'static str) -> Result<Self, String> {
        let mut rules = Vec::new();
        for part in raw.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (target, rest) = part
                .split_once('=')
                .ok_or_else(|| format!("rule {part:?} has no \"=scopes\""))?;
            let mut target = target.split_whitespace();
            let method = target
                .next()
                .ok_or_else(|| format!("rule {part:?} names no method"))?;
            let name = target.next();
            if target.next().is_some() {
                return Err(format!("rule {part:?}: write it as METHOD [NAME]=SCOPES"));
            }
            let (scopes, users) = match rest.split_once('@') {
                Some((scopes, users)) => (scopes, Some(users)),
                None => (rest, None),
            };
            let who = users
                .map(|u| {
                    Admission::parse_principals(u, default_upstream)
                        .map_err(|e| format!("rule {part:?}: \"@\" {e}"))
                })
                .transpose()?;
            rules.push(Self::rule(
                part,
                method,
                name,
                split_list(scopes).map(str::to_string).collect(),
                who,
            )?);
        }
        Ok(Self {
            rules,
            missing_name: MissingName::Deny,
            index: std::sync::OnceLock::new(),
        })
    }

    pub fn from_tables(
        tables: Vec<RawToolRule>,
        default_upstream: &'static str,
    ) -> Result<Vec<ToolRule>, String> {
        tables
            .into_iter()
            .map(|t| {
                let label = format!("[[tool_policy]] method = {:?}", t.method);
                let who = (!t.users.is_empty() || !t.groups.is_empty()).then(|| {
                    let mut who = Admission::default();
                    if !t.users.is_empty() {
                        who.users = Some(AllowList::parse(&t.users.join(","), default_upstream));
                    }
                    who.groups = t.groups;
                    who
                });
                Self::rule(&label, &t.method, t.name.as_deref(), t.scopes, who)
            })
            .collect()
    }

    fn rule(
        label: &str,
        method: &str,
        name: Option<&str>,
        scopes: Vec<String>,
        who: Option<Admission>,
    ) -> Result<ToolRule, String> {
        if let Some(bad) = scopes.iter().find(|s| !is_scope_token(s)) {
            return Err(format!("{label}: {bad:?} is not a valid scope token"));
        }
        if scopes.is_empty() && who.is_none() {
            return Err(format!("{label}: names neither scopes nor users or groups"));
        }
        let method = Glob::parse(method).map_err(|e| format!("{label}: {e}"))?;
        // A resource rule's URI is compared in its normal form, as requests' are.
        let normal = name
            .filter(|_| is_resource_method(method.as_str()) || method.matches("resources/read"))
            .and_then(normalize_resource_uri);
        Ok(ToolRule {
            method,
            name: normal
                .as_deref()
                .or(name)
                .map(Glob::parse)
                .transpose()
                .map_err(|e| format!("{label}: {e}"))?,
            scopes,
            who,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// What `call` needs; `method` unknown (`None`) applies every rule, as an unreadable path
    /// does for path rules: omitting the method never skips a rule.
    /// A resource's URI is compared in its normal form ([`normalize_resource_uri`]); one
    /// that has none applies every rule of its method, whatever name the rule names.
    pub fn requirement<'p>(&'p self, call: Option<Call<'_>>) -> Requirement<'p> {
        if let Some(Call {
            method,
            name: Some(uri),
        }) = call
            && is_resource_method(method)
        {
            return match normalize_resource_uri(uri) {
                Some(normal) => self.requirement_exact(Some(Call {
                    method,
                    name: Some(&normal),
                })),
                None => {
                    let method = folded(method);
                    let mut out = Requirement::default();
                    for rule in self
                        .rules
                        .iter()
                        .filter(|r| r.method.matches_folded(&method))
                    {
                        out.add(rule);
                    }
                    out
                }
            };
        }
        self.requirement_exact(call)
    }

    fn requirement_exact<'p>(&'p self, call: Option<Call<'_>>) -> Requirement<'p> {
        let Some(known) = call else {
            return self.requirement_of(self.rules.iter(), None);
        };
        let index = self.index.get_or_init(|| RuleIndex::new(&self.rules));
        let method = folded(known.method);
        let by_name = index.by_name.get(method.as_ref());
        let named: Option<&Vec<usize>> = match (by_name, known.name) {
            (Some(names), Some(name)) => names.get(folded(name).as_ref()),
            _ => None,
        };
        let common = index.merged.get(method.as_ref()).unwrap_or(&index.wild);
        // Lower-cased once: each rule then compares bytes.
        let name = known.name.map(folded);
        let folded_call = Some(Call {
            method: method.as_ref(),
            name: name.as_deref(),
        });
        let mut out = match named {
            None => self.requirement_of(common.iter().map(|i| &self.rules[*i]), folded_call),
            Some(named) => {
                let mut candidates = common.clone();
                candidates.extend(named);
                // In rule order, as trying every rule would find them.
                candidates.sort_unstable();
                self.requirement_of(candidates.iter().map(|i| &self.rules[*i]), folded_call)
            }
        };
        // A rule on this method that needs the name, and no name: the same verdict as trying it.
        if known.name.is_none() && by_name.is_some() && self.missing_name == MissingName::Deny {
            out.name_missing = true;
        }
        out
    }

    /// `call` is lower-cased already ([`folded`]).
    fn requirement_of<'p>(
        &'p self,
        rules: impl Iterator<Item = &'p ToolRule>,
        call: Option<Call<'_>>,
    ) -> Requirement<'p> {
        let mut out = Requirement::default();
        for rule in rules {
            let applies = match call {
                None => true,
                Some(call) => {
                    rule.method.matches_folded(call.method)
                        && match (&rule.name, call.name) {
                            (None, _) => true,
                            (Some(pattern), Some(name)) => pattern.matches_folded(name),
                            (Some(_), None) => {
                                if self.missing_name == MissingName::Deny {
                                    out.name_missing = true;
                                }
                                false
                            }
                        }
                }
            };
            if !applies {
                continue;
            }
            if call.is_none() && self.missing_name == MissingName::Deny {
                out.name_missing = true;
            }
            out.add(rule);
        }
        out
    }

    /// Tool-name patterns of `tools/call` rules that the holder of `scopes` (`who`) fails: what
    /// a server filtering its tool list should hide.
    pub fn denied_tools<'p>(
        &'p self,
        hierarchy: &ScopeHierarchy,
        granted: &[&str],
        who: &Identity<'_>,
    ) -> Vec<&'p str> {
        self.rules
            .iter()
            .filter(|r| r.method.matches("tools/call"))
            .filter(|r| {
                !r.scopes
                    .iter()
                    .all(|s| hierarchy.satisfies(granted.iter().copied(), s))
                    || r.who.as_ref().is_some_and(|w| !w.admits(who))
            })
            .map(|r| r.name.as_ref().map_or("*", Glob::as_str))
            .collect()
    }

    /// Every scope any rule names.
    pub fn all_scopes(&self) -> Vec<String> {
        scopes::unique(self.rules.iter().flat_map(|r| r.scopes.iter()))
    }

    /// One line per rule, for `--check-config`.
    pub fn describe(&self) -> Vec<String> {
        self.rules
            .iter()
            .map(|r| {
                let mut line = format!(
                    "{} {} needs [{}]",
                    r.method.as_str(),
                    r.name.as_ref().map_or("(any name)", Glob::as_str),
                    r.scopes.join(" ")
                );
                if let Some(who) = &r.who {
                    line.push_str(&format!(" and caller in [{}]", who.summary()));
                }
                line
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fast shapes (exact, `prefix*`) answer as the general matcher does, for every
    /// spelling: case, wildcards, non-ASCII letters that lower-case to ASCII ones.
    #[test]
    fn glob_shapes_agree_with_the_general_matcher() {
        use proptest::prelude::*;
        let reference = |pattern: &str, text: &str| {
            let p: Vec<char> = pattern.to_lowercase().chars().collect();
            let t: Vec<char> = text.to_lowercase().chars().collect();
            glob_match(&p, &t, ('*', '?'), |a, b| a == b)
        };
        let atoms = prop::sample::select(vec!["a", "b", "A", "_", "*", "?", "K", "\u{212A}", "k"]);
        let word = |n| prop::collection::vec(atoms.clone(), 1..n).prop_map(|v| v.concat());
        proptest!(ProptestConfig::with_cases(4000), |(pattern in word(6), text in word(7))| {
            let glob = Glob::parse(&pattern).unwrap();
            prop_assert_eq!(glob.matches(&text), reference(&pattern, &text), "{} ~ {}", pattern, text);
            prop_assert_eq!(glob.matches_folded(&folded(&text)), reference(&pattern, &text), "folded {} ~ {}", pattern, text);
        });
    }

    #[test]
    fn hierarchies_are_transitive_and_refuse_cycles() {
        let h =
            ScopeHierarchy::parse("mcp:admin > mcp:write > mcp:read; mcp:admin > billing").unwrap();
        assert!(h.satisfies(["mcp:admin"], "mcp:read"));
        assert!(h.satisfies(["mcp:write"], "mcp:read"));
        assert!(!h.satisfies(["mcp:read"], "mcp:write"));
        assert!(h.satisfies(["x", "mcp:admin"], "billing"));
        assert!(ScopeHierarchy::parse("a > b; b > a").is_err());
        assert!(ScopeHierarchy::parse("a").is_err());
        assert!(ScopeHierarchy::parse("a > b\"").is_err());
    }

    #[test]
    fn globs_match_case_insensitively() {
        let g = Glob::parse("delete_*").unwrap();
        assert!(g.matches("delete_file"));
        assert!(g.matches("DELETE_FILE"));
        assert!(g.matches("delete_"));
        assert!(!g.matches("undelete_file"));
        assert!(Glob::parse("a?c").unwrap().matches("abc"));
        assert!(Glob::parse("*x*y").unwrap().matches("axbxy"));
        assert!(Glob::parse("Echo").unwrap().matches("echo"));
        // A name with a literal `*` is still covered by the rule's wildcard.
        assert!(Glob::parse("danger_*").unwrap().matches("danger_*x"));
        assert!(Glob::parse("a*b*").unwrap().matches("a*b*x"));
        assert!(Glob::parse("*").unwrap().matches("*a"));
        assert!(!Glob::parse("echo").unwrap().matches("echo2"));
    }

    #[test]
    fn rules_add_up_and_a_missing_name_never_skips_one() {
        let p = ToolPolicy::parse(
            "tools/call delete_*=mcp:admin; tools/call *=mcp; resources/read file:///secret/*=mcp:admin @alice",
            "github",
        )
        .unwrap();
        let call = |method, name| Some(Call { method, name });
        let r = p.requirement(call("tools/call", Some("delete_all")));
        assert_eq!(r.scopes, ["mcp:admin", "mcp"]);
        assert!(!r.name_missing);
        assert_eq!(
            p.requirement(call("tools/call", Some("echo"))).scopes,
            ["mcp"]
        );
        assert!(p.requirement(call("tools/call", None)).name_missing);
        assert!(p.requirement(call("tools/list", None)).scopes.is_empty());
        assert!(p.requirement(None).name_missing);
        let r = p.requirement(call("resources/read", Some("file:///secret/key")));
        assert_eq!(r.who.len(), 1);
        for bad in [
            "tools/call=",
            "tools/call x y=mcp",
            "tools/call x=bad\"scope",
            "tools/call x=mcp @",
            "tools/call x=@group:",
        ] {
            assert!(ToolPolicy::parse(bad, "github").is_err(), "{bad}");
        }
        let by_group = ToolPolicy::parse("tools/call deploy=@group:ops", "github").unwrap();
        let ops = vec!["ops".to_string()];
        let r = by_group.requirement(call("tools/call", Some("deploy")));
        assert!(r.scopes.is_empty());
        assert!(r.who[0].admits(&Identity::new("1", "x", None, &ops)));
        assert!(!r.who[0].admits(&Identity::new("1", "x", None, &[])));
    }
}
