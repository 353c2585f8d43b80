//! The shared helpers that need nothing but std: skip-or-fail under CI,
//! bounded waits, a free port, finding a program. tests/common re-exports
//! them, and the consul-double crate's tests include this file by path, so
//! both crates' tests share one copy.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A command's exit status, stdout and stderr, for assertion messages.
pub fn text(o: &std::process::Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A missing prerequisite fails the test under `CI=true`; elsewhere
/// the test skips, printing exactly what is missing. True when nothing is.
pub fn require(missing: &[String]) -> bool {
    if missing.is_empty() {
        return true;
    }
    let message = format!("this test needs {}", missing.join(", "));
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{message}");
    }
    // Straight to the process's stderr: libtest captures `eprintln!` and shows
    // it only for failing tests, and a skip must be seen.
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "skipped: {message}");
    false
}

/// `require` over (what, present) pairs.
pub fn require_all(needs: &[(&str, bool)]) -> bool {
    let missing: Vec<String> = needs
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(what, _)| what.to_string())
        .collect();
    require(&missing)
}

/// Polls `condition` every 10 ms until it holds or `timeout` passes; panics
/// naming `what` was awaited.
pub fn wait_for(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    wait_for_some(what, timeout, || condition().then_some(()))
}

/// Polls `check` every 10 ms until it returns `Some`, and returns the value;
/// panics after `timeout` naming `what` was awaited.
pub fn wait_for_some<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A free TCP port on 127.0.0.1 (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding 127.0.0.1:0 for a free port")
        .port()
}

/// Full path of a program on PATH or in the sbin directories.
pub fn which(prog: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin"])
        .map(|d| Path::new(d).join(prog))
        .find(|p| p.is_file());
    found
}
