//! How a run ends: the worst kind of error it met (the exit code) and what
//! it did (the metrics). Both hosts' runs report through it.

use crate::error::{exit_code, Error, Kind};
use crate::{error_line, warn_line};

/// How a run is ending: the worst kind seen so far, and what it did (for
/// the metrics).
#[derive(Debug, Default)]
pub struct Report {
    worst: Option<Kind>,
    /// What the run did.
    pub facts: crate::metrics::Facts,
}

impl Report {
    /// Logs an error and remembers its kind.
    pub fn fail(&mut self, e: Error) {
        match e.kind() {
            Kind::Temporary => warn_line!("{e}"),
            _ => error_line!("{e}"),
        }
        self.set(e.kind());
    }

    /// Remembers a kind without logging.
    pub fn set(&mut self, k: Kind) {
        self.worst = Some(self.worst.map_or(k, |w| w.max(k)));
    }

    /// The worst kind seen.
    pub fn worst(&self) -> Option<Kind> {
        self.worst
    }

    /// The process exit code.
    pub fn exit_code(&self) -> i32 {
        exit_code(self.worst)
    }

    /// A report for one of a run's steps taken side by side with others
    /// (the PgBouncer host's): merged into the run's with [`Report::merge`].
    pub fn part() -> Report {
        Report {
            worst: None,
            facts: crate::metrics::Facts {
                vip: None,
                pgbouncer: Some(Default::default()),
            },
        }
    }

    /// Takes in what a part of the run met and did.
    pub fn merge(&mut self, part: Report) {
        if let Some(k) = part.worst {
            self.set(k);
        }
        if let (Some(f), Some(p)) = (self.facts.pgbouncer.as_mut(), part.facts.pgbouncer) {
            f.rewrote |= p.rewrote;
            f.paused.extend(p.paused);
            f.resumed.extend(p.resumed);
        }
    }
}
