//! The YAML configuration: raw serde shape, validation, and the validated `Config`.
//!
//! `from_str` is pure (it needs the host name and the environment's token only
//! as arguments), so every error message is unit-tested. Errors name the file,
//! the key (as a dotted path) and what was expected; unknown keys are refused.

use crate::error::{Error, Result};
use ipnet::IpNet;
use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod etcd3;
pub use etcd3::Etcd3Config;

/// Where the configuration is looked for when neither `--config` nor
/// `$PATRONI_HOOK_CONFIG` names one.
pub const DEFAULT_PATH: &str = "/etc/patroni-hook/config.yml";

/// The shortest `consul.timeout` or `etcd3.timeout`: a round trip to a
/// local agent takes a millisecond or two, a consistent read a few more.
const MIN_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(50);

/// Default lock file; its directory comes from the shipped tmpfiles.d entry,
/// owned by the Patroni user.
pub const DEFAULT_LOCK_FILE: &str = "/run/patroni-hook/patroni-hook.lock";

/// A secret that never prints itself (Debug and Display are redacted).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret value, for the one place that sends it (the HTTP header).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from, for messages.
    pub path: PathBuf,
    /// This node's Patroni member name.
    pub name: String,
    /// Scope used when the command line gives none.
    pub scope: Option<String>,
    /// A whole run ends within this.
    pub deadline: Duration,
    /// The per-host lock serialising runs.
    pub lock_file: PathBuf,
    /// Where Patroni keeps its state, and how to reach it.
    pub dcs: DcsConfig,
    /// VIP management on this host, if any.
    pub vip: Option<VipConfig>,
    /// PgBouncer management on this host, if any.
    pub pgbouncer: Option<PgbouncerConfig>,
    /// What `before-stop` does on a database node.
    pub before_stop: BeforeStopConfig,
    /// The node_exporter textfile each run rewrites, if any.
    pub metrics: Option<PathBuf>,
}

/// `before-stop` on a database node: ask the PgBouncer hosts to pause the
/// cluster's databases right before PostgreSQL stops, and wait for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BeforeStopConfig {
    /// At most this long for the confirmations (Patroni waits for before_stop).
    pub wait: Duration,
    /// How many PgBouncer hosts must confirm their pause.
    pub confirmations: u32,
}

impl Default for BeforeStopConfig {
    fn default() -> Self {
        BeforeStopConfig {
            wait: Duration::from_secs(1),
            confirmations: 1,
        }
    }
}

/// When the PgBouncer host pauses a cluster's databases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PauseOn {
    /// Planned events: a switchover or manual failover (asked for by the old
    /// primary's `before-stop`).
    Switchover,
    /// Also an unplanned failover: while the cluster has no leader key.
    Always,
    /// Never: a reload only, as without an admin console.
    Never,
}

/// How to reach PgBouncer's admin console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// Unix socket directory (`unix_socket_dir`), or a host name or address.
    pub host: AdminHost,
    /// `listen_port`.
    pub port: u16,
    /// A user in `admin_users`; none: the user this process runs as
    /// (looked up when the console is used: most runs never need it).
    pub user: Option<String>,
    /// A file holding the password, when the console asks for one.
    pub password_file: Option<PathBuf>,
}

/// Where the admin console listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminHost {
    /// A Unix socket directory.
    Socket(PathBuf),
    /// A TCP host.
    Tcp(String),
}

/// The DCS Patroni keeps its state in (`dcs:`), and how to reach it.
#[derive(Debug, Clone)]
pub enum DcsConfig {
    /// The `consul` section.
    Consul(ConsulConfig),
    /// The `etcd3` section.
    Etcd3(Etcd3Config),
}

impl DcsConfig {
    /// The prefix of Patroni's keys: `service` on Consul, `/service` on etcd.
    pub fn namespace(&self) -> &str {
        match self {
            DcsConfig::Consul(c) => &c.namespace,
            DcsConfig::Etcd3(e) => &e.namespace,
        }
    }

    /// Its section in the file, for messages naming a key (`consul.namespace`).
    pub fn section(&self) -> &'static str {
        match self {
            DcsConfig::Consul(_) => "consul",
            DcsConfig::Etcd3(_) => "etcd3",
        }
    }

    /// The DCS as an operator names it in a message.
    pub fn name(&self) -> &'static str {
        match self {
            DcsConfig::Consul(_) => "Consul",
            DcsConfig::Etcd3(_) => "etcd",
        }
    }

    /// The per-call timeout.
    pub fn timeout(&self) -> Duration {
        match self {
            DcsConfig::Consul(c) => c.timeout,
            DcsConfig::Etcd3(e) => e.timeout,
        }
    }

    /// Where it is reached: the agent's URL, or the etcd members'.
    pub fn urls(&self) -> String {
        match self {
            DcsConfig::Consul(c) => c.url.clone(),
            DcsConfig::Etcd3(e) => e.urls.join(","),
        }
    }

    /// The Consul section, when Consul is the DCS.
    pub fn consul(&self) -> Option<&ConsulConfig> {
        match self {
            DcsConfig::Consul(c) => Some(c),
            DcsConfig::Etcd3(_) => None,
        }
    }
}

/// How to reach Consul.
#[derive(Debug, Clone)]
pub struct ConsulConfig {
    /// Base URL of the local agent, without a trailing slash.
    pub url: String,
    /// Patroni's namespace, without slashes at either end.
    pub namespace: String,
    /// ACL token, from `token_file` or `$CONSUL_HTTP_TOKEN`; an unreadable
    /// token file is an error reported by the first Consul call.
    pub token: Result<Option<Secret>, Error>,
    /// CA bundle for https.
    pub ca_file: Option<PathBuf>,
    /// Per HTTP call.
    pub timeout: Duration,
}

/// The floating IP on this host.
#[derive(Debug, Clone)]
pub struct VipConfig {
    /// Fixed address; `None` means read `<ns>/<scope>/floating-ip` from Consul.
    pub address: Option<IpNet>,
    /// Interface that carries it.
    pub interface: String,
    /// Gratuitous ARP / unsolicited NA packets sent after adding.
    pub gratuitous_arp: u32,
    /// Whether a standby leader holds the VIP like a primary.
    pub standby_leader: bool,
}

/// PgBouncer on this host.
#[derive(Debug, Clone)]
pub struct PgbouncerConfig {
    /// The ini file whose `[databases]` entries are managed.
    pub ini: PathBuf,
    /// PgBouncer's pidfile, for SIGHUP.
    pub pidfile: PathBuf,
    /// Clusters and the entries that follow each.
    pub clusters: Vec<Cluster>,
    /// The admin console, for PAUSE, RESUME and RELOAD.
    pub admin: Option<AdminConfig>,
    /// When to pause.
    pub pause_on: PauseOn,
    /// The longest a pause lasts: PAUSE must complete within it, and a pause
    /// is undone once it has passed, whatever happens.
    pub pause_timeout: Duration,
    /// The CA that members' https REST APIs are verified against (the
    /// check that a new leader is writable before a resume).
    pub patroni_ca_file: Option<PathBuf>,
}

/// One Patroni cluster followed by PgBouncer entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// Patroni scope.
    pub scope: String,
    /// `[databases]` entry names that follow this cluster.
    pub databases: Vec<String>,
    /// Point them at the leader's address or at the VIP.
    pub target: TargetKind,
}

/// What a managed entry points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    /// The leader member's `conn_url` host and port.
    Leader,
    /// The cluster's floating IP, with the leader's port.
    Vip,
}

// ---- raw shape ----------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    name: Option<String>,
    scope: Option<String>,
    deadline: Option<String>,
    lock_file: Option<PathBuf>,
    dcs: Option<String>,
    #[serde(default, deserialize_with = "present")]
    consul: Option<Option<RawConsul>>,
    #[serde(default, deserialize_with = "present")]
    etcd3: Option<Option<etcd3::RawEtcd3>>,
    #[serde(default, deserialize_with = "present")]
    vip: Option<Option<RawVip>>,
    #[serde(default, deserialize_with = "present")]
    pgbouncer: Option<Option<RawPgbouncer>>,
    #[serde(default, deserialize_with = "present")]
    before_stop: Option<Option<RawBeforeStop>>,
    #[serde(default, deserialize_with = "present")]
    metrics: Option<Option<RawMetrics>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    textfile: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBeforeStop {
    wait: Option<String>,
    confirmations: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    socket_dir: Option<PathBuf>,
    host: Option<String>,
    port: Option<u16>,
    user: Option<String>,
    password_file: Option<PathBuf>,
}

/// Tells a key written with no value (`vip:`) from a key not written: the
/// first is `Some(None)`, and refused, since an operator who wrote `vip:`
/// meant a VIP.
fn present<'de, T, D>(d: D) -> std::result::Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: serde::Deserializer<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// A section that is present must have content.
fn section<T>(path: &Path, key: &str, v: Option<Option<T>>) -> Result<Option<T>> {
    match v {
        None => Ok(None),
        Some(Some(t)) => Ok(Some(t)),
        Some(None) => Err(Error::config(
            path,
            key,
            "written with no value: expected its settings, or leave the key out",
        )),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConsul {
    url: Option<String>,
    namespace: Option<String>,
    token_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    timeout: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVip {
    address: Option<String>,
    interface: String,
    gratuitous_arp: Option<u32>,
    standby_leader: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPgbouncer {
    ini: PathBuf,
    pidfile: PathBuf,
    clusters: Vec<RawCluster>,
    #[serde(default, deserialize_with = "present")]
    admin: Option<Option<RawAdmin>>,
    pause_on: Option<PauseOn>,
    pause_timeout: Option<String>,
    patroni_ca_file: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    scope: String,
    databases: Vec<String>,
    target: Option<TargetKind>,
}

/// What `from_str` needs from the environment, passed in so it stays pure.
#[derive(Debug, Clone, Default)]
pub struct Env {
    /// The host name, default for `name`.
    pub hostname: String,
    /// `$CONSUL_HTTP_TOKEN`, used when no `token_file` is configured.
    pub consul_http_token: Option<String>,
}

impl Env {
    /// Reads the host name and `$CONSUL_HTTP_TOKEN` from this process.
    pub fn from_process() -> Self {
        let hostname = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default();
        Env {
            hostname,
            consul_http_token: std::env::var("CONSUL_HTTP_TOKEN")
                .ok()
                .filter(|t| !t.trim().is_empty()),
        }
    }
}

/// The configuration path: `--config`, then `$PATRONI_HOOK_CONFIG`, then the default.
pub fn resolve_path(flag: Option<&Path>) -> PathBuf {
    if let Some(p) = flag {
        return p.to_path_buf();
    }
    match std::env::var_os("PATRONI_HOOK_CONFIG") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(DEFAULT_PATH),
    }
}

/// Reads and validates the configuration file (and the token file it names).
pub fn load(path: &Path, env: &Env) -> Result<Config> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::usage(format!("{}: cannot read: {e}", path.display())))?;
    let cfg = from_str(&text, path, env, &|p: &Path| std::fs::read_to_string(p))?;
    // Read now, not at the first switchover that needs it.
    if let Some(ca) = cfg
        .pgbouncer
        .as_ref()
        .and_then(|p| p.patroni_ca_file.as_ref())
    {
        crate::tls::read_ca(ca, "pgbouncer.patroni_ca_file")
            .map_err(|e| Error::usage(format!("{}: {e}", path.display())))?;
    }
    Ok(cfg)
}

/// A command that would refuse a configuration the parser accepts: what
/// each command checks only when it runs, decided on the file alone so
/// that `check-config` can say it first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The key (or keys) at fault.
    pub key: &'static str,
    /// What is wrong, and which commands refuse it.
    pub why: &'static str,
    /// The commands that refuse it (exit 2), as an operator meets them.
    pub commands: &'static str,
}

/// What the commands would refuse in `cfg` (pure; `check-config` reports
/// each and exits 2, so that its advice never leads to a failing timer).
pub fn refusals(cfg: &Config) -> Vec<Refusal> {
    let mut r = Vec::new();
    if cfg.vip.is_none() && cfg.pgbouncer.is_none() {
        r.push(Refusal {
            key: "vip, pgbouncer",
            why: "neither section is set, so there is nothing to reconcile: add vip on a database node, pgbouncer on the PgBouncer host",
            commands: "reconcile refuses it at every run (exit 2), and so would patroni-hook-reconcile.timer",
        });
    }
    // Patroni passes the scope to the callbacks only: reconcile (the timer)
    // and before-stop (run with no arguments) read it from the file.
    if cfg.scope.is_none() && cfg.vip.is_some() {
        r.push(Refusal {
            key: "scope",
            why: "not set: the vip section needs the Patroni scope",
            commands: "reconcile (and patroni-hook-reconcile.timer) and before-stop refuse it (exit 2); the callbacks get it from Patroni",
        });
    } else if cfg.scope.is_none() && cfg.pgbouncer.is_none() {
        r.push(Refusal {
            key: "scope",
            why: "not set: a database node needs the Patroni scope",
            commands: "before-stop (run by Patroni with no arguments) refuses it (exit 2) unless given --scope",
        });
    }
    r
}

/// Parses and validates configuration text. `read_token` reads `token_file`.
pub fn from_str(
    text: &str,
    path: &Path,
    env: &Env,
    read_token: &dyn Fn(&Path) -> std::io::Result<String>,
) -> Result<Config> {
    if text.trim().is_empty() {
        return Err(Error::usage(format!(
            "{}: the file is empty: expected at least the vip or pgbouncer section",
            path.display()
        )));
    }
    let de = serde_yaml::Deserializer::from_str(text);
    let raw: RawConfig = match serde_path_to_error::deserialize(de) {
        Ok(raw) => raw,
        Err(e) => return Err(yaml_error(path, e)),
    };
    let bad = |key: &str, expected: &str| Error::config(path, key, expected);

    let name = match raw.name {
        Some(n) => n,
        None => env.hostname.clone(),
    };
    if !crate::dcs::keys::is_member_name(&name) {
        return Err(bad(
            "name",
            "expected the Patroni member name (no slashes, spaces or control characters)",
        ));
    }
    if let Some(s) = &raw.scope {
        if !crate::dcs::keys::is_member_name(s) {
            return Err(bad("scope", "expected a Patroni scope name"));
        }
    }
    let deadline = duration(path, "deadline", raw.deadline.as_deref(), "5s")?;
    if deadline < crate::budget::MIN_DEADLINE {
        return Err(bad(
            "deadline",
            &format!(
                "expected at least {} (room for a DCS call and the local steps), such as 5s",
                humantime::format_duration(crate::budget::MIN_DEADLINE)
            ),
        ));
    }
    let lock_file = raw
        .lock_file
        .unwrap_or_else(|| PathBuf::from(DEFAULT_LOCK_FILE));
    if !lock_file.is_absolute() || lock_file.file_name().is_none() {
        return Err(bad(
            "lock_file",
            "expected an absolute path to a file, such as /run/patroni-hook/patroni-hook.lock",
        ));
    }

    let consul = section(path, "consul", raw.consul)?;
    let etcd = section(path, "etcd3", raw.etcd3)?;
    let dcs = match (raw.dcs.as_deref().map(str::trim), consul, etcd) {
        (Some("consul") | None, c, None) => {
            DcsConfig::Consul(self::consul(path, c.unwrap_or_default(), env, read_token)?)
        }
        (Some("etcd3") | None, None, Some(e)) => {
            DcsConfig::Etcd3(etcd3::etcd3(path, e, read_token)?)
        }
        (Some("etcd3"), _, None) => {
            return Err(bad(
                "etcd3",
                "expected with dcs: etcd3 (at least the etcd members' hosts)",
            ))
        }
        (Some("consul"), _, Some(_)) => {
            return Err(bad("etcd3", "set, but dcs says consul: remove one of them"))
        }
        (Some("etcd3"), Some(_), Some(e)) => {
            // Both written with the choice made: the other section is kept
            // for a move between the two, and ignored.
            DcsConfig::Etcd3(etcd3::etcd3(path, e, read_token)?)
        }
        (None, Some(_), Some(_)) => {
            return Err(bad(
                "dcs",
                "expected consul or etcd3: both sections are set",
            ))
        }
        (Some(_), _, _) => {
            return Err(bad("dcs", "expected consul or etcd3"));
        }
    };

    let vip = section(path, "vip", raw.vip)?
        .map(|v| vip(path, v))
        .transpose()?;
    let pgbouncer = section(path, "pgbouncer", raw.pgbouncer)?
        .map(|p| pgbouncer(path, p))
        .transpose()?;
    let before_stop = match section(path, "before_stop", raw.before_stop)? {
        None => BeforeStopConfig::default(),
        Some(b) => before_stop(path, b, deadline)?,
    };
    let metrics = section(path, "metrics", raw.metrics)?
        .map(|m| metrics(path, m))
        .transpose()?;

    Ok(Config {
        path: path.to_path_buf(),
        name,
        scope: raw.scope,
        deadline,
        lock_file,
        dcs,
        vip,
        pgbouncer,
        before_stop,
        metrics,
    })
}

/// The `vip` section.
fn vip(path: &Path, v: RawVip) -> Result<VipConfig> {
    let bad = |key: &str, expected: &str| Error::config(path, key, expected);
    let address = match v.address.as_deref() {
        None => None,
        Some(a) => Some(crate::dcs::keys::parse_vip(a).map_err(|why| bad("vip.address", &why))?),
    };
    if !is_interface_name(&v.interface) {
        return Err(bad(
            "vip.interface",
            "expected a network interface name (1-15 characters, no '/' or spaces)",
        ));
    }
    let gratuitous_arp = v.gratuitous_arp.unwrap_or(3);
    if gratuitous_arp > 100 {
        return Err(bad("vip.gratuitous_arp", "expected a count from 0 to 100"));
    }
    Ok(VipConfig {
        address,
        interface: v.interface,
        gratuitous_arp,
        standby_leader: v.standby_leader.unwrap_or(false),
    })
}

/// The `pgbouncer` section: its clusters, its admin console and when to pause.
fn pgbouncer(path: &Path, p: RawPgbouncer) -> Result<PgbouncerConfig> {
    let bad = |key: &str, expected: &str| Error::config(path, key, expected);
    let clusters = clusters(path, p.clusters)?;
    let admin = match section(path, "pgbouncer.admin", p.admin)? {
        None => None,
        Some(a) => Some(admin(path, a)?),
    };
    let pause_on = match (p.pause_on, &admin) {
        (Some(PauseOn::Never), _) => PauseOn::Never,
        (Some(on), Some(_)) => on,
        (None, Some(_)) => PauseOn::Switchover,
        (None, None) => PauseOn::Never,
        (Some(_), None) => {
            return Err(bad(
                "pgbouncer.pause_on",
                "expected pgbouncer.admin too: pausing needs the admin console",
            ))
        }
    };
    let pause_timeout = duration(
        path,
        "pgbouncer.pause_timeout",
        p.pause_timeout.as_deref(),
        "10s",
    )?;
    if pause_timeout < Duration::from_secs(1) {
        return Err(bad(
            "pgbouncer.pause_timeout",
            "expected at least 1s: a switchover takes a few seconds",
        ));
    }
    if p.patroni_ca_file
        .as_ref()
        .is_some_and(|f| f.as_os_str().is_empty())
    {
        return Err(bad(
            "pgbouncer.patroni_ca_file",
            "expected a path to a PEM file",
        ));
    }
    Ok(PgbouncerConfig {
        ini: p.ini,
        pidfile: p.pidfile,
        clusters,
        admin,
        pause_on,
        pause_timeout,
        patroni_ca_file: p.patroni_ca_file,
    })
}

/// `pgbouncer.clusters`: each entry name is managed by one cluster only.
fn clusters(path: &Path, raw: Vec<RawCluster>) -> Result<Vec<Cluster>> {
    let bad = |key: &str, expected: &str| Error::config(path, key, expected);
    if raw.is_empty() {
        return Err(bad("pgbouncer.clusters", "expected at least one cluster"));
    }
    let mut clusters = Vec::new();
    let mut seen_db = std::collections::BTreeSet::new();
    for (i, c) in raw.into_iter().enumerate() {
        if !crate::dcs::keys::is_member_name(&c.scope) {
            return Err(bad(
                &format!("pgbouncer.clusters[{i}].scope"),
                "expected a Patroni scope name",
            ));
        }
        if c.databases.is_empty() {
            return Err(bad(
                &format!("pgbouncer.clusters[{i}].databases"),
                "expected at least one [databases] entry name",
            ));
        }
        for d in &c.databases {
            if d.is_empty() || d.chars().any(|ch| ch.is_control() || ch == '=') {
                return Err(bad(
                    &format!("pgbouncer.clusters[{i}].databases"),
                    &format!("expected [databases] entry names, got {d:?}"),
                ));
            }
            if !seen_db.insert(d.clone()) {
                return Err(bad(
                    &format!("pgbouncer.clusters[{i}].databases"),
                    &format!("entry {d:?} is managed by two clusters"),
                ));
            }
        }
        clusters.push(Cluster {
            scope: c.scope,
            databases: c.databases,
            target: c.target.unwrap_or(TargetKind::Leader),
        });
    }
    Ok(clusters)
}

/// The `before_stop` section; its wait fits in the run's deadline.
fn before_stop(path: &Path, b: RawBeforeStop, deadline: Duration) -> Result<BeforeStopConfig> {
    let bad = |key: &str, expected: &str| Error::config(path, key, expected);
    let wait = duration(path, "before_stop.wait", b.wait.as_deref(), "1s")?;
    if wait > deadline {
        return Err(bad(
            "before_stop.wait",
            &format!(
                "expected at most the deadline ({}): every run ends by it",
                humantime::format_duration(deadline)
            ),
        ));
    }
    let confirmations = b.confirmations.unwrap_or(1);
    if confirmations == 0 {
        return Err(bad(
            "before_stop.confirmations",
            "expected at least 1 (leave before-stop out of Patroni's config to pause nothing)",
        ));
    }
    Ok(BeforeStopConfig {
        wait,
        confirmations,
    })
}

/// The `metrics` section.
fn metrics(path: &Path, m: RawMetrics) -> Result<PathBuf> {
    let t = m.textfile;
    // node_exporter's textfile collector reads *.prom files only.
    if !t.is_absolute() || t.extension().and_then(|e| e.to_str()) != Some("prom") {
        return Err(Error::config(
            path,
            "metrics.textfile",
            "expected an absolute path ending in .prom, in node_exporter's --collector.textfile.directory",
        ));
    }
    Ok(t)
}

fn admin(path: &Path, a: RawAdmin) -> Result<AdminConfig> {
    let bad = |key: &str, expected: &str| Error::config(path, key, expected);
    let host = match (a.socket_dir, a.host) {
        (Some(d), None) if d.is_absolute() => AdminHost::Socket(d),
        (Some(_), None) => {
            return Err(bad(
                "pgbouncer.admin.socket_dir",
                "expected an absolute path (PgBouncer's unix_socket_dir)",
            ))
        }
        (None, Some(h)) => {
            crate::pooler::ini::validate_host(&h)
                .map_err(|e| bad("pgbouncer.admin.host", &e.to_string()))?;
            AdminHost::Tcp(h)
        }
        (None, None) => AdminHost::Socket(PathBuf::from("/var/run/postgresql")),
        (Some(_), Some(_)) => {
            return Err(bad(
                "pgbouncer.admin",
                "expected socket_dir or host, not both",
            ))
        }
    };
    let user = match a.user {
        Some(u) if crate::dcs::keys::is_member_name(&u) => Some(u),
        Some(_) => return Err(bad("pgbouncer.admin.user", "expected a user name")),
        None => None,
    };
    Ok(AdminConfig {
        host,
        port: a.port.unwrap_or(6432),
        user,
        password_file: a.password_file,
    })
}

/// The `consul` section (all of it optional).
fn consul(
    path: &Path,
    raw: RawConsul,
    env: &Env,
    read_token: &dyn Fn(&Path) -> std::io::Result<String>,
) -> Result<ConsulConfig> {
    let bad = |key: &str, expected: &str| Error::config(path, key, expected);
    let url = consul_url(path, raw.url, raw.ca_file.is_some())?;
    let namespace = raw.namespace.unwrap_or_else(|| "service".to_string());
    let namespace = squeeze_slashes(&namespace).trim_matches('/').to_string();
    if namespace.is_empty()
        || namespace
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(bad(
            "consul.namespace",
            "expected Patroni's namespace, such as service",
        ));
    }
    let token = consul_token(path, raw.token_file, env, read_token);
    if let Some(ca) = &raw.ca_file {
        if ca.as_os_str().is_empty() {
            return Err(bad("consul.ca_file", "expected a path to a PEM file"));
        }
    }
    let timeout = duration(path, "consul.timeout", raw.timeout.as_deref(), "2s")?;
    if timeout < MIN_TIMEOUT {
        return Err(bad(
            "consul.timeout",
            &format!(
                "expected at least {} (no DCS answers sooner), such as 2s",
                humantime::format_duration(MIN_TIMEOUT)
            ),
        ));
    }
    Ok(ConsulConfig {
        url,
        namespace,
        token,
        ca_file: raw.ca_file,
        timeout,
    })
}

/// Repeated slashes as one, as Patroni makes its keys' prefix
/// (`re.sub('/+', '/', ...)`): `pg//prod` is where Patroni writes `pg/prod`.
fn squeeze_slashes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if !(c == '/' && out.ends_with('/')) {
            out.push(c);
        }
    }
    out
}

/// `consul.url`: scheme://host[:port], https only with a CA file.
fn consul_url(path: &Path, url: Option<String>, has_ca_file: bool) -> Result<String> {
    let bad = |key: &str, expected: &str| Error::config(path, key, expected);
    let url = url.unwrap_or_else(|| "http://127.0.0.1:8500".to_string());
    let url = url.trim_end_matches('/').to_string();
    let rest = if let Some(r) = url.strip_prefix("http://") {
        r
    } else if let Some(r) = url.strip_prefix("https://") {
        if !has_ca_file {
            return Err(bad(
                "consul.ca_file",
                "expected a CA file when consul.url is https",
            ));
        }
        r
    } else {
        return Err(bad(
            "consul.url",
            "expected an http:// or https:// URL such as http://127.0.0.1:8500",
        ));
    };
    if rest.is_empty()
        || rest.contains('/')
        || rest.contains('@')
        || rest.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(bad(
            "consul.url",
            "expected scheme://host[:port] with no path or user info",
        ));
    }
    // What the HTTP client will make of it: a port past 65535 or a broken
    // IPv6 literal must fail here, not at every run.
    match reqwest::Url::parse(&url) {
        Ok(u) if u.host().is_some() => Ok(url),
        Ok(_) => Err(bad("consul.url", "expected a host")),
        Err(e) => Err(bad(
            "consul.url",
            &format!("not a URL the HTTP client accepts: {e}"),
        )),
    }
}

/// The ACL token: `consul.token_file`, else `$CONSUL_HTTP_TOKEN`.
///
/// A token file that cannot be read is kept as an error for the first
/// Consul call rather than refused here: a release must still remove the
/// VIP (it needs no Consul) when the token file is briefly unreadable
/// during a rotation. check-config reports it.
fn consul_token(
    path: &Path,
    token_file: Option<PathBuf>,
    env: &Env,
    read_token: &dyn Fn(&Path) -> std::io::Result<String>,
) -> Result<Option<Secret>, Error> {
    let Some(tf) = token_file else {
        return Ok(env
            .consul_http_token
            .as_ref()
            .map(|t| Secret(t.trim().to_string())));
    };
    read_secret(path, "consul.token_file", &tf, read_token).map(Some)
}

/// A secret held in a file (`key` names the setting): trimmed, not empty,
/// no control characters.
fn read_secret(
    path: &Path,
    key: &str,
    file: &Path,
    read: &dyn Fn(&Path) -> std::io::Result<String>,
) -> Result<Secret, Error> {
    let t = read(file)
        .map_err(|e| Error::config(path, key, format!("cannot read {}: {e}", file.display())))?;
    // An editor's byte-order mark is no part of the secret.
    let t = t.trim_start_matches('\u{feff}').trim().to_string();
    if t.is_empty() {
        Err(Error::config(
            path,
            key,
            format!("{} is empty", file.display()),
        ))
    } else if t.chars().any(|c| c.is_control()) {
        Err(Error::config(
            path,
            key,
            format!("{} holds control characters", file.display()),
        ))
    } else {
        Ok(Secret(t))
    }
}

fn duration(path: &Path, key: &str, value: Option<&str>, default: &str) -> Result<Duration> {
    let v = value.unwrap_or(default);
    let d = humantime::parse_duration(v.trim()).map_err(|_| {
        Error::config(
            path,
            key,
            format!("expected a duration such as 5s or 500ms, got {v:?}"),
        )
    })?;
    if d > crate::budget::MAX_DURATION {
        return Err(Error::config(
            path,
            key,
            format!(
                "expected at most {}, got {v:?}",
                humantime::format_duration(crate::budget::MAX_DURATION)
            ),
        ));
    }
    Ok(d)
}

/// Linux interface names: 1..=15 bytes (IFNAMSIZ-1), no '/', ':' allowed only for aliases.
fn is_interface_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s != "."
        && s != ".."
        && !s
            .chars()
            .any(|c| c == '/' || c.is_whitespace() || c.is_control())
}

fn yaml_error(path: &Path, e: serde_path_to_error::Error<serde_yaml::Error>) -> Error {
    let key = e.path().to_string();
    let inner = e.into_inner();
    let mut msg = inner.to_string();
    // serde_yaml starts some messages with the path itself.
    if let Some(rest) = msg.strip_prefix(&format!("{key}: ")) {
        msg = rest.to_string();
    }
    // serde_yaml appends " at line L column C"; keep it, it helps, but keep one line.
    if let Some(loc) = inner.location() {
        if !msg.contains("line") {
            msg = format!("{msg} at line {} column {}", loc.line(), loc.column());
        }
    }
    if key == "." || key.is_empty() {
        Error::usage(format!("{}: {msg}", path.display()))
    } else {
        Error::config(path, &key, msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Env {
        Env {
            hostname: "pg1".into(),
            consul_http_token: None,
        }
    }

    fn parse(text: &str) -> Result<Config> {
        from_str(text, Path::new("/etc/ph.yml"), &env(), &|p: &Path| {
            if p == Path::new("/tok") {
                Ok("s3cret-token\n".into())
            } else {
                Err(std::io::Error::from(std::io::ErrorKind::NotFound))
            }
        })
    }

    const FULL: &str = r#"
name: pg-patroni1
scope: postgres
deadline: 5s
consul:
  url: http://127.0.0.1:8500
  namespace: service
  token_file: /tok
  timeout: 2s
vip:
  address: 192.168.50.55/24
  interface: eth1
  gratuitous_arp: 3
  standby_leader: false
pgbouncer:
  ini: /etc/pgbouncer/pgbouncer.ini
  pidfile: /run/pgbouncer/pgbouncer.pid
  clusters:
    - scope: postgres
      databases: [appdb]
      target: leader
"#;

    #[test]
    fn the_documented_example_parses() {
        let c = parse(FULL).unwrap();
        assert_eq!(c.name, "pg-patroni1");
        assert_eq!(c.scope.as_deref(), Some("postgres"));
        assert_eq!(c.deadline, Duration::from_secs(5));
        assert_eq!(
            c.dcs
                .consul()
                .unwrap()
                .token
                .as_ref()
                .unwrap()
                .as_ref()
                .unwrap()
                .expose(),
            "s3cret-token"
        );
        let vip = c.vip.unwrap();
        assert_eq!(vip.address.unwrap().to_string(), "192.168.50.55/24");
        assert_eq!(vip.interface, "eth1");
        let pgb = c.pgbouncer.unwrap();
        assert_eq!(pgb.clusters[0].databases, vec!["appdb".to_string()]);
        assert_eq!(pgb.clusters[0].target, TargetKind::Leader);
    }

    #[test]
    fn defaults_apply() {
        let c = parse("{}").unwrap();
        assert_eq!(c.name, "pg1");
        assert_eq!(c.dcs.consul().unwrap().url, "http://127.0.0.1:8500");
        assert_eq!(c.dcs.consul().unwrap().namespace, "service");
        assert_eq!(c.dcs.consul().unwrap().timeout, Duration::from_secs(2));
        assert_eq!(c.deadline, Duration::from_secs(5));
        assert!(c.vip.is_none() && c.pgbouncer.is_none());
    }

    #[test]
    fn unknown_key_names_the_key_and_the_file() {
        let e = parse("vip:\n  interface: eth1\n  interfac: eth2\n").unwrap_err();
        let m = e.to_string();
        assert!(m.starts_with("/etc/ph.yml: vip"), "{m}");
        assert!(m.contains("interfac"), "{m}");
        assert_eq!(e.exit_code(), 2);
        let e = parse("bogus: 1\n").unwrap_err().to_string();
        assert!(e.contains("bogus") && e.contains("/etc/ph.yml"), "{e}");
    }

    #[test]
    fn bad_cidr_names_vip_address() {
        for bad in [
            "192.168.50.55",
            "192.168.50.300/24",
            "nonsense",
            "0.0.0.0/0",
            "198.51.100.0/24",
            "198.51.100.255/24",
            "169.254.1.1/16",
            "fe80::1/64",
        ] {
            let e = parse(&format!("vip:\n  interface: eth1\n  address: {bad}\n")).unwrap_err();
            assert!(
                e.to_string().starts_with("/etc/ph.yml: vip.address: "),
                "{e}"
            );
        }
        let ok = parse("vip:\n  interface: eth1\n  address: 2001:db8::100/64\n").unwrap();
        assert_eq!(
            ok.vip.unwrap().address.unwrap().to_string(),
            "2001:db8::100/64"
        );
    }

    #[test]
    fn bad_durations_and_urls_are_named() {
        let e = parse("deadline: soon\n").unwrap_err().to_string();
        assert!(e.contains("deadline") && e.contains("soon"), "{e}");
        let e = parse("consul:\n  url: ftp://x\n").unwrap_err().to_string();
        assert!(e.contains("consul.url"), "{e}");
        let e = parse("consul:\n  url: https://x:8501\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("consul.ca_file"), "{e}");
        let e = parse("consul:\n  timeout: 0s\n").unwrap_err().to_string();
        assert!(e.contains("consul.timeout"), "{e}");
        // Absurd durations are errors naming the key, never an overflow.
        for (text, key) in [
            ("deadline: 300000000000y\n", "deadline"),
            ("deadline: 11m\n", "deadline"),
            ("deadline: 100ms\n", "deadline"),
            ("consul:\n  timeout: 300000000000y\n", "consul.timeout"),
        ] {
            let e = parse(text).unwrap_err();
            assert_eq!(e.exit_code(), 2);
            assert!(e.to_string().contains(key), "{text}: {e}");
        }
        let e = parse("lock_file: run/x.lock\n").unwrap_err().to_string();
        assert!(e.contains("lock_file") && e.contains("absolute"), "{e}");
    }

    #[test]
    fn token_file_errors_never_show_the_token() {
        // Kept for the first Consul call, so a release can still remove the VIP.
        let e = parse("consul:\n  token_file: /missing\n")
            .unwrap()
            .dcs
            .consul()
            .unwrap()
            .token
            .clone()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("consul.token_file") && e.contains("/missing"),
            "{e}"
        );
        let c = parse("consul:\n  token_file: /tok\n").unwrap();
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn a_byte_order_mark_and_crlf_are_no_part_of_the_token() {
        let c = from_str(
            "consul:\n  token_file: /tok\n",
            Path::new("/x"),
            &env(),
            &|_: &Path| Ok("\u{feff}s3cret-token\r\n".into()),
        )
        .unwrap();
        assert_eq!(
            c.dcs
                .consul()
                .unwrap()
                .token
                .as_ref()
                .unwrap()
                .as_ref()
                .unwrap()
                .expose(),
            "s3cret-token"
        );
    }

    #[test]
    fn env_token_is_used_without_token_file() {
        let c = from_str(
            "{}",
            Path::new("/x"),
            &Env {
                hostname: "h".into(),
                consul_http_token: Some("envtok".into()),
            },
            &|_: &Path| unreachable!(),
        )
        .unwrap();
        assert_eq!(
            c.dcs
                .consul()
                .unwrap()
                .token
                .as_ref()
                .unwrap()
                .as_ref()
                .unwrap()
                .expose(),
            "envtok"
        );
    }

    #[test]
    fn pgbouncer_clusters_are_checked() {
        let base = "pgbouncer:\n  ini: /i\n  pidfile: /p\n  clusters:\n";
        let e = parse(&format!("{base}    - scope: a\n      databases: []\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("pgbouncer.clusters[0].databases"), "{e}");
        let e = parse(&format!(
            "{base}    - scope: a\n      databases: [x]\n    - scope: b\n      databases: [x]\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("two clusters"), "{e}");
        let e = parse(&format!(
            "{base}    - scope: a\n      databases: [x]\n      target: primary\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("target"), "{e}");
        let c = parse(&format!(
            "{base}    - scope: a\n      databases: [x]\n      target: vip\n"
        ))
        .unwrap();
        assert_eq!(c.pgbouncer.unwrap().clusters[0].target, TargetKind::Vip);
    }

    #[test]
    fn pause_settings() {
        let base = "pgbouncer:\n  ini: /i\n  pidfile: /p\n  clusters:\n    - scope: a\n      databases: [x]\n";
        // No admin console: nothing to pause with.
        let c = parse(base).unwrap().pgbouncer.unwrap();
        assert_eq!(c.pause_on, PauseOn::Never);
        assert!(c.admin.is_none());
        let e = parse(&format!("{base}  pause_on: switchover\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("pgbouncer.pause_on") && e.contains("admin"),
            "{e}"
        );
        // An admin console: switchovers pause by default.
        let c = parse(&format!(
            "{base}  admin:\n    socket_dir: /run/pgb\n    port: 6433\n"
        ))
        .unwrap()
        .pgbouncer
        .unwrap();
        assert_eq!(c.pause_on, PauseOn::Switchover);
        assert_eq!(c.pause_timeout, Duration::from_secs(10));
        let a = c.admin.unwrap();
        assert_eq!(a.host, AdminHost::Socket("/run/pgb".into()));
        assert_eq!((a.port, a.user.as_deref()), (6433, None));
        for (extra, key) in [
            (
                "  admin:\n    socket_dir: rel\n",
                "pgbouncer.admin.socket_dir",
            ),
            (
                "  admin:\n    socket_dir: /a\n    host: h\n",
                "pgbouncer.admin",
            ),
            ("  admin:\n    host: 'a b'\n", "pgbouncer.admin.host"),
            ("  admin:\n", "pgbouncer.admin"),
            (
                "  admin: {}\n  pause_timeout: 100ms\n",
                "pgbouncer.pause_timeout",
            ),
            ("  admin: {}\n  pause_on: sometimes\n", "pause_on"),
        ] {
            let e = parse(&format!("{base}{extra}")).unwrap_err().to_string();
            assert!(e.contains(key), "{extra}: {e}");
        }
        let c = parse(&format!(
            "{base}  admin: {{}}\n  pause_on: always\n  pause_timeout: 30s\n"
        ))
        .unwrap()
        .pgbouncer
        .unwrap();
        assert_eq!(
            (c.pause_on, c.pause_timeout),
            (PauseOn::Always, Duration::from_secs(30))
        );
        // metrics.
        assert_eq!(
            parse("metrics:\n  textfile: /var/lib/prometheus/node-exporter/patroni_hook.prom\n")
                .unwrap()
                .metrics
                .unwrap()
                .display()
                .to_string(),
            "/var/lib/prometheus/node-exporter/patroni_hook.prom"
        );
        for bad in ["m.prom", "/x/m.txt", "/x/m"] {
            let e = parse(&format!("metrics:\n  textfile: {bad}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("metrics.textfile"), "{bad}: {e}");
        }
        // before_stop on a database node.
        let c = parse("before_stop:\n  wait: 2s\n  confirmations: 2\n").unwrap();
        assert_eq!(c.before_stop.wait, Duration::from_secs(2));
        assert_eq!(c.before_stop.confirmations, 2);
        assert_eq!(
            parse("{}").unwrap().before_stop,
            BeforeStopConfig::default()
        );
        let e = parse("before_stop:\n  confirmations: 0\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("before_stop.confirmations"), "{e}");
    }

    #[test]
    fn wrong_types_name_the_key() {
        let e = parse("vip:\n  interface: eth1\n  gratuitous_arp: lots\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("vip.gratuitous_arp"), "{e}");
        let e = parse("vip:\n  address: 198.51.100.1/24\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("interface"), "{e}");
    }

    #[test]
    fn refusals_name_what_each_command_needs() {
        let lock = "lock_file: /run/patroni-hook/patroni-hook.lock\n";
        // The package's skeleton: only consul.
        let skeleton = parse(&format!("{lock}consul:\n  url: http://127.0.0.1:8500\n")).unwrap();
        let keys: Vec<&str> = refusals(&skeleton).iter().map(|r| r.key).collect();
        assert_eq!(keys, ["vip, pgbouncer", "scope"]);
        assert!(refusals(&skeleton)[0].commands.contains("reconcile"));
        // A vip section without scope: reconcile and before-stop refuse it.
        let vip = parse(&format!("{lock}vip:\n  interface: eth1\n")).unwrap();
        let r = refusals(&vip);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].key, "scope");
        assert!(r[0].commands.contains("reconcile") && r[0].commands.contains("before-stop"));
        let vip_scope = parse(&format!("{lock}scope: pg\nvip:\n  interface: eth1\n")).unwrap();
        assert_eq!(refusals(&vip_scope), []);
        // The PgBouncer host names its scopes per cluster.
        let pgb = parse(&format!(
            "{lock}pgbouncer:\n  ini: /etc/pgbouncer/pgbouncer.ini\n  pidfile: /run/postgresql/pgbouncer.pid\n  clusters:\n    - scope: pg\n      databases: [app]\n"
        ))
        .unwrap();
        assert_eq!(refusals(&pgb), []);
    }
}
