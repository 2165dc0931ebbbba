//! Fixed-window rate limits on the public endpoints, shaped for hosted clients: Claude's or
//! ChatGPT's requests reach us from their clouds, so one address speaks for thousands of
//! users, and a limit per address alone would lock all of them out together.
//!
//! - Per client address, all requests (`RATE_LIMIT_REGISTER`, `RATE_LIMIT_AUTHORIZE`,
//!   `RATE_LIMIT_TOKEN` a minute): a ceiling on load, high enough for a cloud's egress.
//! - Per client address and client, failed `/token` requests (`RATE_LIMIT_CLIENT_FAILURES` a
//!   minute): guessing one client's secret or grants stops there, while the same client's
//!   other users (a shared metadata-document client) and other clients go on.
//! - What registrations may store is bounded apart from these (`UNUSED_CLIENT_BUDGET`).
//!
//! In-process: each auth replica limits on its own.

use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::config::Settings;

use super::OAuthError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limited {
    Register,
    Authorize,
    Token,
}

impl Limited {
    fn endpoint(self) -> &'static str {
        match self {
            Limited::Register => "register",
            Limited::Authorize => "authorize",
            Limited::Token => "token",
        }
    }
}

pub struct RateLimits {
    window: Duration,
    per_window: [u32; 3],
    client_failures: u32,
    counters: moka::sync::Cache<(Limited, IpAddr), Arc<AtomicU32>>,
    /// By (endpoint, address, hash of the client id): bounded memory whatever ids are sent.
    failures: moka::sync::Cache<(Limited, IpAddr, u64), Arc<AtomicU32>>,
    hasher: foldhash::fast::RandomState,
    refused: prometheus::IntCounterVec,
}

impl RateLimits {
    pub fn new(settings: &Settings, refused: prometheus::IntCounterVec) -> Self {
        let window = Duration::from_secs(60);
        fn cache<K, V>(window: Duration) -> moka::sync::Cache<K, V>
        where
            K: std::hash::Hash + Eq + Send + Sync + 'static,
            V: Clone + Send + Sync + 'static,
        {
            moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(window)
                .build()
        }
        Self {
            window,
            per_window: [
                settings.rate_limits.register,
                settings.rate_limits.authorize,
                settings.rate_limits.token,
            ],
            client_failures: settings.rate_limits.client_failures,
            counters: cache(window),
            failures: cache(window),
            hasher: foldhash::fast::RandomState::default(),
            refused,
        }
    }

    /// Counts one request; `Err` (429) once the address is over its budget for this window.
    pub fn check(&self, what: Limited, ip: Option<IpAddr>) -> Result<(), OAuthError> {
        let Some(ip) = ip else { return Ok(()) };
        let limit = self.per_window[what as usize];
        if limit == 0 {
            return Ok(());
        }
        let counter = self
            .counters
            .get_with((what, ip), || Arc::new(AtomicU32::new(0)));
        if counter.fetch_add(1, Ordering::Relaxed) >= limit {
            return Err(self.refuse(what, "address"));
        }
        Ok(())
    }

    /// `Err` (429) when `client_id` has failed too often from this address in this window.
    pub fn check_failures(
        &self,
        what: Limited,
        ip: Option<IpAddr>,
        client_id: &str,
    ) -> Result<(), OAuthError> {
        let (Some(ip), true) = (ip, self.client_failures > 0) else {
            return Ok(());
        };
        let key = (what, ip, self.hasher.hash_one(client_id));
        match self.failures.get(&key) {
            Some(n) if n.load(Ordering::Relaxed) >= self.client_failures => {
                Err(self.refuse(what, "address_client"))
            }
            _ => Ok(()),
        }
    }

    /// Counts a failed request of `client_id` from this address.
    pub fn record_failure(&self, what: Limited, ip: Option<IpAddr>, client_id: &str) {
        let (Some(ip), true) = (ip, self.client_failures > 0) else {
            return;
        };
        let key = (what, ip, self.hasher.hash_one(client_id));
        self.failures
            .get_with(key, || Arc::new(AtomicU32::new(0)))
            .fetch_add(1, Ordering::Relaxed);
    }

    fn refuse(&self, what: Limited, key: &str) -> OAuthError {
        self.refused
            .with_label_values(&[what.endpoint(), key])
            .inc();
        OAuthError::rate_limited(self.window.as_secs())
    }
}
