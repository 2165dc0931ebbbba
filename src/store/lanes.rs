//! The audit trail's lanes on a Redis Cluster: there the trail is a stream per bucket
//! (`oauth:audit:{tag}`, written by the steps of that bucket's slot) and one for the steps with
//! no bucket (`oauth:audit:{g}`). A reader sees one trail ordered by (id, lane), an event's id
//! written `ms-seq@lane` (the lane in hex, `g` for the last): what `audit` prints and what
//! webhooks send as the event id.

use super::keys;
use crate::audit::Stored;

/// The lanes of a cluster's trail: one per bucket, then the global one.
pub const LANES: usize = crate::slots::BUCKETS + 1;

pub fn lane_stream(lane: usize) -> String {
    match u8::try_from(lane) {
        Ok(bucket) => keys::audit_bucket(crate::slots::Bucket::new(bucket)),
        Err(_) => format!("{}:{{{}}}", keys::AUDIT, crate::slots::GLOBAL_TAG),
    }
}

/// The lane a stream name is, from its tag.
pub fn lane_of_stream(stream: &str) -> Option<usize> {
    let tag = stream.split_once('{')?.1.split_once('}')?.0;
    if tag == crate::slots::GLOBAL_TAG {
        return Some(LANES - 1);
    }
    (0..crate::slots::BUCKETS).find(|&b| crate::slots::Bucket::new(b as u8).tag() == tag)
}

/// A place in a cluster's trail: an id in a lane's stream, and the lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct At {
    pub ms: u64,
    pub seq: u64,
    pub lane: usize,
}

impl At {
    pub fn new(id: &str, lane: usize) -> Option<Self> {
        let (ms, seq) = id.split_once('-')?;
        Some(Self {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
            lane,
        })
    }

    /// From `ms-seq@lane`, as [`At::text`] writes it.
    pub fn parse(text: &str) -> Option<Self> {
        let (id, lane) = text.split_once('@')?;
        let lane = match lane {
            "g" => LANES - 1,
            hex => usize::from(u8::from_str_radix(hex, 16).ok()?),
        };
        Self::new(id, lane)
    }

    pub fn id(&self) -> String {
        format!("{}-{}", self.ms, self.seq)
    }

    pub fn text(&self) -> String {
        if self.lane == LANES - 1 {
            format!("{}@g", self.id())
        } else {
            format!("{}@{:02x}", self.id(), self.lane)
        }
    }
}

/// The events of entries read from the lanes, in the order given, each with its place as its
/// id (entries without an event, trimmed or not ours, left out).
pub fn events_at(read: Vec<(At, Option<Stored>)>) -> Vec<Stored> {
    read.into_iter()
        .filter_map(|(at, stored)| {
            let mut stored = stored?;
            stored.id = at.text();
            Some(stored)
        })
        .collect()
}
