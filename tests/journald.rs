//! Logs go to journald, with ACTION, ROLE and SCOPE as fields, when its socket
//! is there. The hook runs in a private mount namespace (`unshare -m`) where
//! a fresh /run holds `systemd/journal/socket`, bind-mounted from a datagram
//! socket this test reads; the host's /run and journal are never touched.

mod common;

use common::require_all;
use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::Duration;

#[test]
fn log_lines_reach_journald_with_action_role_and_scope() {
    if !require_all(&[
        ("root", nix::unistd::geteuid().is_root()),
        (
            "unshare (util-linux)",
            Command::new("unshare").arg("--help").output().is_ok(),
        ),
    ]) {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let sock_path = d.path().join("journal.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let cfg = d.path().join("c.yml");
    // No vip section: the callback logs one decision line and touches nothing.
    std::fs::write(&cfg, "name: pg1\n").unwrap();
    let script = format!(
        "mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/journal && \
         touch /run/systemd/journal/socket && \
         mount --bind {sock} /run/systemd/journal/socket && \
         exec {hook} --config {cfg} on_role_change replica batman",
        sock = sock_path.display(),
        hook = assert_cmd::cargo::cargo_bin("patroni-hook").display(),
        cfg = cfg.display()
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .env_remove("PATRONI_HOOK_LOG_STDERR")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "with journald, nothing on stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut buf = vec![0u8; 65536];
    // tracing-journald first sends an empty datagram to probe the socket.
    let fields = loop {
        let n = sock
            .recv(&mut buf)
            .expect("a log entry from the hook within 10 s");
        if n > 0 {
            break parse_native(&buf[..n]);
        }
    };
    let get = |k: &str| {
        fields
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("ACTION"), Some("on_role_change"), "{fields:?}");
    assert_eq!(get("ROLE"), Some("replica"), "{fields:?}");
    assert_eq!(get("SCOPE"), Some("batman"), "{fields:?}");
    assert_eq!(get("SYSLOG_IDENTIFIER"), Some("patroni-hook"), "{fields:?}");
    assert!(
        get("MESSAGE").is_some_and(|m| m.starts_with("no vip section")),
        "{fields:?}"
    );
}

/// journald's native protocol: `KEY=value\n`, or `KEY\n` + little-endian
/// u64 length + value + `\n` for values that may hold newlines.
fn parse_native(mut b: &[u8]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let nl = b
            .iter()
            .position(|&c| c == b'\n')
            .expect("newline-terminated field");
        let line = &b[..nl];
        if let Some(eq) = line.iter().position(|&c| c == b'=') {
            out.push((
                String::from_utf8_lossy(&line[..eq]).into_owned(),
                String::from_utf8_lossy(&line[eq + 1..]).into_owned(),
            ));
            b = &b[nl + 1..];
        } else {
            let key = String::from_utf8_lossy(line).into_owned();
            let rest = &b[nl + 1..];
            let len = u64::from_le_bytes(rest[..8].try_into().unwrap()) as usize;
            let value = String::from_utf8_lossy(&rest[8..8 + len]).into_owned();
            out.push((key, value));
            b = &rest[8 + len + 1..];
        }
    }
    out
}
