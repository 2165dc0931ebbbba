//! What the operator commands share: a direct Redis connection for inspection (SCAN, types,
//! TTLs), and output as aligned tables for people or JSON (`--json`) for scripts.
//! Changes that other services must hear about (revocations) go through the `Store`'s
//! atomic scripts instead, so every verify replica is told.

use super::CliError;
pub use crate::store::admin::{Admin, SCAN_PAGE};

pub fn redis_failed(e: redis::RedisError) -> CliError {
    CliError::Failed(format!("Redis: {e}"))
}

impl From<crate::store::StoreError> for CliError {
    fn from(e: crate::store::StoreError) -> Self {
        CliError::Failed(e.to_string())
    }
}

/// Prints rows as an aligned table (people) or the JSON value (scripts).
pub fn print_table(json: bool, value: &serde_json::Value, headers: &[&str], rows: &[Vec<String>]) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        );
        return;
    }
    if rows.is_empty() {
        println!("(none)");
        return;
    }
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        println!("{}", out.trim_end());
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// "in 29d 23h", "in 4m", "expired 2h ago".
pub fn relative(seconds_from_now: i64) -> String {
    let s = seconds_from_now.unsigned_abs();
    let text = if s >= 86_400 {
        format!("{}d {}h", s / 86_400, (s % 86_400) / 3_600)
    } else if s >= 3_600 {
        format!("{}h {}m", s / 3_600, (s % 3_600) / 60)
    } else if s >= 60 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    };
    if seconds_from_now >= 0 {
        format!("in {text}")
    } else {
        format!("expired {text} ago")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn relative_times() {
        assert_eq!(super::relative(90_000), "in 1d 1h");
        assert_eq!(super::relative(125), "in 2m");
        assert_eq!(super::relative(-7_300), "expired 2h 1m ago");
    }
}
