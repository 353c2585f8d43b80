//! The two Consuls a test body runs against: the double (in-process) and a
//! real Consul 1.8.7 agent (a single server that bootstraps itself, with a
//! temp data dir, started by the test on loopback with free ports and
//! stopped by pid on drop, also on panic). [`Backend`] gives both the
//! double's in-process helpers (`kv_put`, `kv_get`, `kv_delete`, `index`,
//! `session_ids`); on the real agent they go over HTTP. `both!` makes one
//! test per backend from one body.
//!
//! The agent binary is `$CONSUL_BIN`, else `consul` on PATH. It must be
//! 1.8.7 (Debian bullseye's build, scripts/prereqs.sh `install_consul`):
//! the version the project is proven on. Missing or another version fails
//! the real half of a test under `CI=true` and skips it, printing why,
//! elsewhere (`require`).

use std::fs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use base64::Engine as _;
use consul_double::{format_go_duration, Entry, Options, Server};
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};

use super::{free_port, request, require, try_request, Resp};

/// The Consul version the real backend must be.
pub const REAL_VERSION: &str = "Consul v1.8.7";

/// Characters a key keeps as-is in a URL path (`/` stays a separator).
const KEY_CHARS: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'?')
    .add(b'<')
    .add(b'>')
    .add(b'`')
    .add(b'{')
    .add(b'}');

/// A Consul under test.
pub enum Backend {
    /// The in-repo double.
    Double(Server),
    /// A real Consul 1.8.7 single-server agent.
    Real(Agent),
}

impl Backend {
    /// The double, configured by `opts`.
    pub fn double(opts: Options) -> Backend {
        Backend::Double(Server::start(opts).expect("start the double"))
    }

    /// A real agent configured like the double would be by `opts`, or
    /// `None` (after printing why) when no Consul 1.8.7 binary is at hand
    /// outside CI. Options with no agent equivalent (watches, delay file)
    /// are refused: tests of those are double-only.
    pub fn real(opts: Options) -> Option<Backend> {
        assert!(
            opts.watches.is_empty() && opts.delay_file.is_none(),
            "watches and the delay file are double-only; such a test has no real half"
        );
        let bin = match consul_binary() {
            Ok(bin) => bin,
            Err(missing) => {
                require(std::slice::from_ref(missing));
                return None;
            }
        };
        Some(Backend::Real(Agent::start(bin, &opts)))
    }

    /// Whether this is the real agent (for the few rules where 1.8.7 and
    /// the double differ on purpose; SPEC.md §8).
    pub fn is_real(&self) -> bool {
        matches!(self, Backend::Real(_))
    }

    /// HTTP address.
    pub fn addr(&self) -> SocketAddr {
        match self {
            Backend::Double(s) => s.addr(),
            Backend::Real(a) => a.addr,
        }
    }

    /// Base URL, e.g. `http://127.0.0.1:34567`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// Plain PUT of `value` at `key` (with the admin token under ACLs).
    pub fn kv_put(&self, key: &str, value: &[u8]) {
        match self {
            Backend::Double(s) => s.kv_put(key, value),
            Backend::Real(a) => {
                let r = a.call("PUT", &format!("/v1/kv/{}", encode_key(key)), value);
                assert_eq!(
                    (r.status, r.text().as_str()),
                    (200, "true"),
                    "PUT {key}: {r:?}"
                );
            }
        }
    }

    /// One KV entry, if present.
    pub fn kv_get(&self, key: &str) -> Option<Entry> {
        match self {
            Backend::Double(s) => s.kv_get(key),
            Backend::Real(a) => {
                let r = a.call("GET", &format!("/v1/kv/{}", encode_key(key)), b"");
                match r.status {
                    404 => None,
                    200 => Some(entry_from_json(&r.json()[0])),
                    _ => panic!("GET {key}: {r:?}"),
                }
            }
        }
    }

    /// Plain DELETE of `key`.
    pub fn kv_delete(&self, key: &str) {
        match self {
            Backend::Double(s) => s.kv_delete(key),
            Backend::Real(a) => {
                let r = a.call("DELETE", &format!("/v1/kv/{}", encode_key(key)), b"");
                assert_eq!(r.status, 200, "DELETE {key}: {r:?}");
            }
        }
    }

    /// The double's global index. A real agent has no HTTP call for its
    /// Raft index, so there it is the KV table's index: the
    /// `X-Consul-Index` of a read of a missing key (§3.2), which is what a
    /// client can see.
    pub fn index(&self) -> u64 {
        match self {
            Backend::Double(s) => s.index(),
            Backend::Real(a) => {
                let r = a.call("GET", "/v1/kv/.index-probe.does-not-exist", b"");
                assert_eq!(r.status, 404, "index probe: {r:?}");
                r.index()
            }
        }
    }

    /// Ids of the live sessions.
    pub fn session_ids(&self) -> Vec<String> {
        match self {
            Backend::Double(s) => s.session_ids(),
            Backend::Real(a) => {
                let r = a.call("GET", "/v1/session/list", b"");
                assert_eq!(r.status, 200, "session list: {r:?}");
                r.json()
                    .as_array()
                    .expect("session list is an array")
                    .iter()
                    .filter_map(|s| s["ID"].as_str().map(str::to_string))
                    .collect()
            }
        }
    }
}

fn encode_key(key: &str) -> String {
    utf8_percent_encode(key, KEY_CHARS).to_string()
}

/// A KV entry from one element of Consul's JSON answer.
fn entry_from_json(v: &serde_json::Value) -> Entry {
    let n = |f: &str| {
        v[f].as_u64()
            .unwrap_or_else(|| panic!("{f} is not a number in {v}"))
    };
    let value = match v["Value"].as_str() {
        None => Vec::new(),
        Some(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap_or_else(|e| panic!("Value is not base64 ({e}) in {v}")),
    };
    Entry {
        key: v["Key"].as_str().expect("Key").to_string(),
        value,
        create_index: n("CreateIndex"),
        modify_index: n("ModifyIndex"),
        lock_index: n("LockIndex"),
        flags: n("Flags"),
        session: v["Session"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_string),
    }
}

/// The consul binary, checked once per test process: `Err` says what is
/// missing.
fn consul_binary() -> &'static Result<PathBuf, String> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| {
        let bin = std::env::var_os("CONSUL_BIN")
            .map(PathBuf::from)
            .or_else(|| super::which("consul"))
            .ok_or_else(|| {
                format!(
                    "a consul binary ({REAL_VERSION}: scripts/prereqs.sh installs it, or set CONSUL_BIN)"
                )
            })?;
        let out = Command::new(&bin)
            .arg("version")
            .output()
            .map_err(|e| format!("{REAL_VERSION} at {} (running it: {e})", bin.display()))?;
        let first = String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_string();
        if first != REAL_VERSION {
            return Err(format!(
                "{REAL_VERSION} at {} (it says {first:?})",
                bin.display()
            ));
        }
        Ok(bin)
    })
}

/// A running Consul server on 127.0.0.1 that bootstraps itself
/// (`bootstrap_expect = 1`, `raft_multiplier = 1`: leader in about 2 s):
/// HTTP, serf LAN/WAN and server RPC on free ports, DNS, gRPC and HTTPS off,
/// no update check (no traffic beyond loopback). Not `-dev`: dev mode
/// pretty-prints every JSON answer (indented, with a trailing newline),
/// which a production agent, the one Patroni talks to, does not. Killed by
/// pid on drop; its temp dir (config, data, log) goes with it.
pub struct Agent {
    child: Child,
    addr: SocketAddr,
    /// The token the helpers send (the ACL master token, when ACLs are on).
    token: Option<String>,
    dir: tempfile::TempDir,
}

impl Agent {
    /// Starts an agent and waits (bounded) until it is leader and its node
    /// is registered with `serfHealth` (so sessions can be created at once)
    /// and synced.
    /// A port taken between picking and binding makes the agent exit: then
    /// it is started again on other ports, twice at most.
    fn start(bin: &PathBuf, opts: &Options) -> Agent {
        let mut last_log = String::new();
        for _ in 0..3 {
            match Agent::try_start(bin, opts) {
                Ok(agent) => return agent,
                Err(log) => last_log = log,
            }
        }
        panic!("the consul agent did not start; its last log:\n{last_log}");
    }

    fn try_start(bin: &PathBuf, opts: &Options) -> Result<Agent, String> {
        let dir = tempfile::Builder::new()
            .prefix("consul-double-real-")
            .tempdir()
            .expect("tempdir for the consul agent");
        let http = free_port();
        let acl = match &opts.acl_token {
            None => String::new(),
            Some(t) => format!(
                "acl {{\n  enabled = true\n  default_policy = \"deny\"\n  down_policy = \"extend-cache\"\n  tokens {{\n    master = {t:?}\n    agent = {t:?}\n  }}\n}}\n"
            ),
        };
        let config = format!(
            "node_name = {node:?}\n\
             data_dir = {data:?}\n\
             server = true\n\
             bootstrap_expect = 1\n\
             performance {{\n  raft_multiplier = 1\n}}\n\
             bind_addr = \"127.0.0.1\"\n\
             client_addr = \"127.0.0.1\"\n\
             disable_update_check = true\n\
             session_ttl_min = {ttl_min:?}\n\
             ports {{\n  http = {http}\n  https = -1\n  dns = -1\n  grpc = -1\n  \
             serf_lan = {lan}\n  serf_wan = {wan}\n  server = {server}\n}}\n{acl}",
            node = opts.node_name,
            data = dir.path().join("data").display().to_string(),
            ttl_min = format_go_duration(opts.session_ttl_min),
            lan = free_port(),
            wan = free_port(),
            server = free_port(),
        );
        let config_file = dir.path().join("agent.hcl");
        fs::write(&config_file, config).expect("write agent.hcl");
        let log_file = dir.path().join("agent.log");
        let log = fs::File::create(&log_file).expect("agent.log");
        let child = Command::new(bin)
            .args(["agent", "-config-file"])
            .arg(&config_file)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        let mut agent = Agent {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], http)),
            token: opts.acl_token.clone(),
            dir,
        };
        let log_text = || fs::read_to_string(&log_file).unwrap_or_default();
        let deadline = Instant::now() + Duration::from_secs(30);
        // Ready: a leader, the node registered by the leader (with
        // serfHealth, which sessions need) and synced by the agent's own
        // anti-entropy (its tagged addresses), so that no catalog write of
        // the agent's start lands in the middle of a test.
        let health = format!("/v1/health/node/{}", opts.node_name);
        let node = format!("/v1/catalog/node/{}", opts.node_name);
        loop {
            if let Ok(Some(status)) = agent.child.try_wait() {
                return Err(format!("(exited: {status})\n{}", log_text()));
            }
            let ready = agent.try_call("GET", "/v1/status/leader").is_some_and(|r| {
                r.status == 200 && r.json().as_str().is_some_and(|l| !l.is_empty())
            }) && agent.try_call("GET", &health).is_some_and(|r| {
                r.status == 200
                    && r.json()
                        .as_array()
                        .is_some_and(|a| a.iter().any(|c| c["CheckID"] == "serfHealth"))
            }) && agent.try_call("GET", &node).is_some_and(|r| {
                r.status == 200 && !r.json()["Node"]["TaggedAddresses"]["lan_ipv4"].is_null()
            });
            if ready {
                return Ok(agent);
            }
            if Instant::now() >= deadline {
                // Dropping `agent` kills it.
                panic!(
                    "timed out after 30s waiting for the consul agent on {} to elect itself and register and sync its node; its log:\n{}",
                    agent.addr,
                    log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A request with the helpers' token; `None` while the agent is not
    /// listening yet (or resets the connection while it starts).
    fn try_call(&self, method: &str, target: &str) -> Option<Resp> {
        try_request(self.addr, method, target, &self.token_header(), b"").ok()
    }

    fn call(&self, method: &str, target: &str, body: &[u8]) -> Resp {
        request(self.addr, method, target, &self.token_header(), body)
    }

    fn token_header(&self) -> Vec<(&str, &str)> {
        self.token
            .as_deref()
            .map(|t| ("X-Consul-Token", t))
            .into_iter()
            .collect()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!(
                "----- last lines of the consul agent's log ({}) -----",
                self.addr
            );
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
        // SIGKILL by pid: a throwaway single server has nothing to leave
        // gracefully; its data dir goes with the temp dir.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `body` against the double and reports nothing else: for tests of
/// the double's own features, which a real agent does not have.
pub fn on_double(opts: Options, body: impl FnOnce(&Backend)) {
    body(&Backend::double(opts));
}

/// Runs `body` against a real Consul 1.8.7 agent, or skips (printing what
/// is missing) outside CI when there is none.
pub fn on_real(opts: Options, body: impl FnOnce(&Backend)) {
    if let Some(b) = Backend::real(opts) {
        body(&b);
    }
}

/// One test body, two backends: `both!(name)` or `both!(name, options)`
/// makes `name::double` and `name::real`, each a `#[test]` that calls
/// `fn name(s: &Backend)` with its backend. `options` (a
/// `consul_double::Options` expression) configures the double, and the real
/// agent the same way; it defaults to `conformance_options()` of the test
/// file.
#[macro_export]
macro_rules! both {
    ($name:ident) => {
        both!($name, conformance_options());
    };
    ($name:ident, $opts:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[test]
            fn double() {
                common::on_double($opts, super::$name);
            }

            #[test]
            fn real() {
                common::on_real($opts, super::$name);
            }
        }
    };
}
