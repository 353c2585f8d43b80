//! https to Consul with `consul.ca_file`: the hook trusts exactly that CA.
//!
//! `openssl s_server -www` stands in for a TLS endpoint on loopback: it answers
//! any GET with an HTML status page, so a run that got through the handshake
//! fails later with "unexpected answer" (exit 1), while a run that does not
//! trust the certificate never gets an answer (exit 75).

mod common;

use common::tls::{self, make_pki};
use std::process::Command;

#[test]
fn https_consul_is_trusted_through_ca_file_only() {
    if !tls::require_openssl() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    make_pki(dir);
    let server = tls::Server::start(dir, "-www");
    let port = server.port;
    std::fs::write(
        dir.join("pgbouncer.ini"),
        "[databases]\nappdb = host=198.51.100.11 port=5432\n",
    )
    .unwrap();
    let run_on = |host: &str, ca: &str| {
        let cfg = dir.join("c.yml");
        std::fs::write(
            &cfg,
            format!(
                "lock_file: {d}/l\nconsul:\n  url: https://{host}:{port}\n  ca_file: {d}/{ca}\n  timeout: 2s\npgbouncer:\n  ini: {d}/pgbouncer.ini\n  pidfile: {d}/p.pid\n  clusters:\n    - scope: batman\n      databases: [appdb]\n",
                d = dir.display()
            ),
        )
        .unwrap();
        Command::new(assert_cmd::cargo::cargo_bin("patroni-hook"))
            .arg("--config")
            .arg(&cfg)
            .arg("reconcile")
            .env("PATRONI_HOOK_LOG_STDERR", "1")
            .output()
            .unwrap()
    };
    let run = |ca: &str| run_on("127.0.0.1", ca);
    // Trusted: the handshake succeeds and the (non-Consul) answer is refused.
    let out = run("ca.pem");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("unexpected answer"), "{err}");
    // Another CA: no answer is accepted, and the message says it is the
    // certificate check against ca_file, not an unreachable Consul.
    let out = run("other-ca.pem");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("consul.ca_file") && err.contains("other-ca.pem"),
        "{err}"
    );
    assert!(err.contains("TLS"), "{err}");
    assert!(!err.contains("unreachable"), "{err}");
    // The right CA, the wrong name (the certificate is for 127.0.0.1 only).
    let out = run_on("localhost", "ca.pem");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("consul.ca_file") && err.contains("TLS"),
        "{err}"
    );
    assert!(err.to_lowercase().contains("name"), "{err}");
    // A CA file with no certificate in it: a configuration error naming it.
    std::fs::write(dir.join("empty.pem"), "not a certificate\n").unwrap();
    let out = run("empty.pem");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("empty.pem") && err.contains("no certificate"),
        "{err}"
    );
    // A CA file that is not there: a configuration error naming it.
    let out = run("missing.pem");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("consul.ca_file") && err.contains("missing.pem"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("pgbouncer.ini")).unwrap(),
        "[databases]\nappdb = host=198.51.100.11 port=5432\n"
    );
    // https to an agent that speaks plain HTTP: a failed handshake, said as
    // such, not a certificate that failed verification.
    let plain = consul_double::Server::start(consul_double::Options::default()).unwrap();
    let port_plain = plain.url().rsplit(':').next().unwrap().to_string();
    let cfg = dir.join("c.yml");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace(&format!(":{port}"), &format!(":{port_plain}"))
        .replace("missing.pem", "ca.pem");
    std::fs::write(&cfg, text).unwrap();
    let out = Command::new(assert_cmd::cargo::cargo_bin("patroni-hook"))
        .arg("--config")
        .arg(&cfg)
        .arg("reconcile")
        .env("PATRONI_HOOK_LOG_STDERR", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("TLS handshake"), "{err}");
    assert!(!err.contains("verification"), "{err}");
}
