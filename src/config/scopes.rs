//! What scopes requests need, which are offered and who may hold them: `REQUIRED_SCOPES`,
//! `SCOPE_HIERARCHY`, `TOOL_POLICY` (with `[[tool_policy]]`), `SCOPES_SUPPORTED`,
//! `DEFAULT_SCOPE`, `SCOPE_GRANTS` (with `[[scope_grant]]`), and the claims new tokens carry
//! (`TOKEN_CUSTOM_CLAIMS`).

use super::ConfigError;
use super::raw::Raw;
use crate::policy::{ScopePolicy, is_scope_token, split_list};

/// `TOKEN_CUSTOM_CLAIMS`: a JSON object merged into new tokens.
pub(super) fn custom_claims(
    raw: &Raw,
) -> Result<serde_json::Map<String, serde_json::Value>, ConfigError> {
    Ok(match raw.get("TOKEN_CUSTOM_CLAIMS") {
        None => serde_json::Map::new(),
        Some(json) => match serde_json::from_str::<serde_json::Value>(json) {
            Ok(serde_json::Value::Object(map)) => map,
            Ok(_) => {
                return Err(ConfigError::new(
                    "TOKEN_CUSTOM_CLAIMS",
                    "must be a JSON object",
                ));
            }
            Err(e) => {
                return Err(ConfigError::new(
                    "TOKEN_CUSTOM_CLAIMS",
                    format!("not valid JSON: {e}"),
                ));
            }
        },
    })
}

/// What scopes requests need and which are offered: `REQUIRED_SCOPES`, `SCOPE_HIERARCHY`,
/// `TOOL_POLICY` (with the TOML file's `[[tool_policy]]` tables), `SCOPES_SUPPORTED`.
pub(super) struct Scopes {
    pub(super) required: ScopePolicy,
    pub(super) hierarchy: crate::policy::ScopeHierarchy,
    pub(super) tools: crate::policy::ToolPolicy,
    pub(super) supported: Vec<String>,
    pub(super) default: String,
    pub(super) entitlements: crate::policy::Entitlements,
}

pub(super) fn scopes(raw: &Raw, default_upstream: &'static str) -> Result<Scopes, ConfigError> {
    let required_scopes = ScopePolicy::parse(raw.get("REQUIRED_SCOPES").unwrap_or(""))
        .map_err(|e| ConfigError::new("REQUIRED_SCOPES", e))?;
    let scope_hierarchy =
        crate::policy::ScopeHierarchy::parse(raw.get("SCOPE_HIERARCHY").unwrap_or(""))
            .map_err(|e| ConfigError::new("SCOPE_HIERARCHY", e))?;
    let mut tool_policy =
        crate::policy::ToolPolicy::parse(raw.get("TOOL_POLICY").unwrap_or(""), default_upstream)
            .map_err(|e| ConfigError::new("TOOL_POLICY", e))?;
    tool_policy.rules.extend(
        crate::policy::ToolPolicy::from_tables(raw.tool_tables.clone(), default_upstream)
            .map_err(|e| ConfigError::new("TOOL_POLICY", e))?,
    );
    tool_policy.missing_name = raw.choice(
        "TOOL_POLICY_MISSING_NAME",
        &[
            ("deny", crate::policy::MissingName::Deny),
            ("allow", crate::policy::MissingName::Allow),
        ],
    )?;
    let scopes_supported = match raw.get("SCOPES_SUPPORTED") {
        Some(list) => {
            let scopes: Vec<String> = split_list(list).map(str::to_string).collect();
            if let Some(bad) = scopes.iter().find(|s| !is_scope_token(s)) {
                return Err(ConfigError::new(
                    "SCOPES_SUPPORTED",
                    format!("{bad:?} is not a valid scope token"),
                ));
            }
            scopes
        }
        None => {
            let mut s = vec!["mcp".to_string()];
            for extra in required_scopes
                .all_scopes()
                .into_iter()
                .chain(tool_policy.all_scopes())
            {
                if !s.contains(&extra) {
                    s.push(extra);
                }
            }
            s
        }
    };
    let default = match raw.get("DEFAULT_SCOPE") {
        None => scopes_supported.first().cloned().unwrap_or_default(),
        Some(value) => {
            let scope = crate::policy::Scope::parse(value);
            if let Some(bad) = scope.first_not(|s| scopes_supported.iter().any(|x| x == s)) {
                return Err(ConfigError::new(
                    "DEFAULT_SCOPE",
                    format!("{bad:?} is not in SCOPES_SUPPORTED"),
                ));
            }
            scope.to_string()
        }
    };
    let mut grants =
        crate::policy::Entitlements::parse(raw.get("SCOPE_GRANTS").unwrap_or(""), default_upstream)
            .map_err(|e| ConfigError::new("SCOPE_GRANTS", e))?;
    let tables =
        crate::policy::Entitlements::from_tables(raw.grant_tables.clone(), default_upstream)
            .map_err(|e| ConfigError::new("[[scope_grant]]", e))?;
    let from_file = tables.len();
    grants.extend(tables);
    // A grant for a scope nobody can ask for is a typo that would leave the real one open.
    for (i, grant) in grants.iter().enumerate() {
        if !scopes_supported.contains(&grant.scope) {
            let var = if i + from_file >= grants.len() {
                "[[scope_grant]]"
            } else {
                "SCOPE_GRANTS"
            };
            return Err(ConfigError::new(
                var,
                format!(
                    "a grant names {:?}, which is not in SCOPES_SUPPORTED ({})",
                    grant.scope,
                    scopes_supported.join(" ")
                ),
            ));
        }
    }
    Ok(Scopes {
        required: required_scopes,
        hierarchy: scope_hierarchy,
        tools: tool_policy,
        supported: scopes_supported,
        default,
        entitlements: crate::policy::Entitlements::new(grants),
    })
}
