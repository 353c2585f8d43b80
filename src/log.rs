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
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false);
    let _ = tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .try_init();
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
