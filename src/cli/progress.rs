//! Progress of the long commands (backup, restore, purge-expired, revoking a user's or a
//! client's tokens, deleting a client completely, exporting the audit trail): a bar on stderr
//! with what is done, the rate and the time left, drawn only when stderr is a terminal and
//! the output is not `--json`, so scripts and logs see nothing of it.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::Cli;

/// A bar, or nothing where none is drawn.
pub struct Progress(Option<ProgressBar>);

impl Progress {
    /// `total` items of `what` (none known: a counter without a bar).
    pub fn new(cli: &Cli, total: Option<u64>, what: &str) -> Self {
        if cli.json || !std::io::stderr().is_terminal() {
            return Self(None);
        }
        let (bar, template) = match total {
            Some(total) => (
                ProgressBar::new(total),
                "{msg} [{bar:30}] {human_pos}/{human_len} {per_sec} eta {eta}",
            ),
            None => (
                ProgressBar::new_spinner(),
                "{msg} {spinner} {human_pos} {per_sec} {elapsed}",
            ),
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_draw_target(ProgressDrawTarget::stderr());
        bar.set_message(what.to_string());
        // Drawn at once, so even a short run shows what it did.
        bar.tick();
        Self(Some(bar))
    }

    pub fn inc(&self, n: u64) {
        if let Some(bar) = &self.0 {
            bar.inc(n);
        }
    }

    /// How much is done (where a step reports what is left rather than what it did).
    pub fn set_position(&self, done: u64) {
        if let Some(bar) = &self.0 {
            bar.set_position(done);
        }
    }

    /// The total turned out larger (or became known).
    pub fn set_total(&self, total: u64) {
        if let Some(bar) = &self.0 {
            bar.set_length(total);
        }
    }

    pub fn finish(self) {
        if let Some(bar) = self.0 {
            bar.finish_and_clear();
        }
    }
}
