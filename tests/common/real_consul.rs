//! A real Consul 1.8.7 agent for one test, as operators run it: ACLs on
//! (`default_policy = "deny"`), the HTTP API on TLS only. It is one server
//! that elects itself (`bootstrap_expect = 1`, `raft_multiplier = 1`: a
//! leader in about 2 s), with a data directory of its own; not `-dev` mode,
//! whose answers are pretty-printed as no production agent's are. It runs
//! either inside a
//! network namespace the test made, on that namespace's loopback (the hook
//! inside the namespace reaches it as it reaches its local agent in
//! production), or on the host's loopback on free ports (for tests whose
//! PostgreSQL and PgBouncer run there). Tests never share an agent. The test
//! talks to it with curl, with the management token.

use super::netns::Netns;
use super::{require_all, wait_for_some};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// The Consul binary the tests use (scripts/prereqs.sh installs it).
pub const CONSUL: &str = "/usr/local/bin/consul";

/// False (skipped, or failed under CI) when no Consul 1.8.7 is installed.
pub fn require_consul() -> bool {
    let version = Command::new(CONSUL)
        .arg("version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    require_all(&[
        (
            "Consul 1.8.7 at /usr/local/bin/consul (scripts/prereqs.sh installs it)",
            version.starts_with("Consul v1.8.7"),
        ),
        (
            "the openssl command (Debian package openssl)",
            Command::new("openssl").arg("version").output().is_ok(),
        ),
    ])
}

/// A real agent inside a namespace; killed (by pid) when dropped.
pub struct Agent {
    child: Child,
    /// The namespace it runs in; `None`: the host's.
    ns: Option<String>,
    https_port: u16,
    dir: tempfile::TempDir,
    /// The management token (Consul 1.8's `acl.tokens.master`).
    pub master: String,
}

/// A token the agent made, with its policy.
pub struct Token {
    /// What a client sends (`SecretID`).
    pub secret: String,
    /// How the token is deleted (`AccessorID`).
    pub accessor: String,
}

impl Agent {
    /// Starts an agent in `ns` and waits until it has a leader and its ACL
    /// system answers to the management token.
    pub fn start(ns: &Netns) -> Agent {
        Agent::start_in(Some(ns))
    }

    /// Starts an agent on the host's loopback, every port a free one.
    pub fn start_on_host() -> Agent {
        Agent::start_in(None)
    }

    fn start_in(ns: Option<&Netns>) -> Agent {
        let dir = tempfile::tempdir().expect("temp dir for the agent");
        // In a namespace of its own the agent has every port to itself.
        let port = |fixed: u16| {
            if ns.is_some() {
                fixed
            } else {
                super::free_port()
            }
        };
        let (https, serf_lan, serf_wan, server) = (port(8501), port(8301), port(8302), port(8300));
        super::tls::make_pki(dir.path());
        let master = uuid();
        let d = dir.path().display();
        std::fs::write(
            dir.path().join("agent.hcl"),
            format!(
                r#"node_name = "node"
server = true
bootstrap_expect = 1
data_dir = "{d}/data"
disable_update_check = true
bind_addr = "127.0.0.1"
client_addr = "127.0.0.1"
ports {{
  http = -1
  https = {https}
  dns = -1
  grpc = -1
  serf_lan = {serf_lan}
  serf_wan = {serf_wan}
  server = {server}
}}
ca_file = "{d}/ca.pem"
cert_file = "{d}/srv.pem"
key_file = "{d}/srv.key"
verify_incoming = false
performance {{
  raft_multiplier = 1
}}
session_ttl_min = "1s"
acl {{
  enabled = true
  default_policy = "deny"
  down_policy = "extend-cache"
  tokens {{
    master = "{master}"
    agent = "{master}"
  }}
}}
"#
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("agent.log")).unwrap();
        let child = in_ns(ns.map(|n| n.name()), CONSUL)
            .arg("agent")
            .arg(format!("-config-file={d}/agent.hcl"))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("starting consul agent");
        let agent = Agent {
            child,
            ns: ns.map(|n| n.name().to_string()),
            https_port: https,
            dir,
            master,
        };
        wait_for_some(
            "the real Consul agent to elect itself and answer the management token",
            Duration::from_secs(30),
            || {
                let o = agent.api("GET", "/v1/acl/token/self", None, &agent.master);
                (o.0 == 200).then_some(())
            },
        );
        agent
    }

    /// The base URL the hook uses (inside the agent's namespace).
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.https_port)
    }

    /// The CA that signed the agent's certificate (the hook's `consul.ca_file`).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The agent's log so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    /// One HTTP call with curl inside the namespace: (status, body).
    pub fn api(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        token: &str,
    ) -> (u16, Vec<u8>) {
        let out = self.curl(method, path, body, token);
        let text = out.stdout;
        // curl -w appends the status on a line of its own.
        let pos = text.iter().rposition(|b| *b == b'\n').unwrap_or(0);
        let status = String::from_utf8_lossy(&text[pos..])
            .trim()
            .parse()
            .unwrap_or(0);
        (status, text[..pos].to_vec())
    }

    fn curl(&self, method: &str, path: &str, body: Option<&[u8]>, token: &str) -> Output {
        use std::io::Write;
        let mut c = in_ns(self.ns.as_deref(), "curl");
        c.args(["-sS", "--max-time", "10", "-X", method])
            .arg("--cacert")
            .arg(self.ca_file())
            .args([
                "-H",
                &format!("X-Consul-Token: {token}"),
                "-w",
                "\n%{http_code}",
            ]);
        if body.is_some() {
            c.args(["--data-binary", "@-"]);
        }
        c.arg(format!("{}{path}", self.url()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().expect("curl");
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(body.unwrap_or_default()).unwrap();
        drop(stdin);
        child.wait_with_output().expect("curl")
    }

    /// Creates a policy from `rules` (Consul's HCL) and a token holding it.
    pub fn token(&self, name: &str, rules: &str) -> Token {
        let policy = serde_json::json!({"Name": name, "Rules": rules}).to_string();
        let (status, body) = self.api(
            "PUT",
            "/v1/acl/policy",
            Some(policy.as_bytes()),
            &self.master,
        );
        assert_eq!(
            status,
            200,
            "creating policy {name}: {}",
            String::from_utf8_lossy(&body)
        );
        let id = json(&body)["ID"].as_str().expect("policy ID").to_string();
        let token = serde_json::json!({"Description": name, "Policies": [{"ID": id}]}).to_string();
        let (status, body) = self.api("PUT", "/v1/acl/token", Some(token.as_bytes()), &self.master);
        assert_eq!(
            status,
            200,
            "creating token {name}: {}",
            String::from_utf8_lossy(&body)
        );
        let v = json(&body);
        Token {
            secret: v["SecretID"].as_str().expect("SecretID").to_string(),
            accessor: v["AccessorID"].as_str().expect("AccessorID").to_string(),
        }
    }

    /// Deletes a token, as an operator revoking it would.
    pub fn revoke(&self, t: &Token) {
        let (status, body) = self.api(
            "DELETE",
            &format!("/v1/acl/token/{}", t.accessor),
            None,
            &self.master,
        );
        assert_eq!(
            status,
            200,
            "revoking a token: {}",
            String::from_utf8_lossy(&body)
        );
    }

    /// Plain PUT with the management token.
    pub fn kv_put(&self, key: &str, value: &[u8]) {
        let (status, body) = self.api("PUT", &format!("/v1/kv/{key}"), Some(value), &self.master);
        assert_eq!(
            (status, body.trim_ascii()),
            (200, &b"true"[..]),
            "PUT {key}"
        );
    }

    /// The entry at `key`, if any, read with the management token.
    pub fn kv_get(&self, key: &str) -> Option<consul_double::Entry> {
        use base64::Engine as _;
        let (status, body) = self.api("GET", &format!("/v1/kv/{key}"), None, &self.master);
        if status == 404 {
            return None;
        }
        assert_eq!(status, 200, "GET {key}: {}", String::from_utf8_lossy(&body));
        let v = &json(&body)[0];
        let num = |f: &str| v[f].as_u64().unwrap_or(0);
        Some(consul_double::Entry {
            key: v["Key"].as_str().unwrap_or_default().to_string(),
            value: v["Value"]
                .as_str()
                .map(|b| {
                    base64::engine::general_purpose::STANDARD
                        .decode(b)
                        .expect("base64 value")
                })
                .unwrap_or_default(),
            create_index: num("CreateIndex"),
            modify_index: num("ModifyIndex"),
            lock_index: num("LockIndex"),
            flags: num("Flags"),
            session: v["Session"].as_str().map(str::to_string),
        })
    }

    /// DELETE with the management token.
    pub fn kv_delete(&self, key: &str) {
        let (status, _) = self.api("DELETE", &format!("/v1/kv/{key}"), None, &self.master);
        assert_eq!(status, 200, "DELETE {key}");
    }

    /// The KV table's index (`X-Consul-Index` of a missing key): moves on
    /// every write anywhere in the KV store.
    pub fn kv_index(&self) -> u64 {
        let out = in_ns(self.ns.as_deref(), "curl")
            .args(["-sS", "-o", "/dev/null", "-D", "-", "--cacert"])
            .arg(self.ca_file())
            .args(["-H", &format!("X-Consul-Token: {}", self.master)])
            .arg(format!("{}/v1/kv/phk-no-such-key", self.url()))
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("x-consul-index")
                    .then(|| value.trim().parse().ok())
                    .flatten()
            })
            .expect("X-Consul-Index")
    }

    /// Freezes the agent (SIGSTOP): it accepts connections and never
    /// answers, as a hung Consul does.
    pub fn freeze(&self) {
        signal(&self.child, "STOP");
    }

    /// Thaws a frozen agent.
    pub fn thaw(&self) {
        signal(&self.child, "CONT");
    }

    /// Where the agent keeps its files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        signal(&self.child, "CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `program` in namespace `ns`, or on the host.
pub fn in_ns(ns: Option<&str>, program: &str) -> Command {
    match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, program]);
            c
        }
        None => Command::new(program),
    }
}

/// Sends `sig` (a name: STOP, CONT, TERM...) to `child`.
pub fn signal(child: &Child, sig: &str) {
    let _ = Command::new("kill")
        .args([format!("-{sig}"), child.id().to_string()])
        .status();
}

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)))
}

/// A random UUID (a management token) from the kernel.
fn uuid() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .expect("a UUID from the kernel")
        .trim()
        .to_string()
}
