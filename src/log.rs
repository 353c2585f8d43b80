//! Logging: one line per decision and per change, to journald when its socket
//! is there, else to stderr without colour. Every line carries the run's
//! ACTION, ROLE and SCOPE as journald fields.

use std::sync::OnceLock;
use tracing_subscriber::prelude::*;

/// The fields every line carries.
#[derive(Debug, Clone, Default)]
pub struct Fields {
    /// Patroni action, or the command name.
    pub action: String,
    /// Role, or "-".
    pub role: String,
    /// Scope, or "-".
    pub scope: String,
}

static FIELDS: OnceLock<Fields> = OnceLock::new();

/// The run's fields (empty before `init`).
pub fn fields() -> &'static Fields {
    FIELDS.get_or_init(Fields::default)
}

const JOURNALD_SOCKET: &str = "/run/systemd/journal/socket";

/// Sets up the subscriber. `verbose` 0 = info, 1 = debug, 2+ = trace.
pub fn init(verbose: u8, f: Fields) {
    let _ = FIELDS.set(f);
    let level = match verbose {
        0 => tracing::Level::INFO,
        1 => tracing::Level::DEBUG,
        _ => tracing::Level::TRACE,
    };
    // Only our own events: library crates (hyper, rustls) stay silent, so a
    // header with the token can never reach a log through them.
    let filter = tracing_subscriber::filter::Targets::new().with_target("patroni_hook", level);
    let force_stderr = std::env::var_os("PATRONI_HOOK_LOG_STDERR").is_some();
    if !force_stderr && std::path::Path::new(JOURNALD_SOCKET).exists() {
        if let Ok(j) = tracing_journald::layer() {
            let j = j
                .with_field_prefix(None)
                .with_syslog_identifier("patroni-hook".to_string());
            let _ = tracing_subscriber::registry()
                .with(j.with_filter(filter))
                .try_init();
            return;
        }
    }
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(|| OneLine(std::io::stderr()))
        .with_ansi(false)
        .with_target(false);
    let _ = tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .try_init();
}

/// A writer that keeps each log line one line: the fmt layer writes a whole
/// formatted event in one `write_all`, and every control character in it but
/// the final newline is escaped. Values from Consul are already escaped where
/// they are quoted (`keys::shown`); this holds for anything else a message
/// carries (an errno text, a path).
struct OneLine<W>(W);

impl<W: std::io::Write> std::io::Write for OneLine<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write_all(&escape_line(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// Escapes control characters (but a trailing newline, and tabs) as `\n`,
/// `\r` or `\u{..}`.
fn escape_line(buf: &[u8]) -> Vec<u8> {
    let (body, end) = match buf.strip_suffix(b"\n") {
        Some(b) => (b, &b"\n"[..]),
        None => (buf, &b""[..]),
    };
    let text = String::from_utf8_lossy(body);
    let mut out = String::with_capacity(text.len() + 1);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push('\t'),
            c if c.is_control() => out.push_str(&c.escape_unicode().to_string()),
            c => out.push(c),
        }
    }
    let mut v = out.into_bytes();
    v.extend_from_slice(end);
    v
}

/// Logs one line at info with the run's fields.
#[macro_export]
macro_rules! note {
    ($($arg:tt)*) => {{
        let f = $crate::log::fields();
        tracing::info!(action = %f.action, role = %f.role, scope = %f.scope, $($arg)*)
    }};
}

/// Logs one line at warn with the run's fields.
#[macro_export]
macro_rules! warn_line {
    ($($arg:tt)*) => {{
        let f = $crate::log::fields();
        tracing::warn!(action = %f.action, role = %f.role, scope = %f.scope, $($arg)*)
    }};
}

/// Logs one line at error with the run's fields.
#[macro_export]
macro_rules! error_line {
    ($($arg:tt)*) => {{
        let f = $crate::log::fields();
        tracing::error!(action = %f.action, role = %f.role, scope = %f.scope, $($arg)*)
    }};
}

/// Logs one line at debug with the run's fields.
#[macro_export]
macro_rules! debug_line {
    ($($arg:tt)*) => {{
        let f = $crate::log::fields();
        tracing::debug!(action = %f.action, role = %f.role, scope = %f.scope, $($arg)*)
    }};
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_line_stays_one_line() {
        assert_eq!(
            super::escape_line(b"a\nERROR forged\r\x1b[31m\tend\n"),
            b"a\\nERROR forged\\r\\u{1b}[31m\tend\n".to_vec()
        );
        assert_eq!(super::escape_line(b"plain"), b"plain".to_vec());
    }
}
