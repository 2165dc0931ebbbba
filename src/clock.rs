//! The clock every time-based decision reads, injected so tests can move time.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch, as JWT `exp`/`iat`/`nbf` count them.
pub trait Clock: Send + Sync + 'static {
    fn now_unix(&self) -> i64;

    /// Milliseconds since the epoch, for ordering events within a second.
    fn now_millis(&self) -> i64 {
        self.now_unix() * 1000
    }
}

/// The real wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_unix(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    }

    fn now_millis(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }
}

/// A clock tests set by hand.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    pub fn new(now_unix: i64) -> Self {
        Self(Arc::new(AtomicI64::new(now_unix)))
    }

    pub fn set(&self, now_unix: i64) {
        self.0.store(now_unix, Ordering::SeqCst);
    }

    pub fn advance(&self, secs: i64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_unix(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// The clock services share.
pub type SharedClock = Arc<dyn Clock>;

pub fn system() -> SharedClock {
    Arc::new(SystemClock)
}

/// Days since 1970-01-01 of a civil (proleptic Gregorian) date; Howard Hinnant's algorithm.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let (y, m) = if month <= 2 {
        (year - 1, i64::from(month) + 9)
    } else {
        (year, i64::from(month) - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let doy = (153 * m + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date (year, month, day) of a day number since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Milliseconds since the epoch as UTC RFC 3339 (`2026-12-07T05:04:03.021Z`).
pub fn utc_rfc3339(millis: i64) -> String {
    let secs = millis.div_euclid(1000);
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        millis.rem_euclid(1000)
    )
}

/// A UTC hour as `YYYYMMDDHH` (the name of an hour's usage counters).
pub fn utc_hour(unix: i64) -> String {
    let (y, mo, d) = civil_from_days(unix.div_euclid(86_400));
    format!("{y:04}{mo:02}{d:02}{:02}", unix.rem_euclid(86_400) / 3600)
}

/// Reads an RFC 3339 time (`2026-12-07T05:04:03Z`, fractions and `+01:00` offsets allowed;
/// a date alone is its midnight UTC) as milliseconds since the epoch.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let text = text.trim();
    let (date, rest) = match text.find(['T', 't', ' ']) {
        Some(i) => (&text[..i], &text[i + 1..]),
        None => (text, ""),
    };
    let mut parts = date.splitn(3, '-');
    let year: i64 = parts.next()?.parse().ok()?;
    let month: u32 = parts.next()?.parse().ok()?;
    let day: u32 = parts.next()?.parse().ok()?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let mut millis = days_from_civil(year, month, day) * 86_400_000;
    if rest.is_empty() {
        return Some(millis);
    }
    let (time, offset_ms) = if let Some(t) = rest.strip_suffix(['Z', 'z']) {
        (t, 0)
    } else if let Some(i) = rest.rfind(['+', '-']) {
        let (t, off) = rest.split_at(i);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let (h, m) = off[1..].split_once(':')?;
        let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
        (t, sign * (h * 3600 + m * 60) * 1000)
    } else {
        (rest, 0)
    };
    let (hms, fraction) = time.split_once('.').unwrap_or((time, ""));
    let mut fields = hms.split(':');
    let h: i64 = fields.next()?.parse().ok()?;
    let m: i64 = fields.next()?.parse().ok()?;
    let s: i64 = fields.next().unwrap_or("0").parse().ok()?;
    if h > 23 || m > 59 || s > 60 {
        return None;
    }
    let frac_ms: i64 = format!("{fraction:0<3}")[..3].parse().ok()?;
    millis += (h * 3600 + m * 60 + s) * 1000 + frac_ms;
    Some(millis - offset_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_times_round_trip() {
        assert_eq!(utc_rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc_rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
        for millis in [0, 1_765_083_903_021, 4_102_444_799_999, 951_782_400_000] {
            assert_eq!(parse_rfc3339(&utc_rfc3339(millis)), Some(millis));
        }
        assert_eq!(parse_rfc3339("2026-12-07"), Some(1_796_601_600_000));
        assert_eq!(
            parse_rfc3339("2026-12-07T06:00:00+01:00"),
            parse_rfc3339("2026-12-07T05:00:00Z")
        );
        assert_eq!(utc_hour(1_796_601_600 + 5 * 3600), "2026120705");
        assert_eq!(parse_rfc3339("2026-13-01"), None);
        assert_eq!(parse_rfc3339("yesterday"), None);
    }
}
