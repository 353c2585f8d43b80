//! The Consul a test talks to from the host's namespace: the in-repo double
//! started in this process, a real Consul 1.8.7 agent of the test's own
//! (ACLs and TLS, tests/common/real_consul.rs), or a real agent an operator
//! names with `CONSUL_HTTP_ADDR` (docs/design.md, "How it is tested").
//!
//! With a real agent, every test works under its own KV namespace
//! (`phk-<pid>-<n>`), so runs never see each other's keys, and removes it at
//! the end. Tests whose hook runs inside a private network namespace cannot
//! reach a host agent and use the double (`Consul::double_on`).

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A Consul for one test.
pub enum Consul {
    /// The in-repo double.
    Double(consul_double::Server),
    /// A real agent of this test's, on the host's loopback, and the token
    /// the hook uses.
    Real(Box<super::real_consul::Agent>, super::real_consul::Token),
    /// A real etcd 3.4 of this test's on the host's loopback (mutual TLS,
    /// auth with the kit's roles), the hook as the PgBouncer host's
    /// user; keys in the Consul spelling map to etcd's (`/service/...`).
    Etcd(Box<super::real_etcd::Etcd>),
    /// A real agent at this base URL, under a private namespace.
    External {
        /// Base URL.
        url: String,
        /// KV namespace private to this test.
        namespace: String,
    },
}

impl Consul {
    /// A real agent if `CONSUL_HTTP_ADDR` is set, else a double on 127.0.0.1.
    pub fn start() -> Consul {
        match consul_double::external_consul() {
            Some(url) => Consul::External {
                url,
                namespace: format!(
                    "phk-{}-{}",
                    std::process::id(),
                    NEXT.fetch_add(1, Ordering::SeqCst)
                ),
            },
            None => Consul::Double(
                consul_double::Server::start(consul_double::Options::default())
                    .expect("starting the Consul double"),
            ),
        }
    }

    /// A real agent of this test's with ACLs on and TLS; the hook's token
    /// holds `rules`. `None` when Consul 1.8.7 is missing outside CI.
    pub fn real(rules: &str) -> Option<Consul> {
        if !super::real_consul::require_consul() {
            return None;
        }
        let agent = super::real_consul::Agent::start_on_host();
        let token = agent.token("hook", rules);
        Some(Consul::Real(Box::new(agent), token))
    }

    /// A real etcd of this test's with mutual TLS and auth; the hook is the
    /// PgBouncer host's user. `None` when etcd 3.4 is missing outside CI.
    pub fn etcd() -> Option<Consul> {
        if !super::real_etcd::require_etcd() {
            return None;
        }
        Some(Consul::Etcd(Box::new(super::real_etcd::Etcd::start(
            None,
            super::real_etcd::Opts::SECURE,
        ))))
    }

    /// The hook's whole DCS section for this store, its address `url` (from
    /// `url()` or `endpoint()`), timeout 1 s; credentials written into `dir`.
    pub fn dcs_section(&self, dir: &std::path::Path, url: &str) -> String {
        match self {
            Consul::Etcd(e) => format!(
                "dcs: etcd3\netcd3:\n{}  timeout: 1s\n",
                e.hook_settings(dir, "patroni-hook-pgbouncer").replace(
                    &format!("  hosts: {}\n", e.hosts()),
                    &format!("  hosts: {url}\n")
                )
            ),
            _ => format!(
                "consul:\n  url: {url}\n  namespace: {}\n  timeout: 1s\n{}",
                self.namespace(),
                self.hook_settings(dir)
            ),
        }
    }

    /// What stands for `url()` to send the hook to `addr` (`127.0.0.1:port`)
    /// instead: `http://addr` on Consul, `addr` on etcd.
    pub fn endpoint(&self, addr: &str) -> String {
        match self {
            Consul::Etcd(_) => addr.to_string(),
            _ => format!("http://{addr}"),
        }
    }

    /// The hook's `consul:` settings besides `url`, `namespace` and
    /// `timeout` (each line indented by two spaces): the CA and a token file
    /// written into `dir` for a real agent of the test's.
    pub fn hook_settings(&self, dir: &std::path::Path) -> String {
        match self {
            Consul::Real(a, t) => {
                let tf = dir.join("consul.token");
                std::fs::write(&tf, format!("{}\n", t.secret)).unwrap();
                format!(
                    "  ca_file: {}\n  token_file: {}\n",
                    a.ca_file().display(),
                    tf.display()
                )
            }
            _ => String::new(),
        }
    }

    /// Base URL for the hook's `consul.url`.
    pub fn url(&self) -> String {
        match self {
            Consul::Real(a, _) => a.url(),
            Consul::Double(s) => s.url(),
            Consul::Etcd(e) => e.hosts(),
            Consul::External { url, .. } => url.clone(),
        }
    }

    /// The hook's `consul.namespace` for this test (Patroni's default with the double).
    pub fn namespace(&self) -> String {
        match self {
            Consul::Double(_) | Consul::Real(..) | Consul::Etcd(_) => "service".into(),
            Consul::External { namespace, .. } => namespace.clone(),
        }
    }

    /// `<namespace>/<rest>`.
    pub fn key(&self, rest: &str) -> String {
        format!("{}/{rest}", self.namespace())
    }

    /// Plain PUT.
    pub fn put(&self, key: &str, value: &[u8]) {
        match self {
            Consul::Real(a, _) => a.kv_put(key, value),
            Consul::Double(s) => s.kv_put(key, value),
            Consul::Etcd(e) => e.put(key, value),
            Consul::External { url, .. } => {
                let out = curl(
                    &[
                        "-X",
                        "PUT",
                        "--data-binary",
                        "@-",
                        &format!("{url}/v1/kv/{key}"),
                    ],
                    value,
                );
                assert_eq!(out.trim(), "true", "PUT {key}");
            }
        }
    }

    /// Value and ModifyIndex of a key.
    pub fn get(&self, key: &str) -> Option<(Vec<u8>, u64)> {
        match self {
            Consul::Real(a, _) => a.kv_get(key).map(|e| (e.value, e.modify_index)),
            Consul::Double(s) => s.kv_get(key).map(|e| (e.value, e.modify_index)),
            Consul::Etcd(e) => e.get(key),
            Consul::External { url, .. } => {
                let out = curl(&[&format!("{url}/v1/kv/{key}")], b"");
                if out.trim().is_empty() {
                    return None;
                }
                let v: serde_json::Value = serde_json::from_str(&out).expect("Consul KV JSON");
                let e = &v[0];
                let value = match e["Value"].as_str() {
                    None => Vec::new(),
                    Some(b) => {
                        use base64::Engine as _;
                        base64::engine::general_purpose::STANDARD.decode(b).unwrap()
                    }
                };
                Some((value, e["ModifyIndex"].as_u64().unwrap()))
            }
        }
    }

    /// Plain DELETE.
    pub fn delete(&self, key: &str) {
        match self {
            Consul::Real(a, _) => a.kv_delete(key),
            Consul::Double(s) => s.kv_delete(key),
            Consul::Etcd(e) => e.delete(key),
            Consul::External { url, .. } => {
                curl(&["-X", "DELETE", &format!("{url}/v1/kv/{key}")], b"");
            }
        }
    }
}

impl Drop for Consul {
    fn drop(&mut self) {
        if let Consul::External { url, namespace } = self {
            curl(
                &["-X", "DELETE", &format!("{url}/v1/kv/{namespace}/?recurse")],
                b"",
            );
        }
    }
}

/// Runs curl with the agent's token from the environment, feeding `body`.
fn curl(args: &[&str], body: &[u8]) -> String {
    use std::io::Write;
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "--max-time", "5"]);
    if let Ok(t) = std::env::var("CONSUL_HTTP_TOKEN") {
        cmd.args(["-H", &format!("X-Consul-Token: {t}")]);
    }
    let mut child = cmd
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("curl (scripts/test.sh installs it)");
    child.stdin.take().unwrap().write_all(body).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}
