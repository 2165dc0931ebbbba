//! Per-client-IP fixed-window rate limits on the public endpoints (`/register`,
//! `/authorize`, `/token`). In-process: each auth replica limits on its own.

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

pub struct RateLimits {
    window: Duration,
    per_window: [u32; 3],
    counters: moka::sync::Cache<(Limited, IpAddr), Arc<AtomicU32>>,
}

impl RateLimits {
    pub fn new(settings: &Settings) -> Self {
        let window = Duration::from_secs(60);
        Self {
            window,
            per_window: [
                settings.rate_limits.register,
                settings.rate_limits.authorize,
                settings.rate_limits.token,
            ],
            counters: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(window)
                .build(),
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
            return Err(OAuthError::rate_limited(self.window.as_secs()));
        }
        Ok(())
    }
}
