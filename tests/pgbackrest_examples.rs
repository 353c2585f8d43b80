//! The kit's pgBackRest files (patroni-conf/), checked with the real tools
//! that read them, like tests/examples.rs checks the others:
//!
//! - pgbackrest.conf (database node) and pgbackrest-repo.conf (repository
//!   host) run as they are with Debian's pgbackrest 2.45: its TLS server
//!   from each file, in two network namespaces that carry the kit's own
//!   addresses (198.51.100.40 and .21), with certificates from
//!   scripts/backup/make-certs.sh; the node reaches the repository through
//!   its TLS settings and is authorised by the repository's tls-server-auth,
//!   a certificate with another name is refused, and pgbackrest warns about
//!   no option of either file;
//! - patroni-pgbackrest.yml and patroni-pitr.yml merged into patroni.yml pass
//!   `patroni --validate-config` and hold the commands the lab runs;
//! - the backup service and its two timers pass `systemd-analyze verify`,
//!   and their calendars give a full backup on Sundays and incremental ones
//!   on the other days;
//! - make-certs.sh makes what pgBackRest's TLS mode needs.
//!
//! Substituted in the temporary copies: paths of this machine (repository,
//! TLS files, logs, locks) and, for the TLS servers, the configuration file
//! the remote side reads (repo1-host-config: /etc/pgbackrest/pgbackrest.conf
//! on a real repository host). The full story (archiving, backups across a
//! switchover, a replica and a new cluster restored) runs on the lab:
//! `scripts/lab.sh backup`, tests/e2e_scenarios.rs.

mod common;

use common::kit::{read, subst};

use common::netns::{self, Netns};
use common::{require_all, text, which};
use consul_double::{Options, Server};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const MAKE_CERTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/backup/make-certs.sh");

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

fn patroni_venv() -> PathBuf {
    PathBuf::from(
        std::env::var("PATRONI_VENV").unwrap_or_else(|_| "/opt/patroni-hook-test/venv".into()),
    )
}

fn have_postgres_user() -> bool {
    nix::unistd::User::from_name("postgres")
        .ok()
        .flatten()
        .is_some()
}

/// A temporary directory the postgres user owns.
fn postgres_tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    common::pg::open_path_for_postgres(dir.path());
    common::pg::chown_postgres(dir.path());
    dir
}

fn make_certs(dir: &Path, hosts: &[&str]) -> Output {
    run(Command::new("bash").arg(MAKE_CERTS).arg(dir).args(hosts))
}

/// `over` merged into `base`: mappings key by key, anything else replaced
/// (what scripts/lab/backup.py does with the same files).
fn merge(base: &mut serde_yaml::Value, over: &serde_yaml::Value) {
    match (base, over) {
        (serde_yaml::Value::Mapping(b), serde_yaml::Value::Mapping(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

fn yaml(name: &str) -> serde_yaml::Value {
    serde_yaml::from_str(&read(name)).unwrap_or_else(|e| panic!("patroni-conf/{name}: {e}"))
}

#[test]
fn make_certs_makes_a_ca_and_host_certificates() {
    if !require_all(&[("openssl", which("openssl").is_some())]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = make_certs(
        dir.path(),
        &["backup-01=198.51.100.40", "pg-patroni1=198.51.100.21"],
    );
    assert!(out.status.success(), "make-certs.sh: {}", text(&out));
    for name in ["backup-01", "pg-patroni1"] {
        let crt = dir.path().join(format!("{name}.crt"));
        let out = run(Command::new("openssl")
            .args(["verify", "-CAfile"])
            .arg(dir.path().join("ca.crt"))
            .arg(&crt));
        assert!(
            out.status.success(),
            "openssl verify {name}: {}",
            text(&out)
        );
        let out = run(Command::new("openssl")
            .args([
                "x509",
                "-noout",
                "-subject",
                "-ext",
                "subjectAltName,extendedKeyUsage",
                "-in",
            ])
            .arg(&crt));
        let shown = String::from_utf8_lossy(&out.stdout);
        assert!(shown.contains(&format!("CN = {name}")), "{shown}");
        assert!(shown.contains("TLS Web Server Authentication"), "{shown}");
        assert!(shown.contains("TLS Web Client Authentication"), "{shown}");
        let mode = std::fs::metadata(dir.path().join(format!("{name}.key")))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name}.key mode");
    }
    let shown = run(Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
        .arg(dir.path().join("backup-01.crt")));
    assert!(
        String::from_utf8_lossy(&shown.stdout).contains("IP Address:198.51.100.40"),
        "{}",
        text(&shown)
    );

    // A second run keeps what exists (the CA signs a host added later).
    let before = std::fs::read(dir.path().join("backup-01.crt")).unwrap();
    let out = make_certs(
        dir.path(),
        &["backup-01=198.51.100.40", "pg-patroni2=198.51.100.22"],
    );
    assert!(out.status.success(), "second run: {}", text(&out));
    assert_eq!(
        std::fs::read(dir.path().join("backup-01.crt")).unwrap(),
        before
    );
    assert!(dir.path().join("pg-patroni2.crt").exists());

    // Bad input: one line naming it, exit 2.
    let out = make_certs(dir.path(), &["pg-patroni1:198.51.100.21"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("'pg-patroni1:198.51.100.21' is not NAME=ADDRESS"),
        "{}",
        text(&out)
    );
}

/// A TLS server of pgbackrest, stopped (by pid) when dropped.
struct TlsServer(std::process::Child);

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `pgbackrest` as postgres in `ns`, to be given its arguments.
fn pgbackrest_cmd(ns: &Netns) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns.name()])
        .args([
            "setpriv",
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--",
        ])
        .arg("pgbackrest");
    c
}

fn pgbackrest_in(ns: &Netns, args: &[&str]) -> Output {
    run(pgbackrest_cmd(ns).args(args))
}

#[test]
fn pgbackrest_confs_run_as_tls_servers_and_clients() {
    if !netns::require_root_and_ip() {
        return;
    }
    if !require_all(&[
        (
            "pgbackrest (Debian package pgbackrest)",
            which("pgbackrest").is_some(),
        ),
        ("openssl", which("openssl").is_some()),
        ("setpriv (util-linux)", which("setpriv").is_some()),
        ("the postgres user", have_postgres_user()),
    ]) {
        return;
    }
    // Two hosts at the kit's own addresses, inside namespaces of this test.
    let repo = Netns::new("pgbr-repo");
    let node = Netns::new("pgbr-node");
    repo.ip(&[
        "link",
        "add",
        "eth1",
        "type",
        "veth",
        "peer",
        "name",
        "eth1",
        "netns",
        node.name(),
    ]);
    repo.ip(&["addr", "add", "198.51.100.40/24", "dev", "eth1"]);
    repo.ip(&["link", "set", "eth1", "up"]);
    node.ip(&["addr", "add", "198.51.100.21/24", "dev", "eth1"]);
    node.ip(&["link", "set", "eth1", "up"]);

    let dir = postgres_tempdir();
    let d = dir.path();
    let tls = d.join("certs");
    let out = make_certs(
        &tls,
        &[
            "backup-01=198.51.100.40",
            "pg-patroni1=198.51.100.21",
            "intruder=198.51.100.21",
        ],
    );
    assert!(out.status.success(), "make-certs.sh: {}", text(&out));
    // Each host's /etc/pgbackrest/tls/, as the comments in the files say.
    for (host, cert) in [
        ("repo", "backup-01"),
        ("node", "pg-patroni1"),
        ("intruder", "intruder"),
    ] {
        let t = d.join(host).join("tls");
        std::fs::create_dir_all(&t).unwrap();
        std::fs::copy(tls.join("ca.crt"), t.join("ca.crt")).unwrap();
        std::fs::copy(tls.join(format!("{cert}.crt")), t.join("host.crt")).unwrap();
        std::fs::copy(tls.join(format!("{cert}.key")), t.join("host.key")).unwrap();
    }
    std::fs::create_dir_all(d.join("repository")).unwrap();
    std::fs::create_dir_all(d.join("logs")).unwrap();
    let path = |p: &str| d.join(p).display().to_string();
    let repo_tls = format!("{}/", path("repo/tls"));
    let node_tls = format!("{}/", path("node/tls"));
    let repo_conf = d.join("repo/pgbackrest.conf");
    let node_conf = d.join("node/pgbackrest.conf");
    let repo_path = format!("repo1-path={}", path("repository"));
    let here = format!(
        "[global]\nlog-path={}\nlock-path={}\n",
        path("logs"),
        path("logs")
    );
    std::fs::write(
        &repo_conf,
        subst(
            &read("pgbackrest-repo.conf"),
            &[
                ("/etc/pgbackrest/tls/", &repo_tls),
                ("repo1-path=/var/lib/pgbackrest", &repo_path),
                ("[global]\n", &here),
            ],
        ),
    )
    .unwrap();
    let remote_config = format!("{here}repo1-host-config={}\n", repo_conf.display());
    std::fs::write(
        &node_conf,
        subst(
            &read("pgbackrest.conf"),
            &[
                ("/etc/pgbackrest/tls/", &node_tls),
                ("[global]\n", &remote_config),
            ],
        ),
    )
    .unwrap();
    let intruder_conf = d.join("intruder/pgbackrest.conf");
    std::fs::write(
        &intruder_conf,
        std::fs::read_to_string(&node_conf)
            .unwrap()
            .replace(&node_tls, &format!("{}/", path("intruder/tls"))),
    )
    .unwrap();
    common::pg::chown_postgres(d);
    for f in walk(d) {
        common::pg::chown_postgres(&f);
    }

    let server = |ns: &Netns, conf: &Path, out: &Path| {
        let out = std::fs::File::create(out).unwrap();
        TlsServer(
            pgbackrest_cmd(ns)
                .arg(format!("--config={}", conf.display()))
                .arg("server")
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .spawn()
                .expect("starting pgbackrest server"),
        )
    };
    let _repo_server = server(&repo, &repo_conf, &d.join("repo-server.out"));
    let _node_server = server(&node, &node_conf, &d.join("node-server.out"));
    let cfg = |c: &Path| format!("--config={}", c.display());
    for (what, from, conf, to, out) in [
        (
            "the repository host's",
            &node,
            &node_conf,
            "198.51.100.40",
            "repo-server.out",
        ),
        (
            "the node's",
            &repo,
            &repo_conf,
            "198.51.100.21",
            "node-server.out",
        ),
    ] {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let ping = pgbackrest_in(from, &[&cfg(conf), "server-ping", to]);
            if ping.status.success() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out after 20 s waiting for {what} TLS server (server-ping {to}): {}\nserver: {}",
                text(&ping),
                std::fs::read_to_string(d.join(out)).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    // The node reaches the repository with its TLS settings, and
    // pg-patroni1 is authorised for the stanza: the answer comes from the
    // (empty) repository, not from a refused connection.
    let out = pgbackrest_in(
        &node,
        &[
            &cfg(&node_conf),
            "--stanza=postgres",
            "--output=json",
            "info",
        ],
    );
    assert!(out.status.success(), "info from the node: {}", text(&out));
    let info: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    assert_eq!(info[0]["name"], "postgres", "{info}");
    assert_eq!(
        info[0]["status"]["message"], "missing stanza path",
        "{info}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("invalid option"), "{stderr}");

    // A certificate of the same CA with a name tls-server-auth does not list
    // is refused.
    let out = pgbackrest_in(
        &node,
        &[
            &cfg(&intruder_conf),
            "--stanza=postgres",
            "--output=json",
            "info",
        ],
    );
    let shown = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        shown.contains("access denied"),
        "the intruder was let in: {}",
        text(&out)
    );

    // Every option of both files is one pgbackrest 2.45 knows (it only warns
    // about the others); and that check can fail.
    for conf in [&repo_conf, &node_conf] {
        let out = pgbackrest_in(&repo, &[&cfg(conf), "--stanza=postgres", "help", "backup"]);
        assert!(
            out.status.success(),
            "help with {}: {}",
            conf.display(),
            text(&out)
        );
        assert!(
            !String::from_utf8_lossy(&out.stderr).contains("invalid option"),
            "{}: {}",
            conf.display(),
            text(&out)
        );
    }
    let broken = d.join("broken.conf");
    std::fs::write(
        &broken,
        std::fs::read_to_string(&node_conf)
            .unwrap()
            .replace("repo1-host-type", "repo1-hots-type"),
    )
    .unwrap();
    common::pg::chown_postgres(&broken);
    let out = pgbackrest_in(
        &repo,
        &[&cfg(&broken), "--stanza=postgres", "help", "backup"],
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("invalid option 'repo1-hots-type'"),
        "a misspelt option went unnoticed: {}",
        text(&out)
    );
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

#[test]
fn patroni_pgbackrest_settings_merge_and_validate() {
    let patroni = patroni_venv().join("bin/patroni");
    if !require_all(&[
        (
            "Patroni in the test virtualenv ($PATRONI_VENV/bin/patroni)",
            patroni.exists(),
        ),
        (
            "PostgreSQL 15 binaries (patroni.yml's bin_dir)",
            Path::new(common::pg::PG_BIN).join("postgres").exists(),
        ),
    ]) {
        return;
    }
    let mut node = yaml("patroni.yml");
    merge(&mut node, &yaml("patroni-pgbackrest.yml"));
    let scope = node["scope"].as_str().expect("scope").to_string();
    let stanza = format!("--stanza={scope}");
    let params = &node["bootstrap"]["dcs"]["postgresql"]["parameters"];
    assert_eq!(params["archive_mode"].as_str(), Some("on"));
    assert_eq!(
        params["archive_command"].as_str(),
        Some(format!("pgbackrest {stanza} archive-push \"%p\"").as_str())
    );
    // What patroni.yml had is still there.
    assert_eq!(params["wal_level"].as_str(), Some("replica"));
    assert!(node["postgresql"]["callbacks"]["on_role_change"].is_string());
    let pg = &node["postgresql"];
    assert_eq!(
        pg["recovery_conf"]["restore_command"].as_str(),
        Some(format!("pgbackrest {stanza} archive-get %f \"%p\"").as_str())
    );
    let methods: Vec<&str> = pg["create_replica_methods"]
        .as_sequence()
        .expect("create_replica_methods")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert_eq!(methods, ["pgbackrest", "basebackup"]);
    assert_eq!(
        pg["pgbackrest"]["command"].as_str(),
        Some(format!("pgbackrest {stanza} --delta restore").as_str())
    );
    assert_eq!(pg["pgbackrest"]["keep_data"].as_bool(), Some(true));
    assert_eq!(pg["pgbackrest"]["no_params"].as_bool(), Some(true));
    // One stanza per cluster, named after the scope, in both pgbackrest files.
    for conf in ["pgbackrest.conf", "pgbackrest-repo.conf"] {
        assert!(
            read(conf).contains(&format!("\n[{scope}]\n")),
            "{conf}: no [{scope}] stanza"
        );
    }
    // The repository host knows every node the examples name.
    let repo = read("pgbackrest-repo.conf");
    for addr in ["198.51.100.21", "198.51.100.22", "198.51.100.23"] {
        assert!(
            repo.contains(&addr.to_string()),
            "pgbackrest-repo.conf lacks {addr}"
        );
    }

    let mut pitr = node.clone();
    merge(&mut pitr, &yaml("patroni-pitr.yml"));
    assert_eq!(
        pitr["scope"].as_str(),
        Some(format!("{scope}-pitr").as_str())
    );
    assert_eq!(pitr["bootstrap"]["method"].as_str(), Some("pitr"));
    let m = &pitr["bootstrap"]["pitr"];
    let cmd = m["command"].as_str().expect("bootstrap.pitr.command");
    for part in [
        stanza.as_str(),
        "--type=time",
        "--target-action=promote",
        "restore",
    ] {
        assert!(
            cmd.split_whitespace().any(|w| w == part),
            "{cmd} lacks {part}"
        );
    }
    assert!(m["target"].is_string(), "bootstrap.pitr.target");
    assert_eq!(m["keep_existing_recovery_conf"].as_bool(), Some(true));
    assert_eq!(
        pitr["bootstrap"]["dcs"]["postgresql"]["parameters"]["archive_mode"].as_str(),
        Some("off"),
        "the new cluster must not archive into the old stanza"
    );
    assert_eq!(
        pitr["postgresql"]["recovery_conf"]["restore_command"].as_str(),
        Some("")
    );
    assert_eq!(
        pitr["postgresql"]["create_replica_methods"][0].as_str(),
        Some("basebackup")
    );

    // Both pass Patroni's own validation (consul.host: the double).
    let consul = Server::start(Options::default()).expect("starting the Consul double");
    let dir = tempfile::tempdir().unwrap();
    for (name, doc) in [("node.yml", &node), ("pitr.yml", &pitr)] {
        let mut doc = doc.clone();
        doc["consul"]["host"] = consul.addr().to_string().into();
        let file = dir.path().join(name);
        std::fs::write(&file, serde_yaml::to_string(&doc).unwrap()).unwrap();
        let out = run(Command::new(&patroni).arg("--validate-config").arg(&file));
        assert!(
            out.status.success(),
            "patroni --validate-config {name}: {}",
            text(&out)
        );
    }
}

#[test]
fn backup_units_pass_systemd_analyze_verify() {
    if !require_all(&[
        (
            "systemd-analyze (Debian package systemd)",
            which("systemd-analyze").is_some(),
        ),
        (
            "pgbackrest (the service's ExecStart)",
            Path::new("/usr/bin/pgbackrest").exists(),
        ),
    ]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let names = [
        "pgbackrest-backup@.service",
        "pgbackrest-backup-full.timer",
        "pgbackrest-backup-incr.timer",
    ];
    for name in names {
        std::fs::write(dir.path().join(name), read(name)).unwrap();
    }
    let verify = |units: &[&str]| {
        run(Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .args(units)
            .current_dir(dir.path())
            .env("SYSTEMD_LOG_LEVEL", "notice"))
    };
    // The instances the timers start, and the timers.
    let out = verify(&[
        "pgbackrest-backup@full.service",
        "pgbackrest-backup@incr.service",
        "pgbackrest-backup-full.timer",
        "pgbackrest-backup-incr.timer",
    ]);
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}",
        text(&out)
    );
    let service = read("pgbackrest-backup@.service");
    assert!(
        service.contains("\nExecStart=/usr/bin/pgbackrest --stanza=postgres --type=%i backup\n"),
        "{service}"
    );
    assert!(service.contains("\nUser=postgres\n"));
    for (timer, instance) in [
        ("pgbackrest-backup-full.timer", "full"),
        ("pgbackrest-backup-incr.timer", "incr"),
    ] {
        assert!(
            read(timer).contains(&format!("\nUnit=pgbackrest-backup@{instance}.service\n")),
            "{timer}"
        );
    }

    // Sundays full, Monday to Saturday incremental: the next 14 elapses.
    let days = |timer: &str| -> Vec<String> {
        let spec = read(timer)
            .lines()
            .find_map(|l| l.strip_prefix("OnCalendar=").map(str::to_string))
            .unwrap_or_else(|| panic!("{timer}: no OnCalendar="));
        let out = run(Command::new("systemd-analyze")
            .args(["calendar", "--iterations=14", &spec])
            .env("TZ", "UTC"));
        assert!(
            out.status.success(),
            "systemd-analyze calendar {spec}: {}",
            text(&out)
        );
        // "Next elapse: Sun 2026-12-06 01:00:00 UTC", "Iter. #2: Sun ...".
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::trim_start)
            .filter(|l| l.starts_with("Next elapse:") || l.starts_with("Iter. #"))
            .filter_map(|l| l.split_once(": "))
            .map(|(_, when)| {
                when.split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect()
    };
    let full = days("pgbackrest-backup-full.timer");
    assert_eq!(full.len(), 14, "{full:?}");
    assert!(full.iter().all(|d| d == "Sun"), "full backups: {full:?}");
    let incr = days("pgbackrest-backup-incr.timer");
    assert_eq!(incr.len(), 14, "{incr:?}");
    assert!(
        incr.iter().all(|d| d != "Sun"),
        "incremental backups: {incr:?}"
    );
    let mut distinct = incr.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 6, "incremental backups: {incr:?}");

    // The check can fail: a misspelt directive is reported.
    std::fs::write(
        dir.path().join("pgbackrest-backup@.service"),
        subst(&service, &[("Type=oneshot", "Type=oneshots")]),
    )
    .unwrap();
    let out = verify(&["pgbackrest-backup@full.service"]);
    assert!(!out.stderr.is_empty(), "a bad Type= passed: {}", text(&out));
}
