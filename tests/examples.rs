//! Every example in patroni-conf/ and the Vagrant lab, checked with the real
//! tools that will read them, and run where they can run here:
//!
//! - the patroni-hook configs with `check-config`;
//! - patroni.yml with `patroni --validate-config` (Patroni 4 from the test
//!   virtualenv), and its callback command lines run exactly as Patroni runs
//!   them (`<command> <action> <role> <scope>`), as the postgres user with the
//!   binary's file capabilities, moving the VIP on `eth1` of a private network
//!   namespace;
//! - the reconcile unit's command line run the way the unit runs it (User=,
//!   AmbientCapabilities=, NoNewPrivileges= reproduced with setpriv);
//! - pgbouncer.ini by starting the real PgBouncer on it and asking it
//!   `SHOW CONFIG`; then the Consul watch of consul-client.json, run by the
//!   Consul double as Consul runs it, rewrites that ini and reloads PgBouncer;
//! - the systemd units with `systemd-analyze verify`; the sudoers rule with
//!   `visudo -c`; the Vagrantfile with `vagrant validate` and `ruby -c`;
//! - the Consul agent configs with `consul validate` (Consul 1.8.7, as the
//!   lab runs it), and the ACL policy files loaded with `consul acl policy
//!   create` into a dev agent with ACLs on, one of them put to the test;
//! - the etcd files against a real etcd 3.4 started from
//!   etcd-server.conf.example: etcd-rbac.sh's users each tried on every key,
//!   the JSON gateway's refusal of certificates with a CN, the watch unit's
//!   command line with the shipped EnvironmentFile (on a write, on a failing
//!   command, on a compaction), patroni-etcd3.yml with
//!   `patroni --validate-config`.
//!
//! What each test substitutes in its temporary copy (paths of this machine,
//! free ports, the double's address) is named where it happens; everything
//! else is the file as shipped.

mod common;

use common::kit::{read, subst, CONF};

use common::fake_consul::{patroni_api, FakeConsul};
use common::netns::{self, Netns};
use common::pg::{self, Pgbouncer, PgbouncerOptions};
use common::{free_port, require_all, text, wait_for, wait_for_some, which};
use consul_double::{Options, Server};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const REPO: &str = env!("CARGO_MANIFEST_DIR");
/// The command line every Patroni callback is configured with in patroni.yml.
const CALLBACK: &str = "/usr/local/bin/patroni-hook --config /etc/patroni-hook/config.yml";
const SCOPE: &str = "postgres";
const VIP: &str = "198.51.100.50";

fn have(prog: &str) -> bool {
    which(prog).is_some()
}

fn bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("patroni-hook")
}

fn patroni_venv() -> PathBuf {
    PathBuf::from(
        std::env::var("PATRONI_VENV").unwrap_or_else(|_| "/opt/patroni-hook-test/venv".into()),
    )
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

/// A temporary directory the postgres user can enter (tempfile makes 0700 ones).
fn open_tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    pg::open_path_for_postgres(dir.path());
    dir
}

fn hook(config: &Path, args: &[&str]) -> Output {
    run(Command::new(bin())
        .arg("--config")
        .arg(config)
        .args(args)
        .env("PATRONI_HOOK_LOG_STDERR", "1")
        .env_remove("CONSUL_HTTP_TOKEN"))
}

/// What the hook examples say of Consul: the local agent's HTTPS API, its CA
/// and the host's token file (consul-client.json serves HTTPS only).
const KIT_URL: &str = "url: https://127.0.0.1:8501";
const KIT_CA_FILE: &str = "ca_file: /etc/consul.d/tls/ca.pem";
const KIT_TOKEN_FILE: &str = "token_file: /etc/patroni-hook/consul.token";

/// A CA file and a token file in `dir` for the hook examples' consul section:
/// the lines that replace KIT_CA_FILE and KIT_TOKEN_FILE.
fn kit_consul_files(dir: &Path) -> (String, String) {
    let ca = dir.join("consul-ca.pem");
    let out = run(Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
        .args(["-subj", "/CN=consul-ca", "-keyout"])
        .arg(dir.join("consul-ca.key"))
        .arg("-out")
        .arg(&ca));
    assert!(out.status.success(), "openssl: {}", text(&out));
    let token = dir.join("consul.token");
    std::fs::write(&token, "00000000-0000-4000-8000-000000000000\n").unwrap();
    (
        format!("ca_file: {}", ca.display()),
        format!("token_file: {}", token.display()),
    )
}

/// The hook examples talking to a Consul double at `url` (plain HTTP, which
/// ignores tokens): the URL substituted and the CA line left out; the token
/// file is `token_line`'s.
fn kit_consul_on_double<'a>(url: &'a str, token_line: &'a str) -> [(&'a str, &'a str); 3] {
    [
        (KIT_URL, url),
        ("  ca_file: /etc/consul.d/tls/ca.pem\n", ""),
        (KIT_TOKEN_FILE, token_line),
    ]
}

fn member_json(host: &str, port: u16) -> Vec<u8> {
    format!(
        r#"{{"conn_url":"postgres://{host}:{port}/postgres","api_url":"http://{host}:8008/patroni","state":"running","role":"primary","version":"4.1.5"}}"#
    )
    .into_bytes()
}

#[test]
fn hook_configs_pass_check_config() {
    let dir = tempfile::tempdir().unwrap();
    let lock = dir.path().join("run/patroni-hook.lock");
    std::fs::create_dir_all(lock.parent().unwrap()).unwrap();
    // Substituted: lock_file (its directory exists here), and on the PgBouncer
    // host the ini path (the shipped pgbouncer.ini example, copied).
    let ini = dir.path().join("pgbouncer.ini");
    std::fs::write(&ini, read("pgbouncer.ini")).unwrap();
    let lock_line = format!("lock_file: {}", lock.display());
    let ini_line = format!("ini: {}", ini.display());
    // The Consul agent's CA and this host's token, which the database node's
    // and the PgBouncer host's examples name (HTTPS, ACLs on).
    let (ca_line, token_line) = kit_consul_files(dir.path());
    let consul = || {
        vec![
            (KIT_CA_FILE, ca_line.as_str()),
            (KIT_TOKEN_FILE, token_line.as_str()),
        ]
    };
    // The etcd examples' CA, the host's client certificate (no CN: the JSON
    // gateway refuses one with a CN) and its password file.
    etcd_pki(dir.path());
    let pem = |name: &str| dir.path().join(name).display().to_string();
    let password = dir.path().join("etcd-password");
    std::fs::write(&password, "s3cret\n").unwrap();
    let etcd_lines = [
        format!("cacert: {}", pem("ca.pem")),
        format!("cert: {}", pem("nocn.pem")),
        format!("key: {}", pem("nocn-key.pem")),
        format!("password_file: {}", password.display()),
    ];
    let etcd = || {
        vec![
            (
                "cacert: /etc/patroni-hook/etcd-ca.pem",
                etcd_lines[0].as_str(),
            ),
            (
                "cert: /etc/patroni-hook/etcd-client.pem",
                etcd_lines[1].as_str(),
            ),
            (
                "key: /etc/patroni-hook/etcd-client-key.pem",
                etcd_lines[2].as_str(),
            ),
            (
                "password_file: /etc/patroni-hook/etcd-password",
                etcd_lines[3].as_str(),
            ),
        ]
    };
    for (name, extra) in [
        ("config.yml", vec![]),
        (
            "patroni-hook-db.yml",
            // eth1 is the lab's interface; this machine need not have one,
            // and check-config refuses an interface the host lacks.
            [vec![("interface: eth1", "interface: lo")], consul()].concat(),
        ),
        (
            "patroni-hook-pgbouncer.yml",
            [
                vec![("ini: /etc/pgbouncer/pgbouncer.ini", ini_line.as_str())],
                consul(),
            ]
            .concat(),
        ),
        (
            "patroni-hook-db-etcd3.yml",
            [vec![("interface: eth1", "interface: lo")], etcd()].concat(),
        ),
        (
            "patroni-hook-pgbouncer-etcd3.yml",
            [
                vec![("ini: /etc/pgbouncer/pgbouncer.ini", ini_line.as_str())],
                etcd(),
            ]
            .concat(),
        ),
    ] {
        let mut pairs = vec![(
            "lock_file: /run/patroni-hook/patroni-hook.lock",
            lock_line.as_str(),
        )];
        pairs.extend(extra);
        let cfg = dir.path().join(name);
        std::fs::write(&cfg, subst(&read(name), &pairs)).unwrap();
        let out = hook(&cfg, &["check-config"]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        if name == "config.yml" {
            // The skeleton is a start, not a configuration: check-config
            // says what reconcile (the timer) would refuse in it.
            assert_eq!(out.status.code(), Some(2), "{name}: {}", text(&out));
            assert!(!stdout.contains("configuration OK"), "{name}: {stdout}");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.contains("nothing to reconcile"), "{stderr}");
            continue;
        }
        assert_eq!(out.status.code(), Some(0), "{name}: {}", text(&out));
        assert!(stdout.contains("configuration OK"), "{name}: {stdout}");
        assert!(!stdout.contains("warning:"), "{name}: {stdout}");
    }
}

/// Each PgBouncer host confirms a pause under its own name
/// (`pause-ack/<name>`): a name in the example would be copied to every
/// host, and `before_stop.confirmations: 2` would never be met.
#[test]
fn pgbouncer_host_config_leaves_the_name_to_the_host_name() {
    let y: serde_yaml::Value = serde_yaml::from_str(&read("patroni-hook-pgbouncer.yml")).unwrap();
    assert!(
        y.get("name").is_none(),
        "patroni-hook-pgbouncer.yml sets name: {:?}",
        y.get("name")
    );
}

#[test]
fn patroni_yaml_validates_with_patroni_and_has_the_callbacks() {
    let patroni = patroni_venv().join("bin/patroni");
    if !require_all(&[
        (
            "Patroni in the test virtualenv ($PATRONI_VENV/bin/patroni)",
            patroni.exists(),
        ),
        (
            "PostgreSQL 15 binaries (patroni.yml's bin_dir)",
            Path::new(pg::PG_BIN).join("postgres").exists(),
        ),
    ]) {
        return;
    }
    let yaml = read("patroni.yml");
    let doc: serde_yaml::Value = serde_yaml::from_str(&yaml).unwrap();
    assert_eq!(
        doc["consul"]["register_service"],
        serde_yaml::Value::Bool(true)
    );
    assert_eq!(doc["scope"].as_str(), Some(SCOPE));
    assert_eq!(doc["namespace"].as_str(), Some("/service/"));
    for cb in [
        "on_start",
        "on_stop",
        "on_role_change",
        "on_restart",
        "on_reload",
    ] {
        assert_eq!(
            doc["postgresql"]["callbacks"][cb].as_str(),
            Some(CALLBACK),
            "postgresql.callbacks.{cb}"
        );
    }
    // Synchronous, with no arguments from Patroni: the command names itself.
    assert_eq!(
        doc["postgresql"]["before_stop"].as_str(),
        Some(format!("{CALLBACK} before-stop").as_str()),
        "postgresql.before_stop"
    );
    // Validation connects to consul.host: substituted with the double's address.
    let consul = Server::start(Options::default()).expect("starting the Consul double");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("patroni.yml");
    let host = format!("host: {}", consul.addr());
    let on_double = [
        ("host: 127.0.0.1:8501", host.as_str()),
        ("scheme: https", "scheme: http"),
    ];
    std::fs::write(&file, subst(&yaml, &on_double)).unwrap();
    let out = run(Command::new(&patroni).arg("--validate-config").arg(&file));
    assert!(
        out.status.success(),
        "patroni --validate-config: {}",
        text(&out)
    );

    // And it does fail on a broken file, so the check above means something.
    let broken = dir.path().join("broken.yml");
    std::fs::write(
        &broken,
        subst(
            &yaml,
            &[on_double.as_slice(), &[("ttl: 30", "ttl: soon")]].concat(),
        ),
    )
    .unwrap();
    let out = run(Command::new(&patroni).arg("--validate-config").arg(&broken));
    assert!(!out.status.success(), "a broken ttl passed: {}", text(&out));
}

/// A node namespace with `eth1`, the double listening inside it, and a copy
/// of the binary with the file capabilities scripts/install.sh sets.
struct DbNode {
    ns: Netns,
    consul: Server,
    /// This node's Patroni REST API (GET /patroni: a running primary), which
    /// a reconcile asks before it adds the VIP.
    _api: FakeConsul,
    /// Holds the config, the lock directory and the binary until the test ends.
    _dir: tempfile::TempDir,
    config: PathBuf,
    capbin: PathBuf,
}

impl DbNode {
    fn new() -> Option<DbNode> {
        if !netns::require_root_and_ip() {
            return None;
        }
        if !require_all(&[
            ("setcap (libcap2-bin)", have("setcap")),
            ("setpriv (util-linux)", have("setpriv")),
            ("runuser (util-linux)", have("runuser")),
            (
                "the postgres user",
                nix::unistd::User::from_name("postgres")
                    .ok()
                    .flatten()
                    .is_some(),
            ),
        ]) {
            return None;
        }
        let ns = Netns::new("db");
        ns.ip(&[
            "link", "add", "eth1", "type", "veth", "peer", "name", "eth1p",
        ]);
        ns.ip(&["link", "set", "eth1", "up"]);
        ns.ip(&["link", "set", "eth1p", "up"]);
        ns.ip(&["addr", "add", "198.51.100.21/24", "dev", "eth1"]);
        let listener = ns.run(|| std::net::TcpListener::bind("127.0.0.1:0").expect("bind in ns"));
        let consul = Server::start_on(listener, Options::default()).expect("start the double");
        let api_listener = ns.run(|| {
            std::net::TcpListener::bind("198.51.100.21:8008").expect("bind the REST API in ns")
        });
        let api = patroni_api(
            api_listener,
            std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true)),
        );
        let dir = open_tempdir();
        let run_dir = pg::postgres_dir(dir.path(), "run");
        let capbin = dir.path().join("patroni-hook");
        std::fs::copy(bin(), &capbin).unwrap();
        let out = run(Command::new("setcap")
            .arg("cap_net_admin,cap_net_raw+ep")
            .arg(&capbin));
        assert!(out.status.success(), "setcap: {}", text(&out));
        // Substituted: the agent's address (the double) and the lock directory.
        let config = dir.path().join("config.yml");
        let url = format!("url: {}", consul.url());
        let lock = format!("lock_file: {}/patroni-hook.lock", run_dir.display());
        let (_, token) = kit_consul_files(dir.path());
        std::fs::write(
            &config,
            subst(
                &read("patroni-hook-db.yml"),
                &[
                    kit_consul_on_double(&url, &token).as_slice(),
                    &[("lock_file: /run/patroni-hook/patroni-hook.lock", &lock)],
                ]
                .concat(),
            ),
        )
        .unwrap();
        Some(DbNode {
            ns,
            consul,
            _api: api,
            _dir: dir,
            config,
            capbin,
        })
    }

    /// A configured command line with the installed paths replaced by this
    /// test's binary and config.
    fn argv(&self, configured: &str) -> Vec<String> {
        configured
            .split_whitespace()
            .map(|a| match a {
                "/usr/local/bin/patroni-hook" => self.capbin.display().to_string(),
                "/etc/patroni-hook/config.yml" => self.config.display().to_string(),
                other => other.to_string(),
            })
            .collect()
    }

    /// Runs `prefix... argv...` inside the namespace.
    fn exec(&self, prefix: &[&str], argv: &[String]) -> Output {
        run(Command::new("ip")
            .args(["netns", "exec", self.ns.name()])
            .args(prefix)
            .args(argv)
            .env("PATRONI_HOOK_LOG_STDERR", "1"))
    }

    /// As Patroni runs a callback: shlex.split(command) + [action, role, scope],
    /// as the postgres user (patroni.service's User=).
    fn patroni_callback(&self, action: &str, role: &str) -> Output {
        let mut argv = self.argv(CALLBACK);
        argv.extend([action.to_string(), role.to_string(), SCOPE.to_string()]);
        self.exec(&["runuser", "-u", "postgres", "--"], &argv)
    }

    fn has_vip(&self) -> bool {
        !self.ns.addrs("eth1", VIP).is_empty()
    }
}

/// `User=`, `AmbientCapabilities=`, `CapabilityBoundingSet=` and
/// `NoNewPrivileges=` of the shipped unit, as setpriv arguments.
fn unit_setpriv(unit: &str) -> Vec<String> {
    let get = |key: &str| {
        unit.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("{key}= missing in the unit"))
            .trim()
            .to_string()
    };
    let user = get("User");
    let caps: Vec<String> = get("AmbientCapabilities")
        .split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    let bounding: Vec<String> = get("CapabilityBoundingSet")
        .split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    assert_eq!(get("NoNewPrivileges"), "yes");
    let mut v = vec![
        "setpriv".to_string(),
        format!("--reuid={user}"),
        format!("--regid={}", get("Group")),
        "--init-groups".into(),
        format!("--bounding-set=-all,{}", bounding.join(",")),
        "--no-new-privs".into(),
    ];
    v.push(format!("--inh-caps={}", caps.join(",")));
    v.push(format!("--ambient-caps={}", caps.join(",")));
    v.push("--".into());
    v
}

#[test]
fn patroni_callbacks_and_the_reconcile_unit_move_the_vip() {
    let Some(node) = DbNode::new() else {
        return;
    };
    node.consul
        .kv_put(&format!("service/{SCOPE}/leader"), b"pg-patroni1");
    node.consul.kv_put(
        &format!("service/{SCOPE}/members/pg-patroni1"),
        &member_json("198.51.100.21", 5432),
    );

    // Patroni promotes this node: the callback adds the VIP and records it.
    let out = node.patroni_callback("on_start", "primary");
    assert_eq!(
        out.status.code(),
        Some(0),
        "on_start primary: {}",
        text(&out)
    );
    assert!(node.has_vip(), "VIP not on eth1 after on_start primary");
    let holder = node
        .consul
        .kv_get(&format!("service/{SCOPE}/vip-holder"))
        .expect("vip-holder written");
    let holder: serde_json::Value = serde_json::from_slice(&holder.value).unwrap();
    assert_eq!(holder["member"], "pg-patroni1");

    let out = node.patroni_callback("on_role_change", "replica");
    assert_eq!(
        out.status.code(),
        Some(0),
        "on_role_change replica: {}",
        text(&out)
    );
    assert!(!node.has_vip(), "VIP still on eth1 after demotion");

    // The timer's unit, run the way systemd runs it.
    let unit = read("patroni-hook-reconcile.service");
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart=");
    let argv = node.argv(exec);

    // NoNewPrivileges=yes: file capabilities are not to be relied on (prctl(2)
    // says no_new_privs renders them non-functional; some kernels still grant
    // them), so the unit grants CAP_NET_ADMIN and CAP_NET_RAW as ambient ones.
    // Run with the plain binary (no file capabilities): the unit alone suffices.
    let argv: Vec<String> = argv
        .into_iter()
        .map(|a| {
            if Path::new(&a) == node.capbin {
                bin().display().to_string()
            } else {
                a
            }
        })
        .collect();
    let prefix = unit_setpriv(&unit);
    let prefix: Vec<&str> = prefix.iter().map(String::as_str).collect();
    let out = node.exec(&prefix, &argv);
    assert_eq!(
        out.status.code(),
        Some(0),
        "unit's reconcile: {}",
        text(&out)
    );
    assert!(
        node.has_vip(),
        "reconcile did not add the VIP for the leader"
    );

    // Patroni was killed and another node took the leader key: the timer removes it.
    node.consul
        .kv_put(&format!("service/{SCOPE}/leader"), b"pg-patroni2");
    let out = node.exec(&prefix, &argv);
    assert_eq!(
        out.status.code(),
        Some(0),
        "reconcile, other leader: {}",
        text(&out)
    );
    assert!(!node.has_vip(), "VIP kept while another node leads");

    let out = node.patroni_callback("on_stop", "replica");
    assert_eq!(out.status.code(), Some(0), "on_stop: {}", text(&out));
}

const ADMIN_PASSWORD: &str = "test-secret";

/// A PgBouncer started on the example pgbouncer.ini.
fn start_example_pgbouncer(dir: &Path) -> Pgbouncer {
    let options = PgbouncerOptions {
        password: ADMIN_PASSWORD,
        ..PgbouncerOptions::default()
    };
    Pgbouncer::start_with(dir, options, |f| {
        // Substituted: where it listens (loopback, a free port), and the paths
        // of this machine. The [databases] entry stays as shipped: nothing
        // connects to it before the watch points it at loopback.
        let listen_port = format!("listen_port = {}", f.port);
        let socket = format!("unix_socket_dir = {}", f.dir.display());
        let logfile = format!("logfile = {}", f.log.display());
        let pid = format!("pidfile = {}", f.pidfile.display());
        let auth_file = format!("auth_file = {}", f.auth_file.display());
        let hba_path = f.dir.join("pgbouncer-hba.conf");
        std::fs::write(&hba_path, read("pgbouncer-hba.conf")).unwrap();
        pg::chown_postgres(&hba_path);
        let hba = format!("auth_hba_file = {}", hba_path.display());
        subst(
            &read("pgbouncer.ini"),
            &[
                ("listen_addr = *", "listen_addr = 127.0.0.1"),
                ("listen_port = 6432", &listen_port),
                ("unix_socket_dir = /run/postgresql", &socket),
                ("logfile = /var/log/postgresql/pgbouncer.log", &logfile),
                ("pidfile = /run/postgresql/pgbouncer.pid", &pid),
                ("auth_file = /etc/pgbouncer/userlist.txt", &auth_file),
                ("auth_hba_file = /etc/pgbouncer/pgbouncer-hba.conf", &hba),
            ],
        )
    })
}

/// The value of `key` in PgBouncer's `SHOW CONFIG`.
fn setting(pgb: &Pgbouncer, key: &str) -> String {
    let rows = pgb.admin("SHOW CONFIG");
    rows.lines()
        .find_map(|l| {
            let mut f = l.split('|');
            (f.next() == Some(key)).then(|| f.next().unwrap_or("").to_string())
        })
        .unwrap_or_else(|| panic!("{key} not in SHOW CONFIG: {rows}"))
}

/// The watches of consul-client.json: the keys, and the one handler they
/// all run.
fn watches_of(client: &serde_json::Value) -> (Vec<String>, Vec<String>) {
    let watches = client["watches"].as_array().expect("watches: a list");
    let mut keys = Vec::new();
    let mut handler: Option<Vec<String>> = None;
    for w in watches {
        assert_eq!(w["type"], "key");
        assert_eq!(w["handler_type"], "script");
        let args: Vec<String> = w["args"]
            .as_array()
            .expect("args: a list")
            .iter()
            .map(|a| a.as_str().expect("args are strings").to_string())
            .collect();
        if let Some(h) = &handler {
            assert_eq!(h, &args, "every watch runs the same handler");
        }
        handler = Some(args);
        keys.push(w["key"].as_str().expect("key").to_string());
    }
    (keys, handler.expect("at least one watch"))
}

#[test]
fn consul_configs_have_the_expected_shape() {
    let client: serde_json::Value = serde_json::from_str(&read("consul-client.json")).unwrap();
    let server: serde_json::Value = serde_json::from_str(&read("consul-server.json")).unwrap();
    assert_eq!(client["server"], false);
    assert_eq!(server["server"], true);
    assert_eq!(server["bootstrap_expect"], 3);
    let servers = serde_json::json!(["198.51.100.11", "198.51.100.12", "198.51.100.13"]);
    assert_eq!(client["retry_join"], servers);
    assert_eq!(server["retry_join"], servers);
    assert_eq!(client["client_addr"], "127.0.0.1");
    // ACLs on, deny by default; the API on HTTPS only, which the hook and
    // Patroni examples call with the CA these files name.
    for agent in [&client, &server] {
        assert_eq!(agent["acl"]["enabled"], true);
        assert_eq!(agent["acl"]["default_policy"], "deny");
        assert_eq!(agent["ports"]["http"], -1);
        assert_eq!(agent["ports"]["https"], 8501);
        assert_eq!(agent["ca_file"], "/etc/consul.d/tls/ca.pem");
    }
    assert_eq!(server["performance"]["raft_multiplier"], 1);
    assert!(read("patroni-hook-db.yml").contains(KIT_URL));
    assert!(read("patroni-hook-pgbouncer.yml").contains(KIT_URL));
    assert!(read("patroni.yml").contains("cacert: /etc/consul.d/tls/ca.pem"));
    // Every watch reads with the host's hook token: the agent's default
    // (anonymous) token may read nothing.
    for w in client["watches"].as_array().expect("watches") {
        assert!(w["token"].is_string(), "a watch without a token: {w}");
    }
    let (keys, args) = watches_of(&client);
    // The leader (a new primary), the failover key (a switchover starts) and
    // the old primary's pause request.
    assert_eq!(
        keys,
        ["leader", "failover", "pause-request"].map(|k| format!("service/{SCOPE}/{k}"))
    );
    assert_eq!(
        args,
        [
            "/usr/bin/sudo",
            "-n",
            "-u",
            "postgres",
            "/usr/local/bin/patroni-hook",
            "--config",
            "/etc/patroni-hook/config.yml",
            "reconcile"
        ]
    );
    // The sudoers rule allows exactly this command line, as postgres, for consul.
    let sudoers = read("patroni-hook.sudoers");
    let rule = sudoers
        .lines()
        .find(|l| !l.starts_with('#') && !l.trim().is_empty())
        .expect("a rule");
    assert_eq!(
        rule,
        format!("consul ALL=(postgres) NOPASSWD: {}", args[4..].join(" "))
    );
}

#[test]
fn sudoers_rule_passes_visudo() {
    if !require_all(&[("visudo (Debian package sudo)", have("visudo"))]) {
        return;
    }
    let out = run(Command::new(which("visudo").unwrap())
        .args(["-c", "-f"])
        .arg(Path::new(CONF).join("patroni-hook.sudoers")));
    assert!(out.status.success(), "visudo: {}", text(&out));
}

#[test]
fn pgbouncer_example_runs_and_the_consul_watch_repoints_it() {
    if !pg::require_pg_and_pgbouncer() {
        return;
    }
    let dir = open_tempdir();
    let pgb = start_example_pgbouncer(dir.path());
    assert_eq!(setting(&pgb, "server_login_retry"), "0.1");
    assert_eq!(setting(&pgb, "auth_type"), "hba");
    assert_eq!(setting(&pgb, "pool_mode"), "transaction");
    assert_eq!(setting(&pgb, "server_connect_timeout"), "3");

    // The PgBouncer host's patroni-hook config, with this machine's paths and
    // the double's address substituted.
    let run_dir = pg::postgres_dir(dir.path(), "run");
    let (_, token) = kit_consul_files(dir.path());
    let write_config = |consul_url: &str| {
        let cfg = dir.path().join("config.yml");
        let url = format!("url: {consul_url}");
        let lock = format!("lock_file: {}/patroni-hook.lock", run_dir.display());
        let ini = format!("ini: {}", pgb.ini.display());
        let pid = format!("pidfile: {}", pgb.pidfile.display());
        let socket = format!("socket_dir: {}", pgb.ini.parent().unwrap().display());
        let port = format!("port: {}", pgb.port);
        std::fs::write(
            &cfg,
            subst(
                &read("patroni-hook-pgbouncer.yml"),
                &[
                    kit_consul_on_double(&url, &token).as_slice(),
                    &[
                        ("lock_file: /run/patroni-hook/patroni-hook.lock", &lock),
                        ("ini: /etc/pgbouncer/pgbouncer.ini", &ini),
                        ("pidfile: /run/postgresql/pgbouncer.pid", &pid),
                        ("socket_dir: /run/postgresql", &socket),
                        ("port: 6432", &port),
                    ],
                ]
                .concat(),
            ),
        )
        .unwrap();
        pg::chown_postgres(&cfg);
        cfg
    };

    // The watch exactly as consul-client.json declares it, run by the double
    // the way a Consul agent runs it: sudo -n -u postgres becomes runuser -u
    // postgres (no sudo needed when the agent is root), installed paths
    // become this test's binary and config.
    let client: serde_json::Value = serde_json::from_str(&read("consul-client.json")).unwrap();
    let (keys, args) = watches_of(&client);
    assert_eq!(args[..4], ["/usr/bin/sudo", "-n", "-u", "postgres"]);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let cfg = write_config(&url);
    let mut handler = vec![
        "runuser".to_string(),
        "-u".into(),
        "postgres".into(),
        "--".into(),
    ];
    handler.extend(args[4..].iter().map(|a| match a.as_str() {
        "/usr/local/bin/patroni-hook" => bin().display().to_string(),
        "/etc/patroni-hook/config.yml" => cfg.display().to_string(),
        other => other.to_string(),
    }));
    let consul = Server::start_on(
        listener,
        Options {
            watches: keys.iter().map(|k| (k.clone(), handler.clone())).collect(),
            ..Options::default()
        },
    )
    .expect("starting the Consul double");

    // check-config on the example pair: no server_login_retry warning, the
    // managed entry exists.
    let out = hook(&cfg, &["check-config"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("warning"), "check-config warned: {stdout}");

    // A new leader: the watch fires, reconcile rewrites appdb and reloads PgBouncer.
    let backend = free_port();
    consul.kv_put(
        &format!("service/{SCOPE}/members/pg-patroni2"),
        &member_json("127.0.0.1", backend),
    );
    consul.kv_put(&format!("service/{SCOPE}/leader"), b"pg-patroni2");
    let want = format!("appdb = host=127.0.0.1 port={backend} dbname=appdb");
    wait_for(
        "the watch's reconcile to point appdb at the new leader",
        Duration::from_secs(20),
        || {
            std::fs::read_to_string(&pgb.ini)
                .unwrap_or_default()
                .contains(&want)
        },
    );
    wait_for(
        "PgBouncer to reload and serve appdb from the new leader",
        Duration::from_secs(20),
        || {
            pgb.admin("SHOW DATABASES")
                .lines()
                .any(|l| l.starts_with(&format!("appdb|127.0.0.1|{backend}|")))
        },
    );
    // Everything but host= and port= of appdb is byte for byte the example.
    let shipped = read("pgbouncer.ini");
    let now = std::fs::read_to_string(&pgb.ini).unwrap();
    assert_eq!(
        now.lines().count(),
        shipped.lines().count(),
        "line count changed"
    );
    // Reloaded on the admin console, as postgres by peer authentication on
    // the Unix socket (pgbouncer-hba.conf), not by a signal.
    assert!(
        pgb.log_text().contains("RELOAD command issued"),
        "{}",
        pgb.log_text()
    );
    consul.stop();
}

/// The alert rules pass promtool's check, and fire (and stay quiet) as their
/// unit tests in tests/fixtures/prometheus-alerts.test.yml say.
#[test]
fn alert_rules_pass_promtool_and_their_unit_tests() {
    if !require_all(&[("promtool (Debian package prometheus)", have("promtool"))]) {
        return;
    }
    let rules = Path::new(CONF).join("prometheus-alerts.yml");
    let out = run(Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(&rules));
    assert!(out.status.success(), "promtool check rules: {}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("SUCCESS: 6 rules found"),
        "{}",
        text(&out)
    );
    let dir = tempfile::tempdir().unwrap();
    let tests = dir.path().join("alerts.test.yml");
    let fixture = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/prometheus-alerts.test.yml"),
    )
    .unwrap();
    std::fs::write(
        &tests,
        fixture.replace("RULES", &rules.display().to_string()),
    )
    .unwrap();
    let out = run(Command::new("promtool").args(["test", "rules"]).arg(&tests));
    assert!(out.status.success(), "promtool test rules: {}", text(&out));
}

#[test]
fn systemd_units_pass_systemd_analyze_verify() {
    let patroni = patroni_venv().join("bin/patroni");
    if !require_all(&[
        (
            "systemd-analyze (Debian package systemd)",
            have("systemd-analyze"),
        ),
        (
            "Patroni in the test virtualenv (patroni.service's ExecStart)",
            patroni.exists(),
        ),
        (
            "etcdctl at /usr/bin/etcdctl (the etcd watch unit's ExecStart)",
            Path::new(ETCDCTL).exists(),
        ),
    ]) {
        return;
    }
    // verify checks that ExecStart= is executable: substituted with this
    // build's binary and the test virtualenv's Patroni; the etcd watch
    // unit's is etcdctl, installed where it names it (its ExecStartPost's
    // patroni-hook is substituted all the same). --man=no: the man
    // pages are not installed here (tests/install.rs verifies with them).
    let dir = tempfile::tempdir().unwrap();
    let hook_bin = bin().display().to_string();
    let patroni_bin = patroni.display().to_string();
    let mut files = Vec::new();
    for (name, from, to) in [
        (
            "patroni-hook-reconcile.service",
            "/usr/local/bin/patroni-hook",
            hook_bin.as_str(),
        ),
        ("patroni-hook-reconcile.timer", "", ""),
        (
            "patroni.service",
            "/opt/patroni/venv/bin/patroni",
            patroni_bin.as_str(),
        ),
        (
            "patroni-hook-etcd-watch@.service",
            "/usr/bin/patroni-hook",
            hook_bin.as_str(),
        ),
    ] {
        let body = read(name);
        let body = if from.is_empty() {
            body
        } else {
            subst(&body, &[(from, to)])
        };
        let p = dir.path().join(name);
        std::fs::write(&p, body).unwrap();
        files.push(p);
    }
    let out = run(Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&files)
        .env("SYSTEMD_LOG_LEVEL", "notice"));
    // verify exits 0 on a line it cannot parse and only says so on stderr.
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}",
        text(&out)
    );

    // The check can fail: a misspelled directive is reported.
    let bad = dir.path().join("bad.service");
    std::fs::write(
        &bad,
        subst(
            &std::fs::read_to_string(&files[0]).unwrap(),
            &[("Type=oneshot", "Type=oneshots")],
        ),
    )
    .unwrap();
    let out = run(Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&bad));
    assert!(!out.stderr.is_empty(), "a bad Type= passed: {}", text(&out));

    // And on the template unit: an ExecStart= program that is not there.
    let bad_dir = dir.path().join("bad");
    std::fs::create_dir(&bad_dir).unwrap();
    let bad = bad_dir.join("patroni-hook-etcd-watch@.service");
    std::fs::write(
        &bad,
        subst(
            &std::fs::read_to_string(&files[3]).unwrap(),
            &[(
                "ExecStart=/usr/bin/etcdctl",
                "ExecStart=/usr/bin/etcdctl-gone",
            )],
        ),
    )
    .unwrap();
    let out = run(Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&bad));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not executable"),
        "a missing etcdctl passed: {}",
        text(&out)
    );
}

#[test]
fn vagrantfile_validates() {
    let vagrantfile = Path::new(REPO).join("vagrant/Vagrantfile");
    if !require_all(&[
        ("vagrant (Debian package vagrant)", have("vagrant")),
        ("ruby", have("ruby")),
    ]) {
        return;
    }
    let out = run(Command::new("ruby").arg("-c").arg(&vagrantfile));
    assert!(out.status.success(), "ruby -c: {}", text(&out));
    // --ignore-provider: no VirtualBox or libvirt here. It still checks every
    // machine's settings and that each provisioning script exists. Vagrant's
    // state goes to a temporary directory, never into the work tree.
    let state = tempfile::tempdir().unwrap();
    let out = run(Command::new("vagrant")
        .args(["validate", "--ignore-provider"])
        .current_dir(vagrantfile.parent().unwrap())
        .env("VAGRANT_HOME", state.path().join("home"))
        .env("VAGRANT_DOTFILE_PATH", state.path().join("dot"))
        .env("VAGRANT_CHECKPOINT_DISABLE", "1"));
    assert!(out.status.success(), "vagrant validate: {}", text(&out));
    let s = String::from_utf8_lossy(&out.stdout);
    for m in [
        "consul-01",
        "consul-02",
        "consul-03",
        "pg-patroni1",
        "pg-patroni2",
        "pg-patroni3",
        "pgbouncer",
    ] {
        assert!(s.contains(m), "machine {m} not defined: {s}");
    }
}

/// Documentation ranges only (docs/design.md, "How it is tested"), never a private range, also in what
/// operators copy. The lab plan is the same in every example.
#[test]
fn examples_use_documentation_addresses_only() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(CONF)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.push(Path::new(REPO).join("vagrant/Vagrantfile"));
    for e in std::fs::read_dir(Path::new(REPO).join("scripts/provision")).unwrap() {
        files.push(e.unwrap().path());
    }
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        for word in text.split(|c: char| !(c.is_ascii_digit() || c == '.')) {
            let parts: Vec<u32> = word.split('.').filter_map(|p| p.parse().ok()).collect();
            if parts.len() != 4 || word.split('.').count() != 4 {
                continue;
            }
            let private = parts[0] == 10
                || (parts[0] == 172 && (16..32).contains(&parts[1]))
                || (parts[0] == 192 && parts[1] == 168);
            assert!(!private, "{}: private address {word}", f.display());
        }
    }
    let vagrantfile = std::fs::read_to_string(Path::new(REPO).join("vagrant/Vagrantfile")).unwrap();
    for (host, ip) in [
        ("consul-01", "198.51.100.11"),
        ("pg-patroni1", "198.51.100.21"),
        ("pgbouncer", "198.51.100.30"),
    ] {
        assert!(
            vagrantfile.contains(&format!("\"{host}\" => \"{ip}\"")),
            "Vagrantfile: {host} is not {ip}"
        );
    }
    assert!(read("patroni.yml").contains("connect_address: 198.51.100.21:5432"));
    assert!(read("patroni-hook-db.yml").contains(&format!("address: {VIP}/24")));
}

/// The Consul binary the lab runs (scripts/prereqs.sh install_consul).
const CONSUL: &str = "/usr/local/bin/consul";

/// Consul 1.8.7 is installed (a failure under CI=true, else a skip).
fn require_consul() -> bool {
    let version = Command::new(CONSUL)
        .arg("version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    require_all(&[(
        "Consul 1.8.7 at /usr/local/bin/consul (scripts/prereqs.sh installs it)",
        version.starts_with("Consul v1.8.7\n"),
    )])
}

/// The Consul files of the kit: agent configs (JSON) and ACL policies (HCL).
fn kit_consul_files_named() -> (Vec<PathBuf>, Vec<PathBuf>) {
    let mut configs = Vec::new();
    let mut policies = Vec::new();
    for e in std::fs::read_dir(CONF).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("consul-acl-") && name.ends_with(".hcl") {
            policies.push(p);
        } else if name.starts_with("consul") {
            configs.push(p);
        }
    }
    configs.sort();
    policies.sort();
    (configs, policies)
}

/// A Consul dev agent (one server, state in memory) inside a namespace, ACLs
/// on with `default_policy = "deny"`, as the kit runs them; killed on drop.
struct DevAgent {
    ns: Netns,
    child: std::process::Child,
    master: String,
}

impl DevAgent {
    fn start() -> DevAgent {
        let ns = Netns::new("consul");
        let master = "3c0a7b8e-1f7d-4c55-9a43-7d0b1e2f3a4b".to_string();
        let acl = format!(
            r#"acl {{ enabled = true, default_policy = "deny", tokens {{ master = "{master}" }} }}"#
        );
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns.name(),
                CONSUL,
                "agent",
                "-dev",
                "-hcl",
                &acl,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting consul agent -dev");
        let agent = DevAgent { ns, child, master };
        wait_for(
            "the Consul dev agent to accept its management token",
            Duration::from_secs(30),
            || {
                agent
                    .cli(&["acl", "token", "read", "-self"])
                    .status
                    .success()
            },
        );
        agent
    }

    /// `consul ARGS...` inside the namespace, with the management token.
    fn cli(&self, args: &[&str]) -> Output {
        self.cli_as(&self.master, args)
    }

    fn cli_as(&self, token: &str, args: &[&str]) -> Output {
        run(Command::new("ip")
            .args(["netns", "exec", self.ns.name(), CONSUL])
            .args(args)
            .env("CONSUL_HTTP_ADDR", "http://127.0.0.1:8500")
            .env("CONSUL_HTTP_TOKEN", token)
            .env_remove("CONSUL_HTTP_TOKEN_FILE"))
    }
}

impl Drop for DevAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `consul validate` passes on every Consul agent config of the kit, each as
/// its host loads it (alone, in a namespace whose `eth1` has an address from
/// the plan, so `bind_addr`'s template resolves as on the hosts), and fails
/// on a key Consul 1.8.7 does not know. Every ACL policy file loads with
/// `consul acl policy create` into an agent with ACLs on, and the hook's
/// policies grant what their comments say: the hook on a database node
/// writes vip-holder but not Patroni's leader key.
#[test]
fn consul_files_pass_consul_validate_and_the_policies_load() {
    if !require_consul() || !netns::require_root_and_ip() {
        return;
    }
    let (configs, policies) = kit_consul_files_named();
    assert_eq!(
        configs
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect::<Vec<_>>(),
        ["consul-client.json", "consul-server.json"]
    );
    assert_eq!(policies.len(), 3, "{policies:?}");

    let host = Netns::new("cvalid");
    host.ip(&[
        "link", "add", "eth1", "type", "veth", "peer", "name", "eth1p",
    ]);
    host.ip(&["addr", "add", "198.51.100.21/24", "dev", "eth1"]);
    host.ip(&["link", "set", "eth1", "up"]);
    host.ip(&["link", "set", "eth1p", "up"]);
    let validate = |file: &Path| {
        let out = host.exec(CONSUL, &["validate", file.to_str().unwrap()]);
        (out.status.success(), text(&out))
    };
    for file in &configs {
        let (ok, out) = validate(file);
        assert!(ok, "consul validate {}: {out}", file.display());
    }
    // A key 1.8.7 does not know (ui_config is 1.9's) is refused: the check
    // above means something.
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("consul-server.json");
    std::fs::write(
        &broken,
        subst(
            &read("consul-server.json"),
            &[("\"ui\": false", "\"ui_config\": {}")],
        ),
    )
    .unwrap();
    let (ok, out) = validate(&broken);
    assert!(!ok, "consul validate passed a file with ui_config: {out}");

    let agent = DevAgent::start();
    for file in &policies {
        let name = file.file_stem().unwrap().to_string_lossy().into_owned();
        let rules = format!("@{}", file.display());
        let out = agent.cli(&["acl", "policy", "create", "-name", &name, "-rules", &rules]);
        assert!(
            out.status.success(),
            "consul acl policy create {name}: {}",
            text(&out)
        );
    }
    let bad = dir.path().join("bad.hcl");
    std::fs::write(
        &bad,
        "key_prefix \"service/\" {\n  policy = \"sometimes\"\n}\n",
    )
    .unwrap();
    let rules = format!("@{}", bad.display());
    let out = agent.cli(&["acl", "policy", "create", "-name", "bad", "-rules", &rules]);
    assert!(
        !out.status.success(),
        "a policy of `sometimes` loaded: {}",
        text(&out)
    );

    let secret = "6b1d2c3e-4f50-4a61-8b72-9c83d4e5f607";
    let out = agent.cli(&[
        "acl",
        "token",
        "create",
        "-secret",
        secret,
        "-policy-name",
        "consul-acl-hook-db",
    ]);
    assert!(
        out.status.success(),
        "consul acl token create: {}",
        text(&out)
    );
    let put = |key: &str| agent.cli_as(secret, &["kv", "put", key, "x"]);
    let out = put(&format!("service/{SCOPE}/vip-holder"));
    assert!(
        out.status.success(),
        "the hook's token writes vip-holder: {}",
        text(&out)
    );
    let out = put(&format!("service/{SCOPE}/leader"));
    assert!(
        !out.status.success(),
        "the hook's token wrote the leader key"
    );
    assert!(text(&out).contains("403"), "{}", text(&out));
    let out = agent.cli_as(
        secret,
        &["kv", "get", &format!("service/{SCOPE}/vip-holder")],
    );
    assert!(
        out.status.success(),
        "the hook's token reads its scope: {}",
        text(&out)
    );
}

/// etcd 3.4 and etcdctl where Debian's etcd-server and etcd-client put them
/// (scripts/prereqs.sh installs both).
const ETCD: &str = "/usr/bin/etcd";
const ETCDCTL: &str = "/usr/bin/etcdctl";

/// etcd, etcdctl, openssl for the certificates and curl for a burst of
/// writes are installed (a failure under CI=true, else a skip).
fn require_etcd() -> bool {
    require_all(&[
        (
            "etcd at /usr/bin/etcd (Debian package etcd-server)",
            Path::new(ETCD).exists(),
        ),
        (
            "etcdctl at /usr/bin/etcdctl (Debian package etcd-client)",
            Path::new(ETCDCTL).exists(),
        ),
        ("openssl", have("openssl")),
        ("curl", have("curl")),
    ])
}

/// The etcd users the tests hold a client certificate for, its CN the user:
/// root, those etcd-rbac.sh makes for scope postgres and the PgBouncer hosts
/// pgbouncer and pgb2, and one it does not make.
const ETCD_USERS: [&str; 6] = [
    "root",
    "patroni",
    "patroni-hook-db",
    "patroni-hook-pgbouncer-pgbouncer",
    "patroni-hook-pgbouncer-pgb2",
    "stranger",
];

/// Writes to `dir` a CA (ca.pem), a server certificate for 127.0.0.1
/// (server.pem, server-key.pem: the names etcd-server.conf.example gives
/// them), a client certificate per ETCD_USERS (<user>.pem, <user>-key.pem)
/// and one with no CN, as the kit's Patroni and hooks have (nocn.pem,
/// nocn-key.pem).
fn etcd_pki(dir: &Path) {
    let ssl = |args: &[&str]| {
        let out = run(Command::new("openssl").current_dir(dir).args(args));
        assert!(out.status.success(), "openssl {args:?}: {}", text(&out));
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend(["-nodes", "-days", "2", "-subj", "/CN=etcd-ca"]);
    ca.extend(["-keyout", "ca-key.pem", "-out", "ca.pem"]);
    ssl(&ca);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n",
    )
    .unwrap();
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    let leaves = [("server", "server.ext"), ("nocn", "client.ext")]
        .into_iter()
        .chain(ETCD_USERS.iter().map(|u| (*u, "client.ext")));
    for (name, ext) in leaves {
        let (key, csr, pem) = (
            format!("{name}-key.pem"),
            format!("{name}.csr"),
            format!("{name}.pem"),
        );
        let subj = match name {
            "nocn" => "/O=patroni-hook".to_string(),
            _ => format!("/CN={name}"),
        };
        let mut req = vec!["req"];
        req.extend(ec);
        req.extend(["-nodes", "-subj", &subj, "-keyout", &key, "-out", &csr]);
        ssl(&req);
        ssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca-key.pem",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            ext,
            "-out",
            &pem,
        ]);
    }
}

/// One etcd 3.4 member started from etcd-server.conf.example, as Debian's
/// etcd.service starts it (the file's ETCD_* variables in its environment),
/// on free loopback ports with the certificates of `etcd_pki`; killed on drop.
struct Etcd {
    child: std::process::Child,
    dir: tempfile::TempDir,
    endpoint: String,
}

impl Etcd {
    fn start() -> Etcd {
        let dir = tempfile::tempdir().unwrap();
        etcd_pki(dir.path());
        let (client, peer) = (free_port(), free_port());
        let client_url = format!("https://127.0.0.1:{client}");
        let peer_url = format!("https://127.0.0.1:{peer}");
        let cluster = format!("pg-patroni1={peer_url}");
        let data = dir.path().join("data").display().to_string();
        let tls = format!("{}/", dir.path().display());
        // Substituted: the addresses (one member on loopback), the data
        // directory and the directory of the certificates.
        let conf = subst(
            &read("etcd-server.conf.example"),
            &[
                (
                    "pg-patroni1=https://198.51.100.21:2380,pg-patroni2=https://198.51.100.22:2380,pg-patroni3=https://198.51.100.23:2380",
                    cluster.as_str(),
                ),
                (
                    "https://198.51.100.21:2379,https://127.0.0.1:2379",
                    client_url.as_str(),
                ),
                ("https://198.51.100.21:2379", client_url.as_str()),
                ("https://198.51.100.21:2380", peer_url.as_str()),
                ("/var/lib/etcd/default", data.as_str()),
                ("/etc/etcd/tls/", tls.as_str()),
            ],
        );
        let vars: Vec<(&str, &str)> = conf
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| l.split_once('=').expect("KEY=value"))
            .collect();
        assert!(vars.iter().all(|(k, _)| k.starts_with("ETCD_")), "{vars:?}");
        let log = std::fs::File::create(dir.path().join("etcd.log")).unwrap();
        let child = Command::new(ETCD)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .envs(vars)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting etcd");
        let etcd = Etcd {
            child,
            dir,
            endpoint: client_url,
        };
        wait_for(
            "etcd to answer root's etcdctl endpoint health over TLS",
            Duration::from_secs(30),
            || {
                etcd.ctl_as("root", &["endpoint", "health"])
                    .status
                    .success()
            },
        );
        // Every variable of the example is one etcd knows: it only warns
        // about the others.
        let log = etcd.log();
        assert!(!log.contains("unrecognized environment variable"), "{log}");
        etcd
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// The password etcd-rbac.sh made for `user`.
    fn password(&self, user: &str) -> String {
        std::fs::read_to_string(self.dir.path().join("passwords").join(user))
            .unwrap_or_else(|e| panic!("the password of {user}: {e}"))
            .trim_end()
            .to_string()
    }

    /// POST `body` to the JSON gateway's `path` with the client certificate
    /// `cert` (and `token`, if any), as Patroni and patroni-hook do: the
    /// HTTP status and the body.
    fn gateway(&self, cert: &str, token: Option<&str>, path: &str, body: &str) -> (u16, String) {
        let mut curl = Command::new("curl");
        curl.args([
            "-s",
            "-w",
            "\n%{http_code}",
            "--cacert",
            &self.path("ca.pem"),
        ])
        .args(["--cert", &self.path(&format!("{cert}.pem"))])
        .args(["--key", &self.path(&format!("{cert}-key.pem"))])
        .args(["--max-time", "10", "-d", body]);
        if let Some(token) = token {
            curl.args(["-H", &format!("Authorization: {token}")]);
        }
        let out = run(curl.arg(format!("{}{path}", self.endpoint)));
        assert!(out.status.success(), "curl {path}: {}", text(&out));
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = stdout.rsplit_once('\n').expect("curl -w");
        (code.parse().expect("HTTP status"), body.to_string())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }

    /// etcdctl's environment for `user`: its client certificate, whose CN
    /// is the user.
    fn env_for(&self, user: &str) -> Vec<(String, String)> {
        [
            ("ETCDCTL_API", "3".to_string()),
            ("ETCDCTL_ENDPOINTS", self.endpoint.clone()),
            ("ETCDCTL_CACERT", self.path("ca.pem")),
            ("ETCDCTL_CERT", self.path(&format!("{user}.pem"))),
            ("ETCDCTL_KEY", self.path(&format!("{user}-key.pem"))),
            ("ETCDCTL_DIAL_TIMEOUT", "2s".to_string()),
            ("ETCDCTL_COMMAND_TIMEOUT", "5s".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// `etcdctl ARGS...` as `user`.
    fn ctl_as(&self, user: &str, args: &[&str]) -> Output {
        run(Command::new(ETCDCTL)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .envs(self.env_for(user))
            .args(args))
    }

    /// patroni-conf/etcd-rbac.sh -p <dir>/passwords SCOPE pgbouncer pgb2,
    /// with root's etcdctl environment, as the operator runs it.
    fn rbac(&self) -> Output {
        run(Command::new("sh")
            .arg(Path::new(CONF).join("etcd-rbac.sh"))
            .args(["-p", &self.path("passwords"), SCOPE, "pgbouncer", "pgb2"])
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .envs(self.env_for("root")))
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// etcd-rbac.sh on a real etcd 3.4 (TLS, --client-cert-auth, as
/// etcd-server.conf.example sets it up) makes the kit's users and
/// roles and enables auth: each user, known by its certificate's CN, writes
/// exactly the keys its role names and reads its scope, nothing outside it;
/// a certificate whose CN is no user gets nothing; a second run succeeds
/// and changes nothing.
#[test]
fn etcd_rbac_script_grants_each_role_exactly_its_keys() {
    if !require_etcd() {
        return;
    }
    let etcd = Etcd::start();
    // --client-cert-auth: without a client certificate, no answer at all.
    let out = run(Command::new(ETCDCTL)
        .env_clear()
        .env("ETCDCTL_API", "3")
        .args([
            "--endpoints",
            &etcd.endpoint,
            "--cacert",
            &etcd.path("ca.pem"),
        ])
        .args(["--dial-timeout", "2s", "get", "/service/x"]));
    assert!(
        !out.status.success(),
        "read without a certificate: {}",
        text(&out)
    );

    let first = etcd.rbac();
    assert!(first.status.success(), "etcd-rbac.sh: {}", text(&first));
    assert!(
        String::from_utf8_lossy(&first.stdout).contains("auth: enabled"),
        "{}",
        text(&first)
    );
    let listing = || {
        let mut all = String::new();
        for args in [&["user", "list"][..], &["role", "list"]] {
            let out = etcd.ctl_as("root", args);
            assert!(out.status.success(), "etcdctl {args:?}: {}", text(&out));
            all.push_str(&String::from_utf8_lossy(&out.stdout));
        }
        let roles = all.clone();
        for name in roles.lines().filter(|l| !l.is_empty()) {
            for kind in ["user", "role"] {
                let out = etcd.ctl_as("root", &[kind, "get", name]);
                all.push_str(&String::from_utf8_lossy(&out.stdout));
            }
        }
        all
    };
    let before = listing();
    for user in &ETCD_USERS[..5] {
        assert!(before.contains(&format!("User: {user}\n")), "{before}");
    }
    assert!(!before.contains("User: stranger"), "{before}");

    // What each user may write, as etcd-rbac.sh grants it; everything else refused.
    let key = |k: &str| format!("/service/{SCOPE}/{k}");
    let keys = [
        key("leader"),
        key("members/pg-patroni1"),
        key("floating-ip"),
        key("vip-holder"),
        key("pause-request"),
        key("pause-ack/pgbouncer"),
        key("pause-ack/pgb2"),
        "/service/other/vip-holder".to_string(),
        "/service/other/pause-request".to_string(),
    ];
    let writes: [(&str, &[&str]); 4] = [
        (
            "patroni",
            &[
                "leader",
                "members/pg-patroni1",
                "floating-ip",
                "vip-holder",
                "pause-request",
                "pause-ack/pgbouncer",
                "pause-ack/pgb2",
            ],
        ),
        ("patroni-hook-db", &["vip-holder", "pause-request"]),
        (
            "patroni-hook-pgbouncer-pgbouncer",
            &["pause-request", "pause-ack/pgbouncer"],
        ),
        (
            "patroni-hook-pgbouncer-pgb2",
            &["pause-request", "pause-ack/pgb2"],
        ),
    ];
    for (user, allowed) in writes {
        for k in &keys {
            let may = allowed.iter().any(|a| key(a) == *k);
            for args in [vec!["put", k.as_str(), user], vec!["del", k.as_str()]] {
                let out = etcd.ctl_as(user, &args);
                if may {
                    assert!(out.status.success(), "{user} {args:?}: {}", text(&out));
                } else {
                    assert!(!out.status.success(), "{user} may {args:?}");
                    assert!(
                        String::from_utf8_lossy(&out.stderr).contains("permission denied"),
                        "{user} {args:?}: {}",
                        text(&out)
                    );
                }
            }
        }
        // Reads: the whole scope, in one range; nothing outside it.
        let prefix = key("");
        let out = etcd.ctl_as(user, &["get", "--prefix", &prefix]);
        assert!(
            out.status.success(),
            "{user} reads {prefix}: {}",
            text(&out)
        );
        for outside in ["/service/other/", "/service/"] {
            let out = etcd.ctl_as(user, &["get", "--prefix", outside]);
            assert!(!out.status.success(), "{user} reads {outside}");
        }
    }
    // The scope's keys as written last, so the reads above saw them.
    let out = etcd.ctl_as("root", &["put", &key("leader"), "pg-patroni1"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = etcd.ctl_as(
        "patroni-hook-db",
        &["get", "--print-value-only", &key("leader")],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "pg-patroni1",
        "{}",
        text(&out)
    );
    // Auth is on: a certificate whose CN is no etcd user reads nothing.
    let out = etcd.ctl_as("stranger", &["get", &key("leader")]);
    assert!(!out.status.success(), "stranger read: {}", text(&out));

    // Through the JSON gateway, as Patroni and the hook reach etcd: a
    // certificate with a CN is refused whatever it asks; the no-CN
    // certificate and the user's password from etcd-rbac.sh -p log in, and
    // the role holds there too.
    let leader_b64 = "L3NlcnZpY2UvcG9zdGdyZXMvbGVhZGVy"; // /service/postgres/leader
    let (code, body) = etcd.gateway(
        "patroni-hook-db",
        None,
        "/v3/kv/range",
        &format!(r#"{{"key":"{leader_b64}"}}"#),
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("CommonName"), "{body}");
    let login = format!(
        r#"{{"name":"patroni-hook-db","password":"{}"}}"#,
        etcd.password("patroni-hook-db")
    );
    let (code, body) = etcd.gateway("nocn", None, "/v3/auth/authenticate", &login);
    assert_eq!(code, 200, "{body}");
    let token: serde_json::Value = serde_json::from_str(&body).unwrap();
    let token = token["token"].as_str().expect("a token").to_string();
    let (code, body) = etcd.gateway(
        "nocn",
        Some(&token),
        "/v3/kv/range",
        &format!(r#"{{"key":"{leader_b64}"}}"#),
    );
    assert_eq!(code, 200, "{body}");
    assert!(body.contains(r#""value":"cGctcGF0cm9uaTE=""#), "{body}"); // pg-patroni1
    let (code, body) = etcd.gateway(
        "nocn",
        Some(&token),
        "/v3/kv/put",
        &format!(r#"{{"key":"{leader_b64}","value":"eA=="}}"#),
    );
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("permission denied"), "{body}");

    // A second run: nothing added, nothing changed.
    let passwords: Vec<String> = ETCD_USERS[1..5].iter().map(|u| etcd.password(u)).collect();
    let second = etcd.rbac();
    assert!(second.status.success(), "second run: {}", text(&second));
    let said = String::from_utf8_lossy(&second.stdout);
    assert!(!said.contains("added"), "{said}");
    assert!(said.contains("user patroni-hook-db: exists"), "{said}");
    assert_eq!(listing(), before);
    let again: Vec<String> = ETCD_USERS[1..5].iter().map(|u| etcd.password(u)).collect();
    assert_eq!(again, passwords);
}

/// The value of the first `Key=` line of a unit.
fn unit_setting<'a>(unit: &'a str, key: &str) -> &'a str {
    unit.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key}= in the unit"))
}

/// The watch unit's command line, run as systemd runs it (%i the scope, its
/// Environment= and then its EnvironmentFile, the shipped
/// patroni-hook-etcd-watch.default with this test's etcd and the PgBouncer
/// host's certificate and password, ${PATRONI_NAMESPACE} expanded from them), with a
/// recorder standing in for patroni-hook. What the unit's comment says of
/// etcdctl 3.4, checked: the command runs on each write under the scope and
/// only there; a reconcile that exits 75 does not end the watch (the
/// unit's `|| :`: bare, etcdctl would exit 1 and the watch be blind until
/// Restart=); a watch left behind a compaction is canceled and etcdctl
/// exits 5, which Restart=always turns into a new watch and a fresh
/// reconcile.
#[test]
fn etcd_watch_unit_runs_reconcile_on_each_change_and_exits_when_it_may_have_missed_one() {
    if !require_etcd() {
        return;
    }
    let etcd = Etcd::start();
    let out = etcd.rbac();
    assert!(out.status.success(), "etcd-rbac.sh: {}", text(&out));
    let unit = read("patroni-hook-etcd-watch@.service");
    assert_eq!(
        unit_setting(&unit, "ExecStartPost"),
        "-/usr/bin/patroni-hook reconcile"
    );
    assert_eq!(unit_setting(&unit, "Restart"), "always");
    assert_eq!(
        unit_setting(&unit, "EnvironmentFile"),
        "-/etc/default/patroni-hook-etcd-watch"
    );

    // Environment= first, the EnvironmentFile's lines override it.
    let (cert, cert_key, ca) = (
        etcd.path("nocn.pem"),
        etcd.path("nocn-key.pem"),
        etcd.path("ca.pem"),
    );
    let password = etcd.password("patroni-hook-pgbouncer-pgbouncer");
    let default = subst(
        &read("patroni-hook-etcd-watch.default"),
        &[
            (
                "https://198.51.100.21:2379,https://198.51.100.22:2379,https://198.51.100.23:2379",
                etcd.endpoint.as_str(),
            ),
            ("/etc/patroni-hook/etcd-ca.pem", ca.as_str()),
            ("/etc/patroni-hook/etcd-client.pem", cert.as_str()),
            ("/etc/patroni-hook/etcd-client-key.pem", cert_key.as_str()),
            ("REPLACE-WITH-THE-PASSWORD", password.as_str()),
        ],
    );
    let mut env: Vec<(String, String)> = Vec::new();
    let lines = unit_setting(&unit, "Environment").split_whitespace().chain(
        default
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#')),
    );
    for kv in lines {
        let (k, v) = kv.split_once('=').expect("KEY=value");
        env.retain(|(old, _)| old != k);
        env.push((k.to_string(), v.to_string()));
    }
    let var = |name: &str| {
        env.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("{name} unset"))
    };
    assert_eq!(var("PATRONI_NAMESPACE"), "/service");

    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let recorder = dir.path().join("patroni-hook");
    std::fs::write(
        &recorder,
        format!(
            "#!/bin/sh\nprintf '%s %s\\n' \"$ETCD_WATCH_KEY\" \"$*\" >>{}\ncase \"$ETCD_WATCH_KEY\" in *fail*) exit 75 ;; esac\n",
            runs.display()
        ),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&recorder, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let exec_start = unit_setting(&unit, "ExecStart");
    // systemd's splitting: words, a double-quoted one kept whole.
    let mut words = Vec::new();
    for (i, part) in exec_start.split('"').enumerate() {
        if i % 2 == 1 {
            words.push(part.to_string());
        } else {
            words.extend(part.split_whitespace().map(String::from));
        }
    }
    let argv: Vec<String> = words
        .iter()
        .map(|w| {
            w.replace("%i", SCOPE)
                .replace("${PATRONI_NAMESPACE}", &var("PATRONI_NAMESPACE"))
                .replace("/usr/bin/patroni-hook", &recorder.display().to_string())
        })
        .collect();
    assert_eq!(
        argv[..4],
        [
            "/usr/bin/etcdctl",
            "watch",
            "--prefix",
            "/service/postgres/"
        ]
    );
    let start = || {
        Command::new(&argv[0])
            .args(&argv[1..])
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .envs(env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting the unit's etcdctl watch")
    };
    let recorded = || std::fs::read_to_string(&runs).unwrap_or_default();
    let key = |k: &str| format!("/service/{SCOPE}/{k}");
    let put = |user: &str, k: &str| {
        let out = etcd.ctl_as(user, &["put", k, "x"]);
        assert!(out.status.success(), "{user} put {k}: {}", text(&out));
    };
    let exited = |child: &mut std::process::Child, what: &str| {
        let status = wait_for_some(what, Duration::from_secs(30), || {
            child.try_wait().expect("waiting for etcdctl")
        });
        let mut stderr = String::new();
        use std::io::Read;
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        (status.code(), stderr)
    };

    let mut watch = start();
    // The watch exists once a write reaches the recorder: write until one does.
    wait_for(
        "the unit's watch to run its command on a write under the scope",
        Duration::from_secs(30),
        || {
            put("patroni", &key("members/pg-patroni1"));
            recorded().contains("members/pg-patroni1")
        },
    );
    // Outside the scope: nothing; in it: the command, with `reconcile`.
    put("root", "/service/other/leader");
    put("patroni", &key("leader"));
    wait_for(
        "the command to run for the leader key",
        Duration::from_secs(30),
        || recorded().contains(&format!("\"{}\" reconcile\n", key("leader"))),
    );
    assert!(!recorded().contains("/service/other/"), "{}", recorded());

    // reconcile's 75 (no leader, etcd unreachable): the watch goes on and
    // runs the command for the next change.
    put("patroni", &key("members/fail"));
    wait_for(
        "the command to run for the failing key",
        Duration::from_secs(30),
        || recorded().contains("members/fail"),
    );
    put("patroni", &key("failover"));
    wait_for(
        "the watch to run its command after a reconcile's 75",
        Duration::from_secs(30),
        || recorded().contains(&key("failover")),
    );
    assert!(
        watch.try_wait().unwrap().is_none(),
        "etcdctl ended after a failing reconcile"
    );

    // Stopped (a slow consumer) while a burst of writes passes it, then
    // compacted past: canceled, exit 5.
    let before = recorded().lines().count();
    wait_for(
        "the restarted watch to run its command",
        Duration::from_secs(30),
        || {
            put("patroni", &key("members/pg-patroni2"));
            recorded().lines().count() > before
        },
    );
    let pid = nix::unistd::Pid::from_raw(watch.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    // 1500 writes of 2 KiB in one curl, through the JSON gateway as Patroni
    // (the no-CN certificate, its password's token): more than etcd buffers
    // for a watcher that does not read.
    let login = format!(
        r#"{{"name":"patroni","password":"{}"}}"#,
        etcd.password("patroni")
    );
    let (code, body) = etcd.gateway("nocn", None, "/v3/auth/authenticate", &login);
    assert_eq!(code, 200, "{body}");
    let token: serde_json::Value = serde_json::from_str(&body).unwrap();
    let token = token["token"].as_str().expect("a token").to_string();
    let body = dir.path().join("put.json");
    std::fs::write(
        &body,
        format!(
            r#"{{"key":"{}","value":"{}"}}"#,
            "L3NlcnZpY2UvcG9zdGdyZXMvbWVtYmVycy9idXJzdA==", // /service/postgres/members/burst
            "eHh4".repeat(512)                              // "xxx" 512 times
        ),
    )
    .unwrap();
    let url = format!("{}/v3/kv/put", etcd.endpoint);
    let mut curl = Command::new("curl");
    curl.args(["-sf", "-o", "/dev/null", "--cacert", &ca])
        .args(["--cert", &cert, "--key", &cert_key])
        .args(["-H", &format!("Authorization: {token}")])
        .arg("--data-binary")
        .arg(format!("@{}", body.display()));
    for _ in 0..1500 {
        curl.arg(&url);
    }
    let out = run(&mut curl);
    assert!(out.status.success(), "curl: {}", text(&out));
    let status = etcd.ctl_as("root", &["get", "-w", "json", &key("members/burst")]);
    let json: serde_json::Value =
        serde_json::from_slice(&status.stdout).expect("etcdctl get -w json");
    let revision = json["header"]["revision"]
        .as_i64()
        .expect("header.revision");
    let out = etcd.ctl_as("root", &["compact", &revision.to_string()]);
    assert!(out.status.success(), "etcdctl compact: {}", text(&out));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    let (code, stderr) = exited(&mut watch, "etcdctl to exit after the compaction");
    assert_eq!(code, Some(5), "{stderr}");
    assert!(
        stderr.contains("required revision has been compacted"),
        "{stderr}"
    );
}

/// patroni-etcd3.yml passes `patroni --validate-config` (which connects to
/// each etcd3 host: substituted with a real etcd's address, and its TLS
/// files this test's) and fails with an etcd that is not there; its
/// callbacks are patroni.yml's.
#[test]
fn patroni_etcd3_yaml_validates_with_patroni_and_has_the_callbacks() {
    let patroni = patroni_venv().join("bin/patroni");
    if !require_etcd()
        || !require_all(&[
            (
                "Patroni in the test virtualenv ($PATRONI_VENV/bin/patroni)",
                patroni.exists(),
            ),
            (
                "PostgreSQL 15 binaries (patroni-etcd3.yml's bin_dir)",
                Path::new(pg::PG_BIN).join("postgres").exists(),
            ),
        ])
    {
        return;
    }
    let yaml = read("patroni-etcd3.yml");
    let doc: serde_yaml::Value = serde_yaml::from_str(&yaml).unwrap();
    let consul: serde_yaml::Value = serde_yaml::from_str(&read("patroni.yml")).unwrap();
    assert_eq!(doc["postgresql"], consul["postgresql"]);
    assert_eq!(doc["namespace"].as_str(), Some("/service/"));
    assert_eq!(doc["etcd3"]["protocol"].as_str(), Some("https"));
    assert!(doc.get("consul").is_none());

    let etcd = Etcd::start();
    let host = etcd.endpoint.trim_start_matches("https://").to_string();
    let hosts = format!("hosts: {host}");
    let (ca, cert, key) = (
        etcd.path("ca.pem"),
        etcd.path("nocn.pem"),
        etcd.path("nocn-key.pem"),
    );
    let on_etcd = |hosts: &str| {
        subst(
            &yaml,
            &[
                (
                    "hosts: 198.51.100.21:2379,198.51.100.22:2379,198.51.100.23:2379",
                    hosts,
                ),
                ("/etc/patroni/etcd-ca.pem", ca.as_str()),
                ("/etc/patroni/etcd-client.pem", cert.as_str()),
                ("/etc/patroni/etcd-client-key.pem", key.as_str()),
            ],
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("patroni.yml");
    std::fs::write(&file, on_etcd(&hosts)).unwrap();
    let out = run(Command::new(&patroni).arg("--validate-config").arg(&file));
    assert!(
        out.status.success(),
        "patroni --validate-config: {}",
        text(&out)
    );
    let gone = format!("hosts: 127.0.0.1:{}", free_port());
    std::fs::write(&file, on_etcd(&gone)).unwrap();
    let out = run(Command::new(&patroni).arg("--validate-config").arg(&file));
    assert!(!out.status.success(), "no etcd passed: {}", text(&out));
    assert!(text(&out).contains("is not reachable"), "{}", text(&out));
}
