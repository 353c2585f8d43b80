//! stdout for `--dry-run`, `status` and `check-config`.
//!
//! `println!` panics when stdout is closed or its reader is gone; a run
//! whose output nobody reads ends as it would have ended, quietly (as
//! ripgrep does with a broken pipe).

use std::io::Write;

/// Writes one line to stdout; a write error is ignored.
pub fn line(args: std::fmt::Arguments<'_>) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout
        .write_fmt(args)
        .and_then(|()| stdout.write_all(b"\n"));
}

/// Writes text as it is (help, version); a write error is ignored.
pub fn text(s: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(s.as_bytes()).and_then(|()| stdout.flush());
}
