//! A database node for the hook's tests: a "node" namespace joined to a
//! "peer" by two veth pairs (eth1, eth2), a Consul reachable from the node on
//! loopback (the double, or a real agent with ACLs and TLS), a config file
//! and the hook binary run inside the node.

use super::netns::{self, Netns};
use super::real_consul::{Agent, Token};
use super::real_etcd::{self, Etcd};
use consul_double::{Options, Server};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// The scope every fixture uses.
pub const SCOPE: &str = "batman";
/// The IPv4 VIP of the fixtures.
pub const V4: &str = "198.51.100.100";
/// The IPv6 VIP of the fixtures.
pub const V6: &str = "2001:db8::100";
/// The node's own addresses on eth1.
pub const NODE_V4: &str = "198.51.100.11";
/// The node's own IPv6 address on eth1.
pub const NODE_V6: &str = "2001:db8::11";

/// The hook binary cargo built for this test.
pub fn bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("patroni-hook")
}

/// The exit code of a finished run (-1 when killed by a signal).
pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

pub use super::Backend;

/// The fixture's Consul, with the test's view of its KV store.
pub enum Kv {
    /// The in-repo double.
    Double(Server),
    /// A real agent, and the hook's token.
    Real(Box<Agent>, Token),
    /// A real etcd (mutual TLS, auth); the test's keys in the Consul
    /// spelling (`service/batman/leader`) are etcd's `/service/batman/leader`.
    Etcd(Box<Etcd>),
}

impl Kv {
    /// Plain PUT.
    pub fn kv_put(&self, key: &str, value: &[u8]) {
        match self {
            Kv::Double(s) => s.kv_put(key, value),
            Kv::Real(a, _) => a.kv_put(key, value),
            Kv::Etcd(e) => e.put(key, value),
        }
    }

    /// The entry at `key`.
    pub fn kv_get(&self, key: &str) -> Option<consul_double::Entry> {
        match self {
            Kv::Double(s) => s.kv_get(key),
            Kv::Real(a, _) => a.kv_get(key),
            // mod_revision stands for ModifyIndex: it moves on every write.
            Kv::Etcd(e) => e.get(key).map(|(value, rev)| consul_double::Entry {
                key: key.to_string(),
                value,
                create_index: rev,
                modify_index: rev,
                lock_index: 0,
                flags: 0,
                session: None,
            }),
        }
    }

    /// DELETE.
    pub fn kv_delete(&self, key: &str) {
        match self {
            Kv::Double(s) => s.kv_delete(key),
            Kv::Real(a, _) => a.kv_delete(key),
            Kv::Etcd(e) => e.delete(key),
        }
    }

    /// The base URL the hook uses; on etcd, its `hosts` value.
    pub fn url(&self) -> String {
        match self {
            Kv::Double(s) => s.url(),
            Kv::Real(a, _) => a.url(),
            Kv::Etcd(e) => e.hosts(),
        }
    }

    /// `key` (`service/batman/vip-holder`) as the hook names it in its
    /// output: with a leading `/` on etcd.
    pub fn shown_key(&self, key: &str) -> String {
        match self {
            Kv::Etcd(_) => real_etcd::etcd_key(key),
            _ => key.to_string(),
        }
    }

    /// What replaces `url()` in a config to send the hook to `addr`
    /// (`127.0.0.1:port`) instead: `http://addr` on Consul, `addr` on etcd.
    pub fn endpoint(&self, addr: &str) -> String {
        match self {
            Kv::Etcd(_) => addr.to_string(),
            _ => format!("http://{addr}"),
        }
    }

    /// The real etcd, for tests that only make sense on one.
    pub fn etcd(&self) -> &Etcd {
        match self {
            Kv::Etcd(e) => e,
            _ => panic!("this test needs the etcd backend"),
        }
    }

    /// The real agent, for tests that only make sense on one.
    pub fn agent(&self) -> &Agent {
        match self {
            Kv::Real(a, _) => a,
            _ => panic!("this test needs the real Consul backend"),
        }
    }
}

/// The kit's database-node policy (patroni-conf/consul-acl-hook-db.hcl)
/// for the fixture's scope, as `consul acl policy create` would load it.
pub fn node_policy() -> String {
    kit_policy("consul-acl-hook-db.hcl", "pg1")
}

/// A policy file of the kit, made for the fixture's scope and for host
/// `name`, as its comments tell an operator to.
pub fn kit_policy(file: &str, name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("patroni-conf")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        text.contains("\"service/postgres/"),
        "{} no longer names service/postgres/",
        path.display()
    );
    text.replace("\"service/postgres/", &format!("\"service/{SCOPE}/"))
        .replace("pause-ack/pgbouncer\"", &format!("pause-ack/{name}\""))
}

/// Two namespaces joined by veth pairs, a Consul reachable from "node".
pub struct Fixture {
    /// The database node the hook runs in.
    pub node: Netns,
    /// Its neighbour, which sees announcements.
    pub peer: Netns,
    /// The Consul, on the node's loopback.
    pub consul: Kv,
    /// Config, lock and state files.
    pub dir: tempfile::TempDir,
    /// The config file.
    pub config: PathBuf,
    /// pg1's Patroni REST API, once `set_members` wrote pg1's key.
    api: std::sync::Mutex<Option<super::fake_consul::FakeConsul>>,
}

impl Fixture {
    /// `None` when the prerequisites are missing outside CI.
    pub fn new(vip: &str) -> Option<Fixture> {
        Fixture::on(Backend::Double, vip)
    }

    /// A fixture whose hook talks to `backend`; `None` when the
    /// prerequisites are missing outside CI.
    pub fn on(backend: Backend, vip: &str) -> Option<Fixture> {
        if !netns::require_root_and_ip() {
            return None;
        }
        if backend == Backend::Real && !super::real_consul::require_consul() {
            return None;
        }
        if backend == Backend::Etcd && !real_etcd::require_etcd() {
            return None;
        }
        let node = Netns::new("node");
        let peer = Netns::new("peer");
        // DAD would hold the test's own IPv6 addresses tentative for a second.
        for ns in [&node, &peer] {
            ns.sysctl("net.ipv6.conf.all.accept_dad", "0");
            ns.sysctl("net.ipv6.conf.default.accept_dad", "0");
        }
        netns::veth(&node, "eth1", &peer, "eth1");
        netns::veth(&node, "eth2", &peer, "eth2");
        node.ip(&["addr", "add", &format!("{NODE_V4}/24"), "dev", "eth1"]);
        peer.ip(&["addr", "add", "198.51.100.12/24", "dev", "eth1"]);
        node.ip(&[
            "addr",
            "add",
            &format!("{NODE_V6}/64"),
            "dev",
            "eth1",
            "nodad",
        ]);
        peer.ip(&["addr", "add", "2001:db8::12/64", "dev", "eth1", "nodad"]);
        let consul = match backend {
            Backend::Double => {
                let listener =
                    node.run(|| std::net::TcpListener::bind("127.0.0.1:0").expect("bind in node"));
                Kv::Double(
                    Server::start_on(listener, Options::default()).expect("start the double"),
                )
            }
            Backend::Real => {
                let agent = Agent::start(&node);
                let token = agent.token("hook-node", &node_policy());
                Kv::Real(Box::new(agent), token)
            }
            Backend::Etcd => Kv::Etcd(Box::new(Etcd::start(Some(&node), real_etcd::Opts::SECURE))),
        };
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.yml");
        let f = Fixture {
            node,
            peer,
            consul,
            dir,
            config,
            api: std::sync::Mutex::new(None),
        };
        f.write_config(vip, "");
        Some(f)
    }

    /// Writes the fixture's config: VIP `vip` on eth1, deadline 3 s, timeout
    /// 1 s (2 s on etcd); with the real backend, the CA and the hook's token
    /// file too; on etcd `dcs: etcd3`, the CA, a client certificate, the
    /// user patroni-hook-db and its password file.
    pub fn write_config(&self, vip: &str, extra: &str) {
        let tls = match &self.consul {
            Kv::Double(_) => String::new(),
            Kv::Etcd(e) => {
                // 2 s per call, as the kit's example: each run
                // authenticates with a password (bcrypt and a raft write on
                // etcd's side, 100-300 ms on a loaded 2-core machine), and
                // 20 runs started at once all do.
                let dcs = format!(
                    "dcs: etcd3\netcd3:\n{}  timeout: 2s\n",
                    e.hook_settings(self.dir.path(), "patroni-hook-db")
                );
                std::fs::write(
                    &self.config,
                    format!(
                        "name: pg1\nscope: {SCOPE}\ndeadline: 3s\nlock_file: {}\n{dcs}\
                         vip:\n  address: {vip}\n  interface: eth1\n  gratuitous_arp: 2\n{extra}",
                        self.lock_file().display(),
                    ),
                )
                .unwrap();
                return;
            }
            Kv::Real(a, t) => {
                let token_file = self.dir.path().join("consul.token");
                std::fs::write(&token_file, format!("{}\n", t.secret)).unwrap();
                format!(
                    "  ca_file: {}\n  token_file: {}\n",
                    a.ca_file().display(),
                    token_file.display()
                )
            }
        };
        std::fs::write(
            &self.config,
            format!(
                "name: pg1\nscope: {SCOPE}\ndeadline: 3s\nlock_file: {}\n\
                 consul:\n  url: {}\n  timeout: 1s\n{tls}\
                 vip:\n  address: {vip}\n  interface: eth1\n  gratuitous_arp: 2\n{extra}",
                self.lock_file().display(),
                self.consul.url(),
            ),
        )
        .unwrap();
    }

    /// A config `name` for this node (pg1, VIP `vip` on eth1, deadline 3 s)
    /// whose DCS is etcd with `etcd3` as its section's lines (each indented
    /// by two spaces; add `  timeout: ...`).
    pub fn etcd_config(&self, name: &str, vip: &str, etcd3: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(
            &path,
            format!(
                "name: pg1\nscope: {SCOPE}\ndeadline: 3s\nlock_file: {}\ndcs: etcd3\netcd3:\n{etcd3}\
                 vip:\n  address: {vip}\n  interface: eth1\n  gratuitous_arp: 2\n",
                self.lock_file().display(),
            ),
        )
        .unwrap();
        path
    }

    /// A copy of this fixture's config named `name` whose `etcd3:` section
    /// has each `(setting, value)` set (replaced or added) or, with `None`,
    /// removed.
    pub fn etcd_variant(&self, name: &str, set: &[(&str, Option<&str>)]) -> PathBuf {
        let text = std::fs::read_to_string(&self.config).unwrap();
        assert!(text.contains("\netcd3:\n"), "not an etcd3 config: {text}");
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        for (setting, value) in set {
            let prefix = format!("  {setting}: ");
            lines.retain(|l| !l.starts_with(&prefix));
            if let Some(v) = value {
                let at = lines.iter().position(|l| l == "etcd3:").unwrap() + 1;
                lines.insert(at, format!("{prefix}{v}"));
            }
        }
        let path = self.dir.path().join(name);
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        path
    }

    /// Writes a PgBouncer host's config (`pgb.yml`, name `pgb`) for this
    /// fixture's real agent, with `secret` in its token file and each
    /// `(scope, database)` as a cluster; its ini is `pgbouncer.ini` here.
    /// Written anew on each call (a token swapped, say).
    pub fn pgbouncer_host_config(&self, secret: &str, clusters: &[(&str, &str)]) -> PathBuf {
        let a = self.consul.agent();
        let token_file = self.dir.path().join("pgb.token");
        std::fs::write(&token_file, format!("{secret}\n")).unwrap();
        let config = self.dir.path().join("pgb.yml");
        let clusters: String = clusters
            .iter()
            .map(|(scope, db)| format!("    - scope: {scope}\n      databases: [{db}]\n"))
            .collect();
        std::fs::write(
            &config,
            format!(
                "name: pgb\ndeadline: 3s\nlock_file: {lock}\nconsul:\n  url: {url}\n  timeout: 1s\n  ca_file: {ca}\n  token_file: {tf}\n\
                 pgbouncer:\n  ini: {ini}\n  pidfile: {pid}\n  clusters:\n{clusters}",
                lock = self.dir.path().join("pgb.lock").display(),
                url = a.url(),
                ca = a.ca_file().display(),
                tf = token_file.display(),
                ini = self.dir.path().join("pgbouncer.ini").display(),
                pid = self.dir.path().join("pgbouncer.pid").display(),
            ),
        )
        .unwrap();
        config
    }

    /// Replaces the hook's token with `secret` (a revoked or another token).
    pub fn set_token(&self, secret: &str) {
        std::fs::write(self.dir.path().join("consul.token"), format!("{secret}\n")).unwrap();
    }

    /// The lock file the config names.
    pub fn lock_file(&self) -> PathBuf {
        self.dir.path().join("hook.lock")
    }

    /// Rewrites this fixture's config in place, replacing `from` with `to`.
    pub fn edit_config(&self, from: &str, to: &str) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        assert!(text.contains(from), "config has no {from:?}");
        std::fs::write(&self.config, text.replace(from, to)).unwrap();
    }

    /// A copy of this fixture's config named `name`, with `from` replaced by `to`.
    pub fn config_variant(&self, name: &str, from: &str, to: &str) -> PathBuf {
        let text = std::fs::read_to_string(&self.config).unwrap();
        assert!(text.contains(from), "config has no {from:?}");
        let path = self.dir.path().join(name);
        std::fs::write(&path, text.replace(from, to)).unwrap();
        path
    }

    /// The hook inside the node namespace, not yet started.
    pub fn command(&self, config: &Path, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", self.node.name()])
            .arg(bin())
            .arg("--config")
            .arg(config)
            .args(args)
            .env("PATRONI_HOOK_LOG_STDERR", "1")
            .stdin(Stdio::null());
        c
    }

    /// `<ns>/<scope>/<k>`.
    pub fn key(&self, k: &str) -> String {
        format!("service/{SCOPE}/{k}")
    }

    /// Sets the leader key.
    pub fn set_leader(&self, who: &str) {
        self.consul.kv_put(&self.key("leader"), who.as_bytes());
    }

    /// Writes member keys as Patroni does: pg1 is this node (198.51.100.11,
    /// its REST API on 2001:db8::11, answering as a running primary), pg2 the
    /// peer (198.51.100.12).
    pub fn set_members(&self) {
        let mut api = self.api.lock().unwrap();
        if api.is_none() {
            let listener = self.node.run(|| {
                std::net::TcpListener::bind(format!("[{NODE_V6}]:8008"))
                    .expect("bind pg1's REST API")
            });
            let primary = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
            *api = Some(super::fake_consul::patroni_api(listener, primary));
        }
        // pg1's REST API listens on its IPv6 address, so both of this
        // node's addresses are a member's.
        for (name, conn, api) in [
            ("pg1", NODE_V4, format!("[{NODE_V6}]")),
            ("pg2", "198.51.100.12", "198.51.100.12".to_string()),
        ] {
            self.consul.kv_put(
                &self.key(&format!("members/{name}")),
                format!(
                    r#"{{"conn_url":"postgres://{conn}:5432/postgres","api_url":"http://{api}:8008/patroni","role":"replica","state":"running"}}"#
                )
                .as_bytes(),
            );
        }
    }

    /// Member keys whose URLs use host names that do not resolve.
    pub fn set_members_named(&self) {
        for (name, host) in [("pg1", "db1.invalid"), ("pg2", "db2.invalid")] {
            self.consul.kv_put(
                &self.key(&format!("members/{name}")),
                format!(
                    r#"{{"conn_url":"postgres://{host}:5432/postgres","api_url":"http://{host}:8008/patroni"}}"#
                )
                .as_bytes(),
            );
        }
    }

    /// Runs the hook inside the node namespace with this fixture's config.
    pub fn hook(&self, args: &[&str]) -> Output {
        self.hook_with(&self.config, args)
    }

    /// Runs the hook with another config.
    pub fn hook_with(&self, config: &Path, args: &[&str]) -> Output {
        self.command(config, args)
            .output()
            .expect("running patroni-hook")
    }

    /// A stale neighbour entry for `ip` on the peer with a wrong MAC: only an
    /// announcement from the node can correct it.
    pub fn stale_peer_entry(&self, ip: &str) {
        let wrong = "02:00:00:00:00:99";
        self.peer.ip(&[
            "neigh", "replace", ip, "lladdr", wrong, "dev", "eth1", "nud", "stale",
        ]);
    }

    /// Waits until the peer's entry for `ip` carries the node's MAC.
    pub fn wait_announced(&self, ip: &str, what: &str) {
        let node_mac = self.node.mac("eth1");
        super::wait_for(what, Duration::from_secs(3), || {
            self.peer.neighbour_mac("eth1", ip).as_deref() == Some(node_mac.as_str())
        });
    }

    /// How many times `ip` is on the node's eth1.
    pub fn vip_count(&self, ip: &str) -> usize {
        self.node.addrs("eth1", ip).len()
    }

    /// How many times `ip` is on the node's `ifname`.
    pub fn count_on(&self, ifname: &str, ip: &str) -> usize {
        self.node.addrs(ifname, ip).len()
    }

    /// The vip-holder record, parsed.
    pub fn holder(&self) -> Option<serde_json::Value> {
        self.consul
            .kv_get(&self.key("vip-holder"))
            .map(|e| serde_json::from_slice(&e.value).expect("vip-holder is JSON"))
    }

    /// The vip-holder record's ModifyIndex.
    pub fn holder_index(&self) -> Option<u64> {
        self.consul
            .kv_get(&self.key("vip-holder"))
            .map(|e| e.modify_index)
    }

    /// Takes the hook's lock as another run would and keeps it until the
    /// returned guard drops (a run stopped by a debugger, say).
    pub fn hold_lock(&self) -> nix::fcntl::Flock<std::fs::File> {
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.lock_file())
            .unwrap();
        nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| e)
            .expect("taking the hook's lock")
    }

    /// A TCP listener on the node's loopback (for a fake Consul).
    pub fn node_listener(&self) -> std::net::TcpListener {
        self.node
            .run(|| std::net::TcpListener::bind("127.0.0.1:0").expect("bind in node"))
    }
}
