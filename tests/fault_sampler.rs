//! The fault matrix's end-state sampler (scripts/lab/labkit/measure.py), checked on
//! its own by scripts/lab/test_faults.py, without a lab: the simulated
//! operator's in-place write of pgbouncer.ini (truncate, then write) is never
//! sampled half made, and an ini the hook truncated, left without its
//! managed entry or pointed at a replica still fails the row. The same
//! script checks what each row acts on, on real Consul and on the double:
//! the rows each Consul runs or skips (and why), the processes "Consul
//! frozen" stops and the addresses "cut from Consul" blackholes, the Raft
//! leader named by `/v1/status/leader`, the servers a quorum loss stops, the
//! agents' watch tokens replaced by token-revoked, and the hook runs that
//! count against it.

mod common;

use common::{require_all, which};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// test_faults.py takes about two seconds; a generous bound for a loaded machine.
const TIMEOUT: Duration = Duration::from_secs(120);

#[test]
fn fault_matrix_sampler_tells_the_operators_write_from_the_hooks_state() {
    let python = which("python3");
    if !require_all(&[("python3", python.is_some())]) {
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/lab/test_faults.py");
    let out = tempfile::NamedTempFile::new().expect("an output file");
    let mut child = Command::new(python.unwrap())
        .arg(&script)
        .stdin(Stdio::null())
        .stdout(out.reopen().expect("output file"))
        .stderr(out.reopen().expect("output file"))
        .spawn()
        .expect("starting python3 scripts/lab/test_faults.py");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for test_faults.py") {
            break Some(status);
        }
        if started.elapsed() >= TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = std::fs::read_to_string(out.path()).unwrap_or_default();
    match status {
        Some(s) => assert!(s.success(), "{} failed ({s}):\n{output}", script.display()),
        None => panic!(
            "{} still running after {TIMEOUT:?}:\n{output}",
            script.display()
        ),
    }
}
