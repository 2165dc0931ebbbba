//! What the operator commands share: a direct Redis connection for inspection (SCAN, types,
//! TTLs), and output as aligned tables for people or JSON (`--json`) for scripts.
//! Changes that other services must hear about (revocations) go through the `Store`'s
//! atomic scripts instead, so every verify replica is told.

use std::io::Write;

use super::{CliError, CliResult};
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

/// Rows written as they are read: a JSON array, or a table whose columns are at least as
/// wide as typical values (a listing of a million tokens never waits for the last one).
pub struct RowWriter {
    json: bool,
    out: std::io::BufWriter<std::io::StdoutLock<'static>>,
    headers: &'static [&'static str],
    widths: &'static [usize],
    rows: u64,
    /// JSON Lines (one value a line, for streams and `--follow`) instead of one array.
    lines: bool,
}

impl RowWriter {
    pub fn new(json: bool, headers: &'static [&'static str], widths: &'static [usize]) -> Self {
        Self {
            json,
            out: std::io::BufWriter::new(std::io::stdout().lock()),
            headers,
            widths,
            rows: 0,
            lines: false,
        }
    }

    /// The same, writing JSON Lines in JSON mode; each row is flushed as it is written.
    pub fn lines(json: bool, headers: &'static [&'static str], widths: &'static [usize]) -> Self {
        Self {
            lines: true,
            ..Self::new(json, headers, widths)
        }
    }

    fn write_cells(&mut self, cells: &[&str]) -> CliResult {
        let mut line = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                line.push_str(cell);
            } else {
                let w = self.widths.get(i).copied().unwrap_or(0);
                line.push_str(&format!("{cell:<w$}  "));
            }
        }
        writeln!(self.out, "{}", line.trim_end()).map_err(write_failed)
    }

    pub fn row(&mut self, value: &serde_json::Value, cells: &[&str]) -> CliResult {
        if self.json && self.lines {
            writeln!(self.out, "{value}").map_err(write_failed)?;
        } else if self.json {
            let sep = if self.rows == 0 { "[\n  " } else { ",\n  " };
            write!(self.out, "{sep}{value}").map_err(write_failed)?;
        } else {
            if self.rows == 0 {
                let headers = self.headers;
                self.write_cells(headers)?;
            }
            self.write_cells(cells)?;
        }
        self.rows += 1;
        if self.lines {
            self.out.flush().map_err(write_failed)?;
        }
        Ok(())
    }

    pub fn finish(mut self) -> CliResult {
        let end = match (self.json, self.rows) {
            (true, _) if self.lines => "",
            (true, 0) => "[]\n",
            (true, _) => "\n]\n",
            (false, 0) => "(none)\n",
            (false, _) => "",
        };
        self.out.write_all(end.as_bytes()).map_err(write_failed)?;
        self.out.flush().map_err(write_failed)
    }
}

pub fn write_failed(e: std::io::Error) -> CliError {
    CliError::Failed(format!("cannot write: {e}"))
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
