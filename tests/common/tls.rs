//! A test PKI made with the openssl command, and `openssl s_server` as a TLS
//! endpoint on loopback.

use super::{free_port, require_all, wait_for};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// False (and skipped, or failed under CI) when the openssl command is missing.
pub fn require_openssl() -> bool {
    require_all(&[(
        "the openssl command (Debian package openssl)",
        Command::new("openssl").arg("version").output().is_ok(),
    )])
}

/// Runs openssl in `dir`; panics with its stderr when it fails.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes to `dir`: two CAs (`ca.pem`, `other-ca.pem`) and a server
/// certificate for 127.0.0.1 signed by the first (`srv.pem`, `srv.key`).
pub fn make_pki(dir: &Path) {
    for ca in ["ca", "other-ca"] {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.pem"),
                "-days",
                "2",
                "-subj",
                &format!("/CN={ca}"),
            ],
        );
    }
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "srv.key",
            "-out",
            "srv.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "srv.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "srv.pem",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ],
    );
}

/// `openssl s_server` on 127.0.0.1 with the certificate of `make_pki`;
/// stopped when dropped.
pub struct Server {
    child: Child,
    pub port: u16,
}

impl Server {
    /// `mode` is `-www` (a status page for any GET) or `-WWW` (the file of
    /// the path, from `dir`).
    pub fn start(dir: &Path, mode: &str) -> Server {
        let port = free_port();
        let child = Command::new("openssl")
            .current_dir(dir)
            .args([
                "s_server",
                "-accept",
                &format!("127.0.0.1:{port}"),
                "-cert",
                "srv.pem",
                "-key",
                "srv.key",
                mode,
                "-quiet",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for(
            &format!("openssl s_server to listen on port {port}"),
            Duration::from_secs(10),
            || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        );
        Server { child, port }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
