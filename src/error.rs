//! The one error type of patroni-hook: a one-line message and the exit code it maps to.
//!
//! Every error names what was being done and on what ("interface eth1", "key
//! service/batman/leader", "/etc/pgbouncer/pgbouncer.ini"), then the cause, as
//! `context: cause`. The kind decides the exit code, and the worst kind of a
//! run wins (docs/reference.md, "Exit codes").

use std::fmt;

/// How bad an error is; decides the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// Temporary: Consul unreachable, no leader right now. Exit 75.
    Temporary,
    /// A step failed, or the fence refused the VIP. Exit 1.
    Failed,
    /// Usage or configuration error. Exit 2.
    Usage,
}

impl Kind {
    /// Every kind, for what lists them all (tests/docs_reference.rs checks
    /// the reference's exit-code table against it).
    pub const ALL: [Kind; 3] = [Kind::Temporary, Kind::Failed, Kind::Usage];
}

/// A one-line error with its kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: Kind,
    message: String,
}

/// Result with the crate's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A usage or configuration error (exit 2).
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(Kind::Usage, message)
    }

    /// A configuration error naming the file, the key and what was expected (exit 2).
    pub fn config(file: &std::path::Path, key: &str, expected: impl fmt::Display) -> Self {
        Self::new(
            Kind::Usage,
            format!("{}: {key}: {expected}", file.display()),
        )
    }

    /// A failed step (exit 1).
    pub fn failed(context: impl fmt::Display, cause: impl fmt::Display) -> Self {
        Self::new(Kind::Failed, format!("{context}: {cause}"))
    }

    /// A temporary condition: run again later (exit 75).
    pub fn temporary(context: impl fmt::Display, cause: impl fmt::Display) -> Self {
        Self::new(Kind::Temporary, format!("{context}: {cause}"))
    }

    /// An error of the given kind with a ready message.
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        let message: String = message.into();
        // One line, always: causes from libraries sometimes carry newlines.
        let message = message.replace(['\n', '\r'], " ");
        Self { kind, message }
    }

    /// The kind of this error.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The message, without the kind.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Prefixes the message with more context: `context: message`.
    pub fn context(self, context: impl fmt::Display) -> Self {
        Self::new(self.kind, format!("{context}: {}", self.message))
    }

    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        exit_code(Some(self.kind))
    }
}

/// Exit code for the worst kind seen in a run (`None` means converged).
pub fn exit_code(worst: Option<Kind>) -> i32 {
    match worst {
        None => 0,
        Some(Kind::Failed) => 1,
        Some(Kind::Usage) => 2,
        Some(Kind::Temporary) => 75,
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_contract() {
        assert_eq!(Error::usage("x").exit_code(), 2);
        assert_eq!(Error::failed("a", "b").exit_code(), 1);
        assert_eq!(Error::temporary("a", "b").exit_code(), 75);
        assert_eq!(exit_code(None), 0);
    }

    #[test]
    fn messages_are_one_line() {
        let e = Error::failed("reading key service/x/leader", "bad\nthing\r\n");
        assert!(!e.to_string().contains('\n'));
        assert_eq!(e.to_string(), "reading key service/x/leader: bad thing  ");
    }

    #[test]
    fn all_lists_every_kind() {
        // A kind added to the enum and not to ALL fails to compile here.
        for k in Kind::ALL {
            match k {
                Kind::Temporary | Kind::Failed | Kind::Usage => {}
            }
        }
        let n = |k: Kind| match k {
            Kind::Temporary => 0,
            Kind::Failed => 1,
            Kind::Usage => 2,
        };
        let seen: std::collections::BTreeSet<_> = Kind::ALL.iter().map(|k| n(*k)).collect();
        assert_eq!(seen.len(), 3);
    }

    #[test]
    fn failed_outranks_temporary() {
        assert!(Kind::Failed > Kind::Temporary);
        assert!(Kind::Usage > Kind::Failed);
    }
}
