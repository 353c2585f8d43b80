//! Helpers shared by the integration tests; each test file takes what it needs.
// Each test file is its own crate and uses a different part of these helpers.
#![allow(dead_code)]

pub mod consul;
pub mod netns;
pub mod pg;

/// A command's exit status, stdout and stderr, for assertion messages.
pub fn text(o: &std::process::Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
