//! A real etcd 3.4 (Debian's /usr/bin/etcd) for one test: one member, or a
//! cluster of several, each with a data directory of its own in a temp dir,
//! either inside a network namespace the test made (the hook inside reaches
//! it on that namespace's loopback, on fixed ports) or on the host's
//! loopback on free ports. Optionally TLS (the PKI of tls.rs), mutual TLS
//! (`--client-cert-auth`) and auth with the kit's roles
//! (patroni-conf/etcd-rbac.sh, docs/operations.md "On etcd").
//!
//! etcd's v3 JSON gateway, which the hook and Patroni use, refuses every
//! request whose client certificate has a Common Name while
//! `--client-cert-auth` and auth are both on ("CommonName of client sending a
//! request against gateway will be ignored"), so the hook's users
//! authenticate with a password and present a certificate without a CN;
//! certificates with a CN are made too, for the tests that show the refusal.
//! The test itself talks to etcd with etcdctl (gRPC) as root. Members are
//! killed (by pid) when dropped; every wait is bounded.

use super::netns::Netns;
use super::real_consul::{in_ns, signal};
use super::tls::openssl;
use super::{require_all, wait_for_some};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The etcd binary the tests use (Debian package etcd-server).
pub const ETCD: &str = "/usr/bin/etcd";
/// Its client (Debian package etcd-client).
pub const ETCDCTL: &str = "/usr/bin/etcdctl";
/// The scope the kit's roles are made for.
pub const SCOPE: &str = "batman";

/// False (skipped, or failed under CI) when etcd 3.4 or openssl is missing.
pub fn require_etcd() -> bool {
    let version = Command::new(ETCD)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    require_all(&[
        (
            "etcd 3.4 at /usr/bin/etcd (Debian package etcd-server)",
            version.contains("etcd Version: 3.4."),
        ),
        (
            "etcdctl at /usr/bin/etcdctl (Debian package etcd-client)",
            Path::new(ETCDCTL).is_file(),
        ),
        (
            "the openssl command (Debian package openssl)",
            Command::new("openssl").arg("version").output().is_ok(),
        ),
    ])
}

/// How the etcd is set up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Opts {
    /// Clients talk HTTPS (server certificate of tls.rs's CA).
    pub tls: bool,
    /// `--client-cert-auth`: clients must present a certificate of the CA
    /// (implies `tls`).
    pub client_cert_auth: bool,
    /// Auth enabled, with the kit's roles and users (root, patroni,
    /// patroni-hook-db, patroni-hook-pgbouncer).
    pub auth: bool,
}

impl Opts {
    /// Plain HTTP, no auth.
    pub const PLAIN: Opts = Opts {
        tls: false,
        client_cert_auth: false,
        auth: false,
    };
    /// As operators run it: mutual TLS and auth with the kit's roles.
    pub const SECURE: Opts = Opts {
        tls: true,
        client_cert_auth: true,
        auth: true,
    };
    /// Mutual TLS, no auth: the certificate is the only credential.
    pub const MTLS: Opts = Opts {
        tls: true,
        client_cert_auth: true,
        auth: false,
    };
}

struct Member {
    child: Option<Child>,
    client_port: u16,
    /// etcd's arguments, to start it again on the same data.
    args: Vec<String>,
}

/// One etcd (one member or a cluster); members killed when dropped.
pub struct Etcd {
    members: Vec<Member>,
    ns: Option<String>,
    dir: tempfile::TempDir,
    /// How it was started.
    pub opts: Opts,
    root_password: String,
    /// Auth is enabled: etcdctl calls go as root.
    auth_on: AtomicBool,
}

/// The users auth is set up with.
pub const USERS: [&str; 3] = ["patroni", "patroni-hook-db", "patroni-hook-pgbouncer"];

impl Etcd {
    /// One member in `ns` (fixed ports 2379/2380) or on the host's loopback
    /// (free ports); waits until it has a leader (and auth is set up).
    pub fn start(ns: Option<&Netns>, opts: Opts) -> Etcd {
        Etcd::cluster(ns, 1, opts)
    }

    /// `n` members that elect a leader among themselves.
    pub fn cluster(ns: Option<&Netns>, n: usize, opts: Opts) -> Etcd {
        let opts = Opts {
            tls: opts.tls || opts.client_cert_auth,
            ..opts
        };
        let dir = tempfile::tempdir().expect("temp dir for etcd");
        if opts.tls {
            super::tls::make_pki(dir.path());
            // The hook's and root's client certificates: without a CN (the
            // gateway refuses a CN while auth is on), and with one.
            client_cert(dir.path(), "client", None);
            client_cert(dir.path(), "cn-db", Some("patroni-hook-db"));
            client_cert(dir.path(), "root", Some("root"));
            client_cert(dir.path(), "other-client", None);
            sign_with_other_ca(dir.path(), "other-client");
        }
        let port = |fixed: u16| {
            if ns.is_some() {
                fixed
            } else {
                super::free_port()
            }
        };
        let ports: Vec<(u16, u16)> = (0..n)
            .map(|i| {
                let step = 10_000 * i as u16;
                (port(2379 + step), port(2380 + step))
            })
            .collect();
        let initial: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("e{i}=http://127.0.0.1:{peer}"))
            .collect();
        let initial = initial.join(",");
        let scheme = if opts.tls { "https" } else { "http" };
        let mut members = Vec::new();
        for (i, (client, peer)) in ports.iter().enumerate() {
            let d = dir.path();
            let mut c = Command::new(ETCD);
            c.arg(format!("--name=e{i}"))
                .arg(format!("--data-dir={}/e{i}.data", d.display()))
                .arg(format!(
                    "--listen-client-urls={scheme}://127.0.0.1:{client}"
                ))
                .arg(format!(
                    "--advertise-client-urls={scheme}://127.0.0.1:{client}"
                ))
                .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
                .arg(format!(
                    "--initial-advertise-peer-urls=http://127.0.0.1:{peer}"
                ))
                .arg(format!("--initial-cluster={initial}"))
                .arg("--initial-cluster-state=new")
                .arg(format!(
                    "--initial-cluster-token=phk-{}",
                    std::process::id()
                ))
                .args(["--heartbeat-interval=50", "--election-timeout=500"])
                .args(["--logger=zap", "--log-outputs=stderr"]);
            if opts.tls {
                c.arg(format!("--cert-file={}/srv.pem", d.display()))
                    .arg(format!("--key-file={}/srv.key", d.display()));
            }
            if opts.client_cert_auth {
                // A trusted CA alone already makes etcd ask for client certificates.
                c.arg("--client-cert-auth")
                    .arg(format!("--trusted-ca-file={}/ca.pem", d.display()));
            }
            let args: Vec<String> = c
                .get_args()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            members.push(Member {
                child: Some(spawn(ns.map(|n| n.name()), d, i, &args)),
                client_port: *client,
                args,
            });
        }
        let etcd = Etcd {
            members,
            ns: ns.map(|n| n.name().to_string()),
            dir,
            opts,
            root_password: secret(),
            auth_on: AtomicBool::new(false),
        };
        etcd.wait_healthy();
        if opts.auth {
            etcd.set_up_auth();
        }
        etcd
    }

    /// Waits until every live member answers `endpoint health` (a leader).
    pub fn wait_healthy(&self) {
        wait_for_some(
            "etcd to elect a leader and answer endpoint health",
            Duration::from_secs(30),
            || {
                let o = self.ctl(&["endpoint", "health"]);
                o.status.success().then_some(())
            },
        );
    }

    fn set_up_auth(&self) {
        let s = SCOPE;
        let run = |args: &[&str]| self.ctl_ok(args);
        run(&["user", "add", &format!("root:{}", self.root_password)]);
        run(&["user", "grant-role", "root", "root"]);
        let prefix = format!("/service/{s}/");
        run(&["role", "add", "patroni"]);
        run(&[
            "role",
            "grant-permission",
            "patroni",
            "readwrite",
            &prefix,
            "--prefix",
        ]);
        for role in ["patroni-hook-db", "patroni-hook-pgbouncer"] {
            run(&["role", "add", role]);
            run(&[
                "role",
                "grant-permission",
                role,
                "read",
                &prefix,
                "--prefix",
            ]);
            run(&[
                "role",
                "grant-permission",
                role,
                "readwrite",
                &format!("{prefix}pause-request"),
            ]);
        }
        run(&[
            "role",
            "grant-permission",
            "patroni-hook-db",
            "readwrite",
            &format!("{prefix}vip-holder"),
        ]);
        run(&[
            "role",
            "grant-permission",
            "patroni-hook-pgbouncer",
            "readwrite",
            &format!("{prefix}pause-ack/pgb"),
        ]);
        for user in USERS {
            run(&["user", "add", &format!("{user}:{}", self.password(user))]);
            run(&["user", "grant-role", user, user]);
        }
        run(&["auth", "enable"]);
    }

    /// A user's password (deterministic per etcd, derived from root's).
    pub fn password(&self, user: &str) -> String {
        format!("{user}-{}", &self.root_password[..12])
    }

    /// Writes `user`'s password into `dir` (mode 0644, for a test hook run
    /// as postgres too) and returns the file.
    pub fn password_file(&self, dir: &Path, user: &str) -> PathBuf {
        let f = dir.join(format!("etcd-{user}.password"));
        std::fs::write(&f, format!("{}\n", self.password(user))).unwrap();
        f
    }

    /// `127.0.0.1:<port>` of member `i`.
    pub fn host(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.members[i].client_port)
    }

    /// Every member's `host:port`, comma separated (the hook's `hosts`).
    pub fn hosts(&self) -> String {
        (0..self.members.len())
            .map(|i| self.host(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `http` or `https`.
    pub fn protocol(&self) -> &'static str {
        if self.opts.tls {
            "https"
        } else {
            "http"
        }
    }

    /// `<protocol>://127.0.0.1:<port>` of member `i`.
    pub fn url(&self, i: usize) -> String {
        format!("{}://{}", self.protocol(), self.host(i))
    }

    /// The CA that signed the server's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A CA that signed nothing etcd presents.
    pub fn other_ca_file(&self) -> PathBuf {
        self.dir.path().join("other-ca.pem")
    }

    /// A client certificate and key: `client` (no CN), `cn-db` (CN
    /// patroni-hook-db), `root` (CN root), `other-client` (another CA).
    pub fn client_cert(&self, name: &str) -> (PathBuf, PathBuf) {
        (
            self.dir.path().join(format!("{name}.pem")),
            self.dir.path().join(format!("{name}.key")),
        )
    }

    /// The lines of the hook's `etcd3:` section (each indented by two
    /// spaces) for this etcd: `hosts`, `protocol`, and with TLS the CA
    /// (copied into `dir`), with mutual TLS the CN-less client certificate,
    /// with auth `user` and its password file. No `timeout`.
    pub fn hook_settings(&self, dir: &Path, user: &str) -> String {
        let mut s = format!(
            "  hosts: {}\n  protocol: {}\n",
            self.hosts(),
            self.protocol()
        );
        if self.opts.tls {
            let ca = dir.join("etcd-ca.pem");
            std::fs::copy(self.ca_file(), &ca).unwrap();
            s.push_str(&format!("  cacert: {}\n", ca.display()));
        }
        if self.opts.client_cert_auth {
            let (c, k) = self.client_cert("client");
            let (cert, key) = (dir.join("etcd-client.pem"), dir.join("etcd-client.key"));
            std::fs::copy(c, &cert).unwrap();
            std::fs::copy(k, &key).unwrap();
            use std::os::unix::fs::PermissionsExt;
            // Readable by the postgres user in the tests that run the hook as it.
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
            s.push_str(&format!(
                "  cert: {}\n  key: {}\n",
                cert.display(),
                key.display()
            ));
        }
        if self.opts.auth {
            s.push_str(&format!(
                "  username: {user}\n  password_file: {}\n",
                self.password_file(dir, user).display()
            ));
        }
        s
    }

    /// The live members' endpoints for etcdctl.
    fn endpoints(&self) -> String {
        (0..self.members.len())
            .filter(|i| self.members[*i].child.is_some())
            .map(|i| self.url(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// etcdctl as root (once auth is on) against `endpoints`.
    fn ctl_on(&self, endpoints: &str, args: &[&str], as_root: bool) -> Output {
        let mut c = in_ns(self.ns.as_deref(), ETCDCTL);
        c.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoints}"))
            .args(["--dial-timeout=2s", "--command-timeout=5s"]);
        if self.opts.tls {
            c.arg(format!("--cacert={}", self.ca_file().display()));
        }
        if self.opts.client_cert_auth {
            let (cert, key) = self.client_cert("client");
            c.arg(format!("--cert={}", cert.display()))
                .arg(format!("--key={}", key.display()));
        }
        if as_root && self.opts.auth {
            c.arg(format!("--user=root:{}", self.root_password));
        }
        c.args(args)
            .stdin(Stdio::null())
            .output()
            .expect("running etcdctl")
    }

    /// etcdctl as root against the live members.
    pub fn ctl(&self, args: &[&str]) -> Output {
        // Root exists only once auth is set up; before, no user is needed.
        let as_root = self.auth_on.load(Ordering::SeqCst);
        self.ctl_on(&self.endpoints(), args, as_root)
    }

    fn ctl_ok(&self, args: &[&str]) -> String {
        let o = self.ctl(args);
        assert!(o.status.success(), "etcdctl {args:?}: {}", super::text(&o));
        if args == ["auth", "enable"] {
            self.auth_on.store(true, Ordering::SeqCst);
        }
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Plain put as root; `key` as the hook's Consul spelling
    /// (`service/batman/leader`) or etcd's (`/service/...`).
    pub fn put(&self, key: &str, value: &[u8]) {
        let value = String::from_utf8(value.to_vec()).expect("UTF-8 value for etcdctl");
        self.ctl_ok(&["put", "--", &etcd_key(key), &value]);
    }

    /// Put attached to a new lease of `ttl` seconds (Patroni's leader key
    /// has one); returns the lease id (hex).
    pub fn put_with_lease(&self, key: &str, value: &[u8], ttl: u64) -> String {
        let out = self.ctl_ok(&["lease", "grant", &ttl.to_string()]);
        // "lease 694d7d5ce2d8a90b granted with TTL(2s)"
        let id = out
            .split_whitespace()
            .nth(1)
            .expect("a lease id")
            .to_string();
        let value = String::from_utf8(value.to_vec()).expect("UTF-8 value for etcdctl");
        self.ctl_ok(&[
            "put",
            &format!("--lease={id}"),
            "--",
            &etcd_key(key),
            &value,
        ]);
        id
    }

    /// Value and mod_revision of a key, read as root.
    pub fn get(&self, key: &str) -> Option<(Vec<u8>, u64)> {
        let out = self.ctl_ok(&["get", "-w", "json", "--", &etcd_key(key)]);
        let v: serde_json::Value = serde_json::from_str(&out).expect("etcdctl get JSON");
        let kv = v["kvs"].as_array()?.first()?.clone();
        use base64::Engine as _;
        let value = base64::engine::general_purpose::STANDARD
            .decode(kv["value"].as_str().unwrap_or_default())
            .expect("base64 value");
        Some((value, kv["mod_revision"].as_u64().expect("mod_revision")))
    }

    /// Delete as root.
    pub fn delete(&self, key: &str) {
        self.ctl_ok(&["del", "--", &etcd_key(key)]);
    }

    /// Kills member `i` (SIGKILL), as a crashed node.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills member `i` and starts it again on its data (its auth tokens
    /// die with it); waits until the cluster is healthy again.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        let child = spawn(
            self.ns.as_deref(),
            self.dir.path(),
            i,
            &self.members[i].args,
        );
        self.members[i].child = Some(child);
        self.wait_healthy();
    }

    /// Freezes member `i` (SIGSTOP): connections are accepted and never
    /// answered.
    pub fn freeze(&self, i: usize) {
        if let Some(c) = &self.members[i].child {
            signal(c, "STOP");
        }
    }

    /// Thaws a frozen member.
    pub fn thaw(&self, i: usize) {
        if let Some(c) = &self.members[i].child {
            signal(c, "CONT");
        }
    }

    /// Member `i`'s log so far (for assertion messages).
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("e{i}.log"))).unwrap_or_default()
    }

    /// Where the certificates and data live.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut c) = m.child.take() {
                signal(&c, "CONT");
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// Starts member `i` with `args`, its output appended to `e<i>.log`.
fn spawn(ns: Option<&str>, dir: &Path, i: usize, args: &[String]) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("e{i}.log")))
        .unwrap();
    in_ns(ns, ETCD)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("starting etcd")
}

/// `service/batman/leader` (the tests' Consul spelling) as etcd's
/// `/service/batman/leader`; a key with a leading `/` as it is.
pub fn etcd_key(key: &str) -> String {
    if key.starts_with('/') {
        key.to_string()
    } else {
        format!("/{key}")
    }
}

/// A client certificate `name.pem`/`name.key` in `dir` signed by `ca.pem`,
/// with Common Name `cn` or none.
fn client_cert(dir: &Path, name: &str, cn: Option<&str>) {
    let subj = match cn {
        Some(cn) => format!("/CN={cn}"),
        None => "/O=patroni-hook-tests".to_string(),
    };
    std::fs::write(
        dir.join(format!("{name}.ext")),
        "extendedKeyUsage=clientAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &subj,
        ],
    );
    sign(dir, name, "ca");
}

fn sign_with_other_ca(dir: &Path, name: &str) {
    sign(dir, name, "other-ca");
}

fn sign(dir: &Path, name: &str, ca: &str) {
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
        ],
    );
}

/// A random secret from the kernel.
fn secret() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .expect("a UUID from the kernel")
        .trim()
        .replace('-', "")
}
