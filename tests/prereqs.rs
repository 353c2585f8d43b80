//! scripts/prereqs.sh's own logic, on fake binaries: the check that decides
//! whether Consul 1.8.7 must be installed again.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

/// Runs `consul_is_187 BIN` from scripts/prereqs.sh as the scripts do
/// (`set -euo pipefail`), with a fake consul whose `version` prints `body`.
fn is_187(dir: &Path, body: &str) -> bool {
    let fake = dir.join("consul");
    std::fs::write(&fake, format!("#!/bin/bash\n{body}\n")).unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let prereqs = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/prereqs.sh");
    let status = Command::new("bash")
        .arg("-c")
        .arg(r#"set -euo pipefail; . "$1"; consul_is_187 "$2""#)
        .arg("bash")
        .arg(&prereqs)
        .arg(&fake)
        .status()
        .expect("bash");
    status.success()
}

#[test]
fn a_consul_that_writes_after_its_first_line_is_still_1_8_7() {
    let dir = tempfile::tempdir().unwrap();
    // Consul prints three lines; with `| head -n1` a consul still writing
    // after head exited died of SIGPIPE and the check failed. The pause
    // makes that certain here.
    let real_like = "echo 'Consul v1.8.7'\nsleep 0.2\necho 'Revision 1.8.7'\necho 'Protocol 2 spoken by default'";
    assert!(is_187(dir.path(), real_like));
    assert!(is_187(dir.path(), "echo 'Consul v1.8.7'"));
}

#[test]
fn another_version_or_a_failing_binary_is_not() {
    let dir = tempfile::tempdir().unwrap();
    assert!(!is_187(dir.path(), "echo 'Consul v1.9.17'"));
    assert!(!is_187(dir.path(), "echo 'Consul v1.8.70'"));
    assert!(!is_187(dir.path(), "echo 'Consul v1.8.7'; exit 1"));
    assert!(!is_187(dir.path(), "exit 127"));
}
