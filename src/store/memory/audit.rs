//! The embedded store's audit trail: the events of the Redis stream `oauth:audit` (same ids,
//! `{ms}-{seq}`, same trimming by length and age), the webhook groups' delivery state, and
//! verify's usage counts.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Instant;

use crate::audit::{self, Events, Stored};

/// A stream id: milliseconds and sequence.
type Id = (i64, u64);

fn id_text((ms, seq): Id) -> String {
    format!("{ms}-{seq}")
}

fn id_of(text: &str) -> Option<Id> {
    let (ms, seq) = text.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

#[derive(Default)]
struct Group {
    /// The last entry handed out as new.
    last: Id,
    /// Entries handed out and not yet acknowledged: who has them, since when.
    pending: BTreeMap<Id, (String, Instant)>,
}

#[derive(Default)]
pub(super) struct Trail {
    entries: VecDeque<(Id, Stored)>,
    last: Id,
    groups: HashMap<String, Group>,
    usage: HashMap<String, HashMap<String, u64>>,
}

impl Trail {
    /// Appends the events of `outcome` (with the count `n`), trimming by length and age.
    pub(super) fn append(
        &mut self,
        bounds: &audit::Bounds,
        events: &Events,
        outcome: &str,
        n: Option<i64>,
        now_ms: i64,
    ) {
        if !bounds.enabled {
            return;
        }
        for event in events.emitted(outcome) {
            let id = if now_ms > self.last.0 {
                (now_ms, 0)
            } else {
                (self.last.0, self.last.1 + 1)
            };
            self.last = id;
            let mut event = event.clone();
            if let Some(n) = n {
                event.detail.insert("count".into(), n.into());
            }
            self.entries.push_back((
                id,
                Stored {
                    id: id_text(id),
                    event,
                },
            ));
        }
        let oldest = now_ms - bounds.retention.as_millis() as i64;
        while self.entries.len() as u64 > bounds.max_events.max(1)
            || self.entries.front().is_some_and(|(id, _)| id.0 < oldest)
        {
            self.entries.pop_front();
        }
    }

    /// Every event kept, oldest first (tests compare it with the Redis stream).
    pub(super) fn events(&self) -> Vec<Stored> {
        self.entries.iter().map(|(_, s)| s.clone()).collect()
    }

    fn find(&self, id: Id) -> Option<&Stored> {
        let at = self.entries.binary_search_by(|(i, _)| i.cmp(&id)).ok()?;
        Some(&self.entries[at].1)
    }

    pub(super) fn deliveries(
        &mut self,
        read: &crate::store::GroupRead<'_>,
        now: Instant,
    ) -> Vec<Stored> {
        let last = self.last;
        let mut group = self.groups.remove(read.group).unwrap_or(Group {
            last,
            pending: BTreeMap::new(),
        });
        let mut out = Vec::new();
        let mut lost = Vec::new();
        // Own pending first, then what another consumer left idle, then new entries.
        let own: Vec<Id> = group
            .pending
            .iter()
            .filter(|(_, (c, _))| c == read.consumer)
            .map(|(id, _)| *id)
            .take(read.count)
            .collect();
        let claimable: Vec<Id> = group
            .pending
            .iter()
            .filter(|(_, (c, at))| {
                c != read.consumer && now.saturating_duration_since(*at) >= read.claim_idle
            })
            .map(|(id, _)| *id)
            .take(read.count)
            .collect();
        let chosen = if !own.is_empty() { own } else { claimable };
        for id in chosen {
            group.pending.insert(id, (read.consumer.to_string(), now));
            match self.find(id) {
                Some(s) => out.push(s.clone()),
                None => lost.push(id),
            }
        }
        if out.is_empty() && lost.is_empty() {
            let fresh: Vec<Id> = self
                .entries
                .iter()
                .map(|(id, _)| *id)
                .filter(|id| *id > group.last)
                .take(read.count)
                .collect();
            for id in fresh {
                group.last = id;
                group.pending.insert(id, (read.consumer.to_string(), now));
                if let Some(s) = self.find(id) {
                    out.push(s.clone());
                }
            }
        }
        for id in lost {
            group.pending.remove(&id);
        }
        self.groups.insert(read.group.to_string(), group);
        out
    }

    pub(super) fn ack(&mut self, group: &str, ids: &[String]) {
        if let Some(group) = self.groups.get_mut(group) {
            for id in ids.iter().filter_map(|i| id_of(i)) {
                group.pending.remove(&id);
            }
        }
    }

    pub(super) fn backlog(&self, group: &str) -> u64 {
        let Some(group) = self.groups.get(group) else {
            return 0;
        };
        let unread = self
            .entries
            .iter()
            .filter(|(id, _)| *id > group.last)
            .count();
        (group.pending.len() + unread) as u64
    }

    pub(super) fn add_usage(&mut self, hour: &str, counts: &[(String, u64)]) {
        let hour = self.usage.entry(hour.to_string()).or_default();
        for (field, n) in counts {
            *hour.entry(field.clone()).or_default() += n;
        }
    }

    /// The usage counts of an hour (tests).
    pub(super) fn usage(&self, hour: &str) -> HashMap<String, u64> {
        self.usage.get(hour).cloned().unwrap_or_default()
    }
}
