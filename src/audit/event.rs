//! The event vocabulary, version 1: what happened ([`Kind`]), how much it matters
//! ([`Level`]), who did it ([`Actor`]), and to whom, from where, with what result ([`Event`]).
//!
//! An event names things by their identifiers only (login, client id, `jti`, family id): no
//! field can hold a token, a code, a refresh token or a secret, and the builder takes none.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The version of the event format written in every event (`v`).
pub const VERSION: u32 = 1;

/// How much an event matters: webhooks send those at or above `AUDIT_WEBHOOK_MIN_LEVEL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Info,
    Warning,
    Critical,
}

impl Level {
    pub const ALL: [Level; 3] = [Level::Info, Level::Warning, Level::Critical];

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warning => "warning",
            Level::Critical => "critical",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|l| l.as_str().eq_ignore_ascii_case(text.trim()))
    }
}

macro_rules! kinds {
    ($($(#[$doc:meta])* $variant:ident = $name:literal, $level:ident;)*) => {
        /// What happened. The names are the `type` of the stored event and the `type` label of
        /// `mcp_gateway_security_events_total`; they never change meaning.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Kind {
            $($(#[$doc])* $variant,)*
        }

        impl Kind {
            pub const ALL: &'static [Kind] = &[$(Kind::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Kind::$variant => $name,)*
                }
            }

            /// The level an event of this kind has unless its actor raises it
            /// ([`Event::new`]).
            pub fn level(self) -> Level {
                match self {
                    $(Kind::$variant => Level::$level,)*
                }
            }
        }
    };
}

kinds! {
    /// A browser login started at `/authorize` (the pending authorization was stored).
    AuthorizationStarted = "authorization_started", Info;
    /// The user approved the client's request (only when it widened what was approved).
    ConsentGranted = "consent_granted", Info;
    /// The user declined the client's request on the consent page.
    ConsentDenied = "consent_denied", Info;
    /// The user signed in upstream and our authorization code was issued.
    Login = "login", Info;
    /// A login was refused: not admitted, a pinned name, another account, no entitlement.
    LoginRefused = "login_refused", Warning;
    /// The login kept fewer scopes than requested: the user is not entitled to the rest.
    EntitlementNarrowed = "entitlement_narrowed", Info;
    /// Tokens issued for an authorization code.
    TokenIssued = "token_issued", Info;
    /// Tokens issued for a refresh token (rotation).
    TokenRefreshed = "token_refreshed", Info;
    /// An access token minted by the operator (`mcp-gateway tokens mint`).
    TokenMinted = "token_minted", Warning;
    /// `/token` refused a grant (unknown, expired or revoked code or refresh token).
    GrantRefused = "grant_refused", Info;
    /// A rotated refresh token was presented again: its whole family was revoked.
    RefreshReuseDetected = "refresh_reuse_detected", Critical;
    /// An authorization code was redeemed twice: what the first redemption issued is revoked.
    CodeReplayed = "code_replayed", Critical;
    /// An assertion (an ID-JAG, a workload's JWT) was refused at `/token`: untrusted issuer,
    /// bad signature, wrong audience, expired, outside its issuer's rules.
    AssertionRefused = "assertion_refused", Warning;
    /// An assertion whose `jti` was used before was presented again.
    AssertionReplayed = "assertion_replayed", Critical;
    /// Tokens revoked (by whom: the actor; why: `reason`).
    TokenRevoked = "token_revoked", Info;
    /// A token was presented from another address, User-Agent or certificate than it is bound to.
    BindingMismatch = "binding_mismatch", Warning;
    /// verify refused a request (rate-limited per client and reason; `detail.suppressed`
    /// counts the refusals of the same kind not recorded one by one).
    AccessRefused = "access_refused", Info;
    /// verify admitted a token for the first time (per replica).
    TokenUsed = "token_used", Info;
    /// A client registered itself (RFC 7591).
    ClientRegistered = "client_registered", Info;
    /// The operator created a client (`mcp-gateway clients create`).
    ClientCreated = "client_created", Warning;
    /// A client and everything issued to it were deleted.
    ClientDeleted = "client_deleted", Warning;
    /// A never-used registration was dropped to stay within the unused-client budget.
    ClientEvicted = "client_evicted", Info;
    /// A Client ID Metadata Document was fetched and accepted.
    CimdDocumentFetched = "cimd_document_fetched", Info;
    /// A Client ID Metadata Document was refused (invalid, denied host, unreachable).
    CimdDocumentRefused = "cimd_document_refused", Warning;
    /// A user enrolled a second factor.
    MfaEnrolled = "mfa_enrolled", Info;
    /// A wrong, replayed or malformed second-factor code.
    MfaFailed = "mfa_failed", Warning;
    /// Too many second-factor failures: the user or address is locked out.
    MfaLocked = "mfa_locked", Warning;
    /// The operator removed a user's second factor.
    MfaReset = "mfa_reset", Warning;
    /// The signing key changed.
    KeyRotated = "key_rotated", Warning;
    /// A backup was written.
    Backup = "backup", Info;
    /// A backup was restored.
    Restore = "restore", Warning;
    /// Expired index entries and orphans were purged.
    Purge = "purge", Info;
}

impl Kind {
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL
            .iter()
            .copied()
            .find(|k| k.as_str() == text.trim())
    }
}

/// Who did it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "lowercase")]
pub enum Actor {
    /// A signed-in user (their login).
    User(String),
    /// An OAuth client (its id).
    Client(String),
    /// The operator, through the CLI (`MCP_GATEWAY_OPERATOR`, else `cli`).
    Operator(String),
    /// The identity provider (a refusal at refresh, say).
    Upstream(String),
    /// The gateway itself (a policy, a budget, a detection).
    System(String),
    /// Nobody we know: an unauthenticated request.
    Anonymous,
}

/// How it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Success,
    Refused,
    Failure,
}

/// The optional members of [`Event`], each `None` (and left out of the JSON) unless set. The
/// first list's setters take the identifier as given (an empty one sets nothing); the
/// second's are written below, each with its own rule.
macro_rules! event {
    (
        plain { $($(#[$pdoc:meta])* $plain:ident => $setter:ident,)* }
        ruled { $($(#[$rdoc:meta])* $ruled:ident,)* }
    ) => {
        /// One security event. Built with [`Event::new`] and the setters; the time is the
        /// store's (the stream entry's id), so a retried write never carries a stale clock.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        pub struct Event {
            pub v: u32,
            #[serde(rename = "type")]
            pub kind: String,
            pub level: Level,
            pub actor: Actor,
            pub outcome: Outcome,
            $($(#[$pdoc])* #[serde(default, skip_serializing_if = "Option::is_none")]
            pub $plain: Option<String>,)*
            $($(#[$rdoc])* #[serde(default, skip_serializing_if = "Option::is_none")]
            pub $ruled: Option<String>,)*
            /// Small facts of the kind (withheld scopes, counts, a key id).
            #[serde(default, skip_serializing_if = "Map::is_empty")]
            pub detail: Map<String, Value>,
        }

        impl Event {
            fn blank(kind: Kind, level: Level, actor: Actor) -> Self {
                Self {
                    v: VERSION,
                    kind: kind.as_str().to_string(),
                    level,
                    actor,
                    outcome: Outcome::Success,
                    $($plain: None,)*
                    $($ruled: None,)*
                    detail: Map::new(),
                }
            }

            $(pub fn $setter(mut self, id: &str) -> Self {
                self.$plain = (!id.is_empty()).then(|| id.to_string());
                self
            })*
        }
    };
}

event! {
    plain {
        /// The subject's id at the identity provider (`sub`).
        user_id => user_id,
        /// How the subject signed in (`github`, `oidc`, …).
        upstream => upstream,
        client_id => client,
        jti => jti,
        family => family,
        resource => resource,
        /// The MCP method and tool (or resource) of a request verify decided on.
        method => method,
        tool => tool,
    }
    ruled {
        /// The subject user's login (lower-case as stored), or `client:{id}` for a machine.
        user,
        grant,
        scope,
        ip,
        user_agent,
        reason,
    }
}

/// The longest User-Agent an event keeps.
const USER_AGENT_LIMIT: usize = 256;

impl Event {
    /// An event of `kind` by `actor`, a success unless told otherwise. An operator's action
    /// and a refusal by the identity provider are at least warnings.
    pub fn new(kind: Kind, actor: Actor) -> Self {
        let mut level = kind.level();
        if matches!(actor, Actor::Operator(_) | Actor::Upstream(_)) && level < Level::Warning {
            level = Level::Warning;
        }
        Self::blank(kind, level, actor)
    }

    pub fn kind(&self) -> Option<Kind> {
        Kind::parse(&self.kind)
    }

    pub fn refused(mut self, reason: impl Into<String>) -> Self {
        self.outcome = Outcome::Refused;
        self.reason = Some(reason.into());
        self
    }

    pub fn failed(mut self, reason: impl Into<String>) -> Self {
        self.outcome = Outcome::Failure;
        self.reason = Some(reason.into());
        self
    }

    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    pub fn level(mut self, level: Level) -> Self {
        self.level = level;
        self
    }

    /// The subject user by login (stored lower-case, as the indexes key it).
    pub fn user(mut self, login: &str) -> Self {
        self.user = (!login.is_empty()).then(|| login.to_ascii_lowercase());
        self
    }

    pub fn grant(mut self, grant: &str) -> Self {
        self.grant = Some(grant.to_string());
        self
    }

    pub fn scope(mut self, scope: &str) -> Self {
        self.scope = Some(scope.to_string());
        self
    }

    pub fn ip(mut self, ip: Option<std::net::IpAddr>) -> Self {
        self.ip = ip.map(|ip| ip.to_string());
        self
    }

    pub fn user_agent(mut self, user_agent: Option<&str>) -> Self {
        self.user_agent = user_agent.filter(|ua| !ua.is_empty()).map(|ua| {
            let mut end = ua.len().min(USER_AGENT_LIMIT);
            while !ua.is_char_boundary(end) {
                end -= 1;
            }
            ua[..end].to_string()
        });
        self
    }

    pub fn detail(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.detail.insert(name.to_string(), value.into());
        self
    }

    /// The stored form: one line of JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// An event as read back: its stream id (`{ms}-{seq}`, the time it was written) and the event.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub id: String,
    pub event: Event,
}

impl Stored {
    /// An entry of the trail from its fields: `e` (the event's JSON) and `n` (a count the
    /// store found, shown as `detail.count`). `None` when the entry holds no event (trimmed,
    /// or not ours).
    pub fn from_fields(id: &str, fields: &[(String, String)]) -> Option<Self> {
        let get = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v);
        let mut event: Event = serde_json::from_str(get("e")?).ok()?;
        if let Some(n) = get("n").and_then(|n| n.parse::<i64>().ok()) {
            event.detail.insert("count".into(), n.into());
        }
        Some(Self {
            id: id.to_string(),
            event,
        })
    }

    /// Milliseconds since the epoch, from the id.
    pub fn millis(&self) -> i64 {
        millis_of(&self.id)
    }

    /// The JSON a reader prints: the event with its `id` and `time` (UTC, RFC 3339).
    pub fn to_json(&self) -> Value {
        let mut v = serde_json::to_value(&self.event).unwrap_or(Value::Null);
        if let Some(map) = v.as_object_mut() {
            map.insert("id".into(), self.id.clone().into());
            map.insert(
                "time".into(),
                crate::clock::utc_rfc3339(self.millis()).into(),
            );
        }
        v
    }
}

/// The milliseconds of a stream id (`1700000000000-3` → `1700000000000`).
pub fn millis_of(id: &str) -> i64 {
    id.split('-')
        .next()
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_have_unique_names_and_parse_back() {
        let mut names = std::collections::HashSet::new();
        for kind in Kind::ALL {
            assert!(names.insert(kind.as_str()), "{} twice", kind.as_str());
            assert_eq!(Kind::parse(kind.as_str()), Some(*kind));
        }
        assert_eq!(Kind::RefreshReuseDetected.level(), Level::Critical);
    }

    #[test]
    fn an_operators_action_is_at_least_a_warning() {
        let by_client = Event::new(Kind::TokenRevoked, Actor::Client("c".into()));
        let by_operator = Event::new(Kind::TokenRevoked, Actor::Operator("cli".into()));
        assert_eq!(by_client.level, Level::Info);
        assert_eq!(by_operator.level, Level::Warning);
    }

    #[test]
    fn events_round_trip_and_skip_what_is_absent() {
        let event = Event::new(Kind::TokenIssued, Actor::Client("c1".into()))
            .user("Alice")
            .jti("j1")
            .user_agent(Some(&"x".repeat(1000)))
            .detail("n", 3);
        let json = event.to_json();
        assert!(json.contains(r#""user":"alice""#), "{json}");
        assert!(!json.contains("family"), "{json}");
        let back: Event = serde_json::from_str(&json).unwrap();
        assert_eq!(back, event);
        assert_eq!(back.user_agent.unwrap().len(), USER_AGENT_LIMIT);
        assert_eq!(
            serde_json::to_value(&back.actor).unwrap(),
            serde_json::json!({"kind": "client", "id": "c1"})
        );
    }
}
