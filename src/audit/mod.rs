//! The audit trail (DESIGN §3, §5, §7): security events, typed and versioned ([`event`]),
//! written by the store **in the same atomic operation as the change they describe** (no
//! grant without its event, no event without its grant) to the stream `oauth:audit`, trimmed
//! by length and age as it is written (never by walking the keyspace).
//!
//! A change hands the store its [`Events`]: each event with the outcome it belongs to
//! ([`When`]), so the script (or the embedded store) appends exactly those that happened: a
//! refresh writes `token_refreshed` when it issued and `refresh_reuse_detected` when it found
//! the token used. After the write the store hands what it appended to its [`Sink`]: the
//! `mcp_gateway_security_events_total` counter and, with `LOG_AUDIT=true`, one JSON line per
//! event on stdout.

pub mod event;

use std::io::Write;
use std::time::Duration;

use prometheus::{IntCounterVec, Opts};

pub use event::{Actor, Event, Kind, Level, Outcome, Stored};

/// The outcomes the store's operations report, which planned events are tied to.
pub mod outcome {
    /// A write that always happens (a token minted, a consent stored) was made.
    pub const WRITTEN: &str = "written";
    /// A grant issued tokens.
    pub const ISSUED: &str = "issued";
    /// A rotated refresh token was presented again (its family is revoked).
    pub const REUSED: &str = "reused";
    /// Something live was revoked or deleted.
    pub const REVOKED: &str = "revoked";
    /// There was nothing to revoke.
    pub const MISSING: &str = "missing";
    /// A family had no members left.
    pub const EMPTY: &str = "empty";
    /// A registration was kept (a grant renewed it).
    pub const KEPT: &str = "kept";
    /// A multi-step change finished (the last step of a client's deletion) …
    pub const DONE: &str = "done";
    /// … or made one more step.
    pub const STEP: &str = "step";
    /// An attempt was counted and allowed …
    pub const ALLOWED: &str = "allowed";
    /// … passed the limit, and the subject is locked out now …
    pub const LOCKED: &str = "locked";
    /// … or came while a lockout was running.
    pub const HELD: &str = "held";
    /// A conditional write changed the stored value …
    pub const CHANGED: &str = "changed";
    /// … or found nothing to change.
    pub const UNCHANGED: &str = "unchanged";

    /// What a revocation found: something live, or nothing.
    pub fn of_revocation(existed: bool) -> &'static str {
        if existed { REVOKED } else { MISSING }
    }

    /// What revoking a family found: members, or none.
    pub fn of_family(members: usize) -> &'static str {
        if members > 0 { REVOKED } else { EMPTY }
    }

    /// What dropping an unused registration did.
    pub fn of_drop(deleted: bool) -> &'static str {
        if deleted { REVOKED } else { KEPT }
    }

    /// Whether a step of a multi-step change was its last (nothing `remaining`).
    pub fn of_step(remaining: usize) -> &'static str {
        if remaining == 0 { DONE } else { STEP }
    }

    /// Whether a conditional write changed the value.
    pub fn of_change(changed: bool) -> &'static str {
        if changed { CHANGED } else { UNCHANGED }
    }
}

/// When a planned event is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// With the change, whatever it found.
    Always,
    /// Only when the operation reports this outcome ([`outcome`]).
    On(&'static str),
}

impl When {
    /// The word the scripts compare with the outcome (`*` for always).
    pub fn as_str(self) -> &'static str {
        match self {
            When::Always => "*",
            When::On(outcome) => outcome,
        }
    }

    pub fn matches(self, outcome: &str) -> bool {
        match self {
            When::Always => true,
            When::On(o) => o == outcome,
        }
    }
}

/// An event and the outcome it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    pub when: When,
    pub event: Event,
}

/// The events a store operation writes with its change.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Events(Vec<Planned>);

impl Events {
    pub fn none() -> Self {
        Self::default()
    }

    /// One event, written whatever the change found.
    pub fn one(event: Event) -> Self {
        Self(vec![Planned {
            when: When::Always,
            event,
        }])
    }

    /// And this event, written with the change whatever it found.
    pub fn and(mut self, event: Event) -> Self {
        self.0.push(Planned {
            when: When::Always,
            event,
        });
        self
    }

    /// And this event, written only when the operation reports `outcome`.
    pub fn on(mut self, outcome: &'static str, event: Event) -> Self {
        self.0.push(Planned {
            when: When::On(outcome),
            event,
        });
        self
    }

    /// And `entitlement_narrowed` (`event`, the issuing event's subject and scope) on `outcome`,
    /// when entitlements withheld scopes from the request.
    pub fn narrowed(self, outcome: &'static str, event: Event, withheld: &[String]) -> Self {
        if withheld.is_empty() {
            return self;
        }
        self.on(outcome, event.detail("withheld", withheld.join(" ")))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn planned(&self) -> &[Planned] {
        &self.0
    }

    /// The events an operation that reported `outcome` wrote.
    pub fn emitted<'a>(&'a self, outcome: &'a str) -> impl Iterator<Item = &'a Event> + 'a {
        self.0
            .iter()
            .filter(move |p| p.when.matches(outcome))
            .map(|p| &p.event)
    }
}

/// How much of the trail is kept: `AUDIT_MAX_EVENTS` entries at most (approximately: Redis
/// trims whole stream nodes) and none older than `AUDIT_RETENTION`. `enabled: false`
/// (`AUDIT_ENABLED=false`) writes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub enabled: bool,
    pub max_events: u64,
    pub retention: Duration,
}

impl Default for Bounds {
    fn default() -> Self {
        Self {
            enabled: true,
            max_events: DEFAULT_MAX_EVENTS,
            retention: DEFAULT_RETENTION,
        }
    }
}

/// `AUDIT_MAX_EVENTS` unless set.
pub const DEFAULT_MAX_EVENTS: u64 = 1_000_000;
/// `AUDIT_RETENTION` unless set: 30 days.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * 86_400);
/// The fewest events one bucket's stream keeps on a Redis Cluster, whose trail is a stream per
/// bucket sharing `AUDIT_MAX_EVENTS` (docs/redis.md).
pub const MIN_PER_BUCKET: u64 = 1_000;
/// How many entries a per-user or per-client index stream keeps (the newest).
pub const INDEX_MAX_EVENTS: u64 = 10_000;

/// Where written events go besides the store: the security-events counter, and stdout when
/// `LOG_AUDIT=true` (one JSON object a line, for Loki, Elastic or Datadog).
#[derive(Clone)]
pub struct Sink {
    log: bool,
    events: IntCounterVec,
    clock: crate::clock::SharedClock,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink").field("log", &self.log).finish()
    }
}

impl Default for Sink {
    fn default() -> Self {
        Self::new(false, crate::clock::system())
    }
}

impl Sink {
    pub fn new(log: bool, clock: crate::clock::SharedClock) -> Self {
        let events = IntCounterVec::new(
            Opts::new(
                "mcp_gateway_security_events_total",
                "Security events written to the audit trail, by type",
            ),
            &["type"],
        )
        .expect("static metric definition");
        for kind in Kind::ALL {
            events.with_label_values(&[kind.as_str()]);
        }
        Self { log, events, clock }
    }

    /// The counter, for the service's registry.
    pub fn counter(&self) -> IntCounterVec {
        self.events.clone()
    }

    /// Reports events the store has written.
    pub fn written<'a>(&self, events: impl IntoIterator<Item = &'a Event>) {
        let mut out = self.log.then(|| std::io::stdout().lock());
        for event in events {
            self.events.with_label_values(&[event.kind.as_str()]).inc();
            if let Some(out) = out.as_mut() {
                let mut line = serde_json::to_value(event).unwrap_or_default();
                if let Some(map) = line.as_object_mut() {
                    map.insert(
                        "time".into(),
                        crate::clock::utc_rfc3339(self.clock.now_millis()).into(),
                    );
                    map.insert("audit".into(), true.into());
                }
                let _ = writeln!(out, "{line}");
            }
        }
    }
}

/// At most one event per key (a client and a reason, say) per interval: a flood of refusals
/// cannot flood the trail. The refusals held back are counted and told with the next event
/// of that key (`detail.suppressed`).
pub struct Limiter {
    interval_ms: i64,
    seen: std::sync::Mutex<std::collections::HashMap<String, (i64, u64)>>,
}

/// How many keys a [`Limiter`] remembers before it forgets the idle ones.
const LIMITER_KEYS: usize = 100_000;

impl Limiter {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval_ms: interval.as_millis() as i64,
            seen: Default::default(),
        }
    }

    /// `Some(held back since the last one)` when an event of `key` may be written at `now_ms`.
    pub fn admit(&self, key: &str, now_ms: i64) -> Option<u64> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= LIMITER_KEYS {
            let interval = self.interval_ms;
            seen.retain(|_, (at, _)| now_ms - *at < interval);
            if seen.len() >= LIMITER_KEYS {
                seen.clear();
            }
        }
        match seen.get_mut(key) {
            Some((at, held)) if now_ms - *at < self.interval_ms => {
                *held += 1;
                None
            }
            Some((at, held)) => {
                let told = *held;
                *at = now_ms;
                *held = 0;
                Some(told)
            }
            None => {
                seen.insert(key.to_string(), (now_ms, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_events_of_the_reported_outcome_are_written() {
        let issued = Event::new(Kind::TokenRefreshed, Actor::Client("c".into()));
        let reused = Event::new(Kind::RefreshReuseDetected, Actor::System("reuse".into()));
        let events = Events::none()
            .on(outcome::ISSUED, issued.clone())
            .on(outcome::REUSED, reused.clone());
        assert_eq!(events.emitted("issued").collect::<Vec<_>>(), [&issued]);
        assert_eq!(events.emitted("reused").collect::<Vec<_>>(), [&reused]);
        assert_eq!(events.emitted("missing").count(), 0);
        let always = Events::one(issued.clone());
        assert_eq!(always.emitted("anything").count(), 1);
    }

    #[test]
    fn the_limiter_lets_one_through_per_interval_and_counts_the_rest() {
        let limiter = Limiter::new(Duration::from_secs(10));
        assert_eq!(limiter.admit("c1 expired", 0), Some(0));
        assert_eq!(limiter.admit("c1 expired", 1_000), None);
        assert_eq!(limiter.admit("c1 expired", 2_000), None);
        assert_eq!(limiter.admit("c2 expired", 2_000), Some(0));
        assert_eq!(limiter.admit("c1 expired", 10_000), Some(2));
        assert_eq!(limiter.admit("c1 expired", 10_001), None);
    }
}
