//! PURE: Patroni's key layout in Consul, and how each value reads.
//!
//! The one home for `<ns>/<scope>/...` names. The VIP verb, reconcile on the
//! PgBouncer host and `status` all read a scope through [`ScopeView::read`],
//! so that a value is parsed (and distrusted) the same way everywhere.
//! Patroni writes these keys in `patroni/dcs/consul.py` (`leader`, `members/`,
//! `failover`; `_CONSUL_...` path helpers of `patroni/dcs/__init__.py`);
//! `floating-ip` is the operator's and `vip-holder` is ours (docs/design.md).
//!
//! Every value here comes from Consul and is untrusted: a value that does not
//! read as what Patroni writes is reported as invalid, with the reason, and
//! every reason quotes the value through [`shown`] (escaped, clipped), so no
//! value can forge a log line.

use crate::dcs::Entry;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

/// The keys of one Patroni scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeKeys {
    /// `<ns>/<scope>/`, for one recursive read.
    pub prefix: String,
    /// `<ns>/<scope>/leader`: the leader member's name (Patroni).
    pub leader: String,
    /// `<ns>/<scope>/members/`: one JSON value per member (Patroni).
    pub members: String,
    /// `<ns>/<scope>/failover`: written when a switchover starts (Patroni).
    pub failover: String,
    /// `<ns>/<scope>/floating-ip`: the VIP with prefix (operator).
    pub floating_ip: String,
    /// `<ns>/<scope>/vip-holder`: who holds the VIP (patroni-hook).
    pub vip_holder: String,
    /// `<ns>/<scope>/pause-request`: the primary that is about to stop asks
    /// the PgBouncer hosts to pause (patroni-hook `before-stop`).
    pub pause_request: String,
    /// `<ns>/<scope>/pause-ack/`: one key per PgBouncer host that paused.
    pub pause_acks: String,
}

impl ScopeKeys {
    /// The keys of `scope` under `namespace` (both without slashes at the ends).
    pub fn new(namespace: &str, scope: &str) -> Self {
        let prefix = format!("{namespace}/{scope}/");
        ScopeKeys {
            leader: format!("{prefix}leader"),
            members: format!("{prefix}members/"),
            failover: format!("{prefix}failover"),
            floating_ip: format!("{prefix}floating-ip"),
            vip_holder: format!("{prefix}vip-holder"),
            pause_request: format!("{prefix}pause-request"),
            pause_acks: format!("{prefix}pause-ack/"),
            prefix,
        }
    }
}

/// What a command does with a key, for `check-config --online`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// Reads it (or the prefix it stands for).
    Read,
    /// Writes or deletes it (one permission in Consul's ACL model).
    Write,
}

impl std::fmt::Display for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Access::Read => "read",
            Access::Write => "write",
        })
    }
}

/// A key a host's commands use, and which command needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Needed {
    /// Read or write.
    pub access: Access,
    /// The key (a prefix's reads are asked through a key under it).
    pub key: String,
    /// The command and what it does with the key.
    pub why: &'static str,
}

/// PURE: every key this host's commands read or write: a database node's
/// (`db_scope`, with `vip` when it has a vip section) and a PgBouncer
/// host's (`pgb_scopes`). A recursive read the token may not make comes
/// back empty from Consul 1.8, so each prefix is asked through a key under
/// it. The policies in patroni-conf/ grant exactly these.
pub fn needed_access(
    namespace: &str,
    me: &str,
    db_scope: Option<&str>,
    vip: bool,
    pgb_scopes: &[&str],
) -> Vec<Needed> {
    let mut out = Vec::new();
    let mut need = |access, key: String, why| out.push(Needed { access, key, why });
    if let Some(scope) = db_scope {
        let k = ScopeKeys::new(namespace, scope);
        need(
            Access::Read,
            k.leader.clone(),
            "callbacks, reconcile, before-stop: the scope's keys",
        );
        if vip {
            need(
                Access::Write,
                k.vip_holder.clone(),
                "callbacks, reconcile: the vip-holder record",
            );
        }
        need(
            Access::Write,
            k.pause_request.clone(),
            "before-stop and a primary's callback: the pause request",
        );
        need(
            Access::Read,
            format!("{}{me}", k.pause_acks),
            "before-stop: the PgBouncer hosts' confirmations",
        );
    }
    for scope in pgb_scopes {
        let k = ScopeKeys::new(namespace, scope);
        need(
            Access::Read,
            k.leader.clone(),
            "reconcile on the PgBouncer host: the cluster's keys",
        );
        need(
            Access::Write,
            format!("{}{me}", k.pause_acks),
            "reconcile on the PgBouncer host: its pause confirmation",
        );
        need(
            Access::Write,
            k.pause_request.clone(),
            "reconcile on the PgBouncer host: ends a pause request once resumed",
        );
    }
    // A host that is both a database node and a PgBouncer host of the
    // same scope needs some keys twice: asked once.
    let mut seen = std::collections::HashSet::new();
    out.retain(|n| seen.insert((n.access, n.key.clone())));
    out
}

/// A recursive read of `<ns>/` split by scope in one pass. Reading each of
/// hundreds of scopes out of the whole list would be quadratic (500 scopes:
/// 67 ms against 13 ms). [`ScopeView::read`] still matches keys exactly, so
/// the split only narrows what it looks through.
#[derive(Debug, Default)]
pub struct Scopes(HashMap<String, Vec<Entry>>);

impl Scopes {
    /// Groups `entries` by the path segment after `<namespace>/`; entries
    /// outside the namespace are dropped.
    pub fn new(entries: Vec<Entry>, namespace: &str) -> Self {
        let ns = format!("{namespace}/");
        let mut by: HashMap<String, Vec<Entry>> = HashMap::new();
        for e in entries {
            let Some(scope) = e
                .key
                .strip_prefix(&ns)
                .and_then(|rest| rest.split_once('/'))
                .map(|(scope, _)| scope.to_string())
            else {
                continue;
            };
            by.entry(scope).or_default().push(e);
        }
        Scopes(by)
    }

    /// The entries under `<namespace>/<scope>/`.
    pub fn of(&self, scope: &str) -> &[Entry] {
        self.0.get(scope).map(Vec::as_slice).unwrap_or(&[])
    }
}

/// What the leader key says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaderKey {
    /// No key, or an empty one: nobody holds the leader lock (mid-failover).
    Absent,
    /// A member name.
    Name(String),
    /// Not a member name; the text says why, with the value escaped.
    Invalid(String),
}

/// One member as Patroni describes itself in `members/<name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The member name (the last part of the key).
    pub name: String,
    /// Host and port of `conn_url`, or why not.
    pub conn: Result<(String, u16), String>,
    /// Host and port of `api_url`, or why not (absent counts as an error).
    pub api: Result<(String, u16), String>,
    /// `api_url` is https.
    pub api_https: bool,
}

impl Member {
    /// `http://host:port/patroni` of the member's REST API: its JSON says
    /// `"role": "primary"` only once PostgreSQL there is out of recovery
    /// (Patroni asks `pg_is_in_recovery()` for each request, api.py
    /// get_postgresql_status). `GET /primary` is no such check: it answers
    /// 200 as soon as the member holds the leader lock, before `pg_ctl
    /// promote` (run without waiting) has ended recovery. `None` without a
    /// usable `api_url`; https when the `api_url` is.
    pub fn status_url(&self) -> Option<String> {
        let (host, port) = self.api.as_ref().ok()?;
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.clone()
        };
        let scheme = if self.api_https { "https" } else { "http" };
        Some(format!("{scheme}://{host}:{port}/patroni"))
    }
}

/// The JSON stored at `<ns>/<scope>/vip-holder`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HolderRecord {
    /// Patroni member name of the holder.
    pub member: String,
    /// The VIP with prefix.
    pub address: String,
    /// Interface it is on.
    pub interface: String,
    /// When this holder took it, RFC 3339 UTC.
    pub since: String,
}

/// The `vip-holder` key as read, with the ModifyIndex used for check-and-set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// No record; create with `cas=0`.
    Absent,
    /// Our JSON.
    Record {
        /// What it says.
        record: HolderRecord,
        /// ModifyIndex, for check-and-set.
        index: u64,
    },
    /// Something else; replaced by a holder, never deleted.
    Unparsable {
        /// ModifyIndex, for check-and-set.
        index: u64,
    },
}

/// The JSON at `<ns>/<scope>/pause-request` and at each `pause-ack/<host>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PauseRequest {
    /// The member about to stop PostgreSQL.
    pub member: String,
    /// Unique per request, so a confirmation names what it confirms.
    pub id: String,
    /// When it was asked, seconds since the Unix epoch.
    pub since: u64,
}

/// One recursive read of `<ns>/<scope>/`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeView {
    /// The leader key.
    pub leader: LeaderKey,
    /// Every member key, in key order.
    pub members: Vec<Member>,
    /// `floating-ip`: `None` without the key; else the VIP or why it is refused.
    pub floating_ip: Option<Result<IpNet, String>>,
    /// `vip-holder`.
    pub holder: Holder,
    /// `failover` is present (a switchover or manual failover is under way,
    /// or scheduled: see `failover_at`).
    pub failover: bool,
    /// The `scheduled_at` of a scheduled switchover (`patronictl switchover
    /// --scheduled` writes the key at once), in seconds since the epoch;
    /// until then no switchover is under way.
    pub failover_at: Option<i64>,
    /// Nothing at all under the scope's prefix: not a cluster mid-failover
    /// but a wrong namespace or scope (or a cluster never started).
    pub empty: bool,
    /// A pause request and its ModifyIndex (an unreadable one is ignored).
    pub pause_request: Option<(PauseRequest, u64)>,
    /// The leader key's ModifyIndex: written when a member takes the lock,
    /// not while it holds it (patroni/dcs/consul.py `_update_leader` renews
    /// the session and writes the key again only when its session changed).
    pub leader_index: Option<u64>,
    /// Confirmations: the host, the request id it confirms.
    pub pause_acks: Vec<(String, String)>,
}

impl ScopeView {
    /// Reads a scope's keys out of a recursive read's entries (which may hold
    /// other scopes too: keys are matched exactly).
    pub fn read(entries: &[Entry], keys: &ScopeKeys) -> ScopeView {
        let find = |k: &str| entries.iter().find(|e| e.key == k);
        let leader = match find(&keys.leader) {
            None => LeaderKey::Absent,
            Some(e) => {
                let name = String::from_utf8_lossy(&e.value);
                let name = name.trim();
                if name.is_empty() {
                    LeaderKey::Absent
                } else if is_member_name(name) {
                    LeaderKey::Name(name.to_string())
                } else {
                    LeaderKey::Invalid(format!(
                        "{}: {} is not a Patroni member name",
                        keys.leader,
                        shown(name)
                    ))
                }
            }
        };
        let members = entries
            .iter()
            .filter_map(|e| {
                let name = e.key.strip_prefix(&keys.members)?;
                (!name.is_empty() && !name.contains('/')).then(|| member(&e.key, name, &e.value))
            })
            .collect();
        let floating_ip = find(&keys.floating_ip).map(|e| {
            let text = String::from_utf8_lossy(&e.value);
            parse_vip(&text).map_err(|why| format!("{}: {why}", keys.floating_ip))
        });
        let holder = match find(&keys.vip_holder) {
            None => Holder::Absent,
            Some(e) => match serde_json::from_slice::<HolderRecord>(&e.value) {
                Ok(record) => Holder::Record {
                    record,
                    index: e.modify_index,
                },
                Err(_) => Holder::Unparsable {
                    index: e.modify_index,
                },
            },
        };
        ScopeView {
            leader,
            members,
            floating_ip,
            holder,
            failover: find(&keys.failover).is_some(),
            failover_at: find(&keys.failover).and_then(|e| scheduled_at(&e.value)),
            leader_index: find(&keys.leader).map(|e| e.modify_index),
            empty: !entries.iter().any(|e| e.key.starts_with(&keys.prefix)),
            pause_request: find(&keys.pause_request).and_then(|e| {
                serde_json::from_slice::<PauseRequest>(&e.value)
                    .ok()
                    .map(|r| (r, e.modify_index))
            }),
            pause_acks: entries
                .iter()
                .filter_map(|e| {
                    let host = e.key.strip_prefix(&keys.pause_acks)?;
                    let r = serde_json::from_slice::<PauseRequest>(&e.value).ok()?;
                    Some((host.to_string(), r.id))
                })
                .collect(),
        }
    }

    /// A member by name.
    pub fn member(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.name == name)
    }

    /// The members' own IP addresses (hosts of `conn_url` and `api_url` that
    /// are IP literals): never a VIP.
    pub fn member_ips(&self) -> BTreeSet<IpAddr> {
        self.members
            .iter()
            .flat_map(|m| [&m.conn, &m.api])
            .filter_map(|hp| hp.as_ref().ok())
            .filter_map(|(host, _)| host.parse::<IpAddr>().ok())
            .collect()
    }

    /// The member whose `conn_url` or `api_url` host is `ip`, if any.
    pub fn member_using(&self, ip: IpAddr) -> Option<&Member> {
        self.members.iter().find(|m| {
            [&m.conn, &m.api]
                .into_iter()
                .filter_map(|hp| hp.as_ref().ok())
                .any(|(host, _)| host.parse::<IpAddr>().ok() == Some(ip))
        })
    }
}

fn member(key: &str, name: &str, value: &[u8]) -> Member {
    let json = serde_json::from_slice::<serde_json::Value>(value);
    let field = |field: &str, parse: fn(&str) -> Result<(String, u16), String>| match &json {
        Err(e) => Err(format!("{key}: not JSON: {e}")),
        Ok(v) => match v.get(field).and_then(|c| c.as_str()) {
            None => Err(format!("{key}: no {field} string")),
            Some(url) => parse(url).map_err(|why| format!("{key}: {field} {why}")),
        },
    };
    let api_https = json
        .as_ref()
        .ok()
        .and_then(|v| v.get("api_url"))
        .and_then(|u| u.as_str())
        .is_some_and(|u| u.starts_with("https://"));
    Member {
        name: name.to_string(),
        conn: field("conn_url", parse_conn_url),
        api: field("api_url", parse_api_url),
        api_https,
    }
}

/// A Patroni member name or scope: no '/', no white space, no control characters.
pub fn is_member_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && !s
            .chars()
            .any(|c| c == '/' || c.is_whitespace() || c.is_control())
}

/// The `scheduled_at` of a failover key's JSON (Patroni writes
/// `datetime.isoformat()`: `2026-12-05T03:00:00+00:00`, maybe with
/// fractions of a second), in seconds since the epoch.
pub fn scheduled_at(value: &[u8]) -> Option<i64> {
    let v: serde_json::Value = serde_json::from_slice(value).ok()?;
    rfc3339_seconds(v.get("scheduled_at")?.as_str()?)
}

/// PURE: `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)` in seconds since the epoch.
fn rfc3339_seconds(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b' ') {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && matches!(&rest[..1], "+" | "-") && &rest[3..4] == ":" => {
            let (oh, om): (i64, i64) = (rest[1..3].parse().ok()?, rest[4..6].parse().ok()?);
            let o = oh * 3600 + om * 60;
            if rest.starts_with('-') {
                -o
            } else {
                o
            }
        }
        _ => return None,
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + mi * 60 + se - offset)
}

/// Parses a VIP `address/prefix` (from the configuration or from Consul's
/// `floating-ip`): the prefix is required and the address must be one a
/// host can float ([`unusable_vip`]).
pub fn parse_vip(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    let expected = || {
        format!(
            "expected an address with prefix length such as 192.168.50.55/24, got {}",
            shown(s)
        )
    };
    if !s.contains('/') {
        return Err(expected());
    }
    let net: IpNet = s.parse().map_err(|_| expected())?;
    match unusable_vip(net) {
        Some(why) => Err(format!("{} is {why}, not a VIP", shown(s))),
        None => Ok(net),
    }
}

/// Why an address can never be a floating IP, if it cannot: the kernel or the
/// network gives these a meaning of their own, and removing one (a release
/// removes the VIP) could cut the host off.
pub fn unusable_vip(net: IpNet) -> Option<&'static str> {
    let ip = net.addr();
    if ip.is_unspecified() {
        return Some("the unspecified address");
    }
    if ip.is_loopback() {
        return Some("a loopback address");
    }
    if ip.is_multicast() {
        return Some("a multicast address");
    }
    match net {
        IpNet::V4(v4) => {
            let a = v4.addr();
            if a.is_broadcast() {
                return Some("the limited broadcast address");
            }
            if a.is_link_local() {
                return Some("a link-local address");
            }
            // /31 (RFC 3021) and /32 have no network or broadcast address.
            if v4.prefix_len() <= 30 {
                if a == v4.network() {
                    return Some("the network address of its prefix");
                }
                if a == v4.broadcast() {
                    return Some("the broadcast address of its prefix");
                }
            }
        }
        IpNet::V6(v6) => {
            let a = v6.addr();
            if (a.segments()[0] & 0xffc0) == 0xfe80 {
                return Some("a link-local address");
            }
            if a.to_ipv4_mapped().is_some() {
                return Some("an IPv4-mapped address");
            }
            // The subnet-router anycast address (RFC 4291 2.6.1); /127 (RFC
            // 6164) and /128 have none.
            if v6.prefix_len() <= 126 && a == v6.network() {
                return Some("the subnet-router anycast address of its prefix");
            }
        }
    }
    None
}

/// Host and port of a libpq URL as Patroni writes it
/// (`postgres://host:port/db`, IPv6 in brackets, port 5432 when absent).
/// Anything that is not plainly a host and a port is refused: the value is
/// untrusted and ends up in pgbouncer.ini.
pub fn parse_conn_url(url: &str) -> Result<(String, u16), String> {
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"));
    host_port(url, rest, "postgres://host:port/...", 5432)
}

/// Host and port of Patroni's REST API URL (`http://host:8008/patroni`).
pub fn parse_api_url(url: &str) -> Result<(String, u16), String> {
    let (rest, default) = match url.strip_prefix("http://") {
        Some(r) => (Some(r), 80),
        None => (url.strip_prefix("https://"), 443),
    };
    host_port(url, rest, "http(s)://host:port/...", default)
}

fn host_port(
    url: &str,
    rest: Option<&str>,
    expected: &str,
    default_port: u16,
) -> Result<(String, u16), String> {
    const MAX: usize = 1024;
    if url.len() > MAX {
        return Err(format!("longer than {MAX} bytes"));
    }
    let rest = rest.ok_or_else(|| format!("{}: expected {expected}", shown(url)))?;
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    // user[:password]@ is not something Patroni writes; drop it without echoing it.
    let authority = match authority.rfind('@') {
        Some(i) => &authority[i + 1..],
        None => authority,
    };
    let (host, port) = if let Some(r) = authority.strip_prefix('[') {
        let end = r
            .find(']')
            .ok_or_else(|| format!("{}: unterminated [IPv6] host", shown(url)))?;
        let host = &r[..end];
        let after = &r[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(format!("{}: junk after ]", shown(url))),
        };
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!(
                "{}: [{}] is not an IPv6 address",
                shown(url),
                shown(host)
            ));
        }
        (host.to_string(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (authority.to_string(), None),
        }
    };
    let port = match port {
        None => default_port,
        Some(p) => match p.parse::<u32>() {
            Ok(n) if (1..=65535).contains(&n) => n as u16,
            _ => return Err(format!("port {} is not 1-65535", shown(p))),
        },
    };
    if host.is_empty() {
        return Err(format!("{}: no host", shown(url)));
    }
    crate::pooler::ini::validate_host(&host).map_err(|e| e.to_string())?;
    Ok((host, port))
}

/// An untrusted value for a message: quoted, control characters escaped,
/// clipped to 80 characters. A newline in a Consul value can then never
/// start a log line of its own.
pub fn shown(s: &str) -> String {
    const MAX: usize = 80;
    let n = s.chars().count();
    let cut: String = s.chars().take(MAX).collect();
    let quoted = format!("{:?}", cut);
    if n > MAX {
        format!("{quoted}... ({} bytes)", s.len())
    } else {
        quoted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduled_at_reads_patronis_isoformat() {
        assert_eq!(rfc3339_seconds("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            rfc3339_seconds("1970-01-12T13:46:40+00:00"),
            Some(1_000_000)
        );
        assert_eq!(
            rfc3339_seconds("2026-12-05T04:00:00.123456+01:00"),
            Some(1_796_439_600)
        );
        assert_eq!(
            rfc3339_seconds("2000-02-29T00:00:00-02:00"),
            Some(951_782_400 + 7200)
        );
        assert_eq!(rfc3339_seconds("2026-13-01T00:00:00Z"), None);
        assert_eq!(rfc3339_seconds("soon"), None);
        assert_eq!(
            scheduled_at(br#"{"leader":"a","scheduled_at":"1970-01-01T00:01:00+00:00"}"#),
            Some(60)
        );
        assert_eq!(scheduled_at(br#"{"leader":"a"}"#), None);
    }

    #[test]
    fn needed_access_lists_each_role_s_keys_once() {
        let shown = |v: Vec<Needed>| -> Vec<String> {
            v.iter()
                .map(|n| format!("{} {}", n.access, n.key))
                .collect()
        };
        assert_eq!(
            shown(needed_access("service", "pg1", Some("b"), true, &[])),
            [
                "read service/b/leader",
                "write service/b/vip-holder",
                "write service/b/pause-request",
                "read service/b/pause-ack/pg1",
            ]
        );
        assert_eq!(
            shown(needed_access("service", "pgb1", None, false, &["b", "c"])),
            [
                "read service/b/leader",
                "write service/b/pause-ack/pgb1",
                "write service/b/pause-request",
                "read service/c/leader",
                "write service/c/pause-ack/pgb1",
                "write service/c/pause-request",
            ]
        );
        // No vip section: no vip-holder to write.
        assert!(!shown(needed_access("s", "pg1", Some("b"), false, &[]))
            .contains(&"write s/b/vip-holder".to_string()));
        assert!(needed_access("s", "pg1", None, false, &[]).is_empty());
        // A database node that is also the PgBouncer host of its own scope:
        // each key asked once.
        let both = shown(needed_access("s", "h", Some("b"), true, &["b"]));
        let mut unique = both.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(both.len(), unique.len(), "{both:?}");
        assert!(both.contains(&"write s/b/pause-ack/h".to_string()));
    }

    fn e(key: &str, v: &str, idx: u64) -> Entry {
        Entry {
            key: key.into(),
            value: v.as_bytes().to_vec(),
            modify_index: idx,
            session: None,
        }
    }

    #[test]
    fn a_scope_reads_the_same_from_its_group_as_from_the_whole_read() {
        let es = vec![
            e("service/a/leader", "pg1", 1),
            e(
                "service/a/members/pg1",
                r#"{"conn_url":"postgres://198.51.100.11:5432/postgres"}"#,
                2,
            ),
            e("service/ab/leader", "pg2", 3),
            e(
                "service/ab/members/pg2",
                r#"{"conn_url":"postgres://198.51.100.12:5432/postgres"}"#,
                4,
            ),
            e("service/ab/failover", "{}", 5),
            e("service/a", "not a scope key", 6),
            e("other/a/leader", "pg9", 7),
        ];
        let scopes = Scopes::new(es.clone(), "service");
        for scope in ["a", "ab", "abc"] {
            let k = ScopeKeys::new("service", scope);
            assert_eq!(
                ScopeView::read(scopes.of(scope), &k),
                ScopeView::read(&es, &k),
                "{scope}"
            );
        }
        assert_eq!(scopes.of("a").len(), 2);
        assert!(scopes.of("abc").is_empty());
    }

    fn keys() -> ScopeKeys {
        ScopeKeys::new("service", "batman")
    }

    #[test]
    fn key_names() {
        let k = keys();
        assert_eq!(k.prefix, "service/batman/");
        assert_eq!(k.leader, "service/batman/leader");
        assert_eq!(k.members, "service/batman/members/");
        assert_eq!(k.failover, "service/batman/failover");
        assert_eq!(k.floating_ip, "service/batman/floating-ip");
        assert_eq!(k.vip_holder, "service/batman/vip-holder");
    }

    #[test]
    fn leader_key_reads() {
        let k = keys();
        let read = |es: &[Entry]| ScopeView::read(es, &k).leader;
        assert_eq!(read(&[]), LeaderKey::Absent);
        assert_eq!(
            read(&[e("service/batman/leader", "", 1)]),
            LeaderKey::Absent
        );
        assert_eq!(
            read(&[e("service/batman/leader", "pg1\n", 1)]),
            LeaderKey::Name("pg1".into())
        );
        // A key of another scope with a common prefix is not ours.
        assert_eq!(
            read(&[e("service/batman2/leader", "pg1", 1)]),
            LeaderKey::Absent
        );
        // A value that could forge a log line is not a member name, and the
        // reason quotes it escaped.
        match read(&[e("service/batman/leader", "pg2\nERROR forged", 1)]) {
            LeaderKey::Invalid(why) => {
                assert!(!why.contains('\n'), "{why}");
                assert!(why.contains(r"pg2\nERROR forged"), "{why}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn members_and_their_addresses() {
        let k = keys();
        let es = [
            e(
                "service/batman/members/pg1",
                r#"{"conn_url":"postgres://198.51.100.11:5432/postgres","api_url":"http://198.51.100.11:8008/patroni"}"#,
                1,
            ),
            e(
                "service/batman/members/pg2",
                r#"{"conn_url":"postgres://[2001:db8::12]:5432/postgres","api_url":"http://db2.example.com:8008/patroni"}"#,
                1,
            ),
            e("service/batman/members/pg3", "not json", 1),
            e("service/batman/members/x/y", "{}", 1),
        ];
        let v = ScopeView::read(&es, &k);
        assert_eq!(v.members.len(), 3);
        assert_eq!(
            v.member("pg2").unwrap().api,
            Ok(("db2.example.com".to_string(), 8008))
        );
        assert!(v.member("pg3").unwrap().conn.is_err());
        assert_eq!(
            v.member("pg1").unwrap().status_url().as_deref(),
            Some("http://198.51.100.11:8008/patroni")
        );
        let ips: Vec<String> = v.member_ips().iter().map(|i| i.to_string()).collect();
        assert_eq!(ips, ["198.51.100.11", "2001:db8::12"]);
        assert_eq!(
            v.member_using("198.51.100.11".parse().unwrap())
                .map(|m| m.name.as_str()),
            Some("pg1")
        );
        assert!(v.member_using("198.51.100.100".parse().unwrap()).is_none());
    }

    #[test]
    fn floating_ip_holder_failover() {
        let k = keys();
        let rec = r#"{"member":"pg1","address":"198.51.100.100/24","interface":"eth1","since":"2026-01-01T00:00:00Z"}"#;
        let v = ScopeView::read(
            &[
                e("service/batman/floating-ip", "198.51.100.100/24\n", 1),
                e("service/batman/vip-holder", rec, 7),
                e("service/batman/failover", r#"{"leader":"pg1"}"#, 8),
            ],
            &k,
        );
        assert_eq!(
            v.floating_ip,
            Some(Ok("198.51.100.100/24".parse().unwrap()))
        );
        assert!(
            matches!(v.holder, Holder::Record { index: 7, ref record } if record.member == "pg1")
        );
        assert!(v.failover);
        let v = ScopeView::read(
            &[
                e("service/batman/floating-ip", "198.51.100.0/24", 1),
                e("service/batman/vip-holder", "junk", 9),
            ],
            &k,
        );
        let why = v.floating_ip.unwrap().unwrap_err();
        assert!(why.starts_with("service/batman/floating-ip: "), "{why}");
        assert!(why.contains("network address"), "{why}");
        assert_eq!(v.holder, Holder::Unparsable { index: 9 });
        assert!(!v.failover);
    }

    #[test]
    fn unusable_vips() {
        for (s, why) in [
            ("0.0.0.0/24", "unspecified"),
            ("127.0.0.5/8", "loopback"),
            ("224.0.0.1/24", "multicast"),
            ("255.255.255.255/32", "limited broadcast"),
            ("169.254.1.1/16", "link-local"),
            ("198.51.100.0/24", "network address"),
            ("198.51.100.255/24", "broadcast address"),
            ("::/64", "unspecified"),
            ("::1/128", "loopback"),
            ("ff02::1/64", "multicast"),
            ("fe80::1/64", "link-local"),
            ("::ffff:198.51.100.1/120", "IPv4-mapped"),
            ("2001:db8::/64", "subnet-router anycast"),
        ] {
            let e = parse_vip(s).unwrap_err();
            assert!(e.contains(why), "{s}: {e}");
        }
        for ok in [
            "198.51.100.100/24",
            "198.51.100.0/31",
            "198.51.100.255/32",
            "2001:db8::100/64",
            "2001:db8::/127",
        ] {
            assert!(parse_vip(ok).is_ok(), "{ok}");
        }
        assert!(parse_vip("198.51.100.100").unwrap_err().contains("prefix"));
    }

    #[test]
    fn conn_url_forms() {
        assert_eq!(
            parse_conn_url("postgres://198.51.100.11:5432/postgres"),
            Ok(("198.51.100.11".into(), 5432))
        );
        assert_eq!(
            parse_conn_url("postgresql://db1.example.com/x"),
            Ok(("db1.example.com".into(), 5432))
        );
        assert_eq!(
            parse_conn_url("postgres://[2001:db8::11]:6432/postgres"),
            Ok(("2001:db8::11".into(), 6432))
        );
        assert_eq!(
            parse_conn_url("postgres://u:secret@198.51.100.1:5433/x"),
            Ok(("198.51.100.1".into(), 5433))
        );
        assert_eq!(
            parse_api_url("http://198.51.100.11:8008/patroni"),
            Ok(("198.51.100.11".into(), 8008))
        );
        assert_eq!(
            parse_api_url("https://db1.example.com/patroni"),
            Ok(("db1.example.com".into(), 443))
        );
        for bad in [
            "http://x:1/",
            "postgres://x:0/",
            "postgres://x:70000/",
            "postgres://x:12ab/",
            "postgres://:5432/",
            "postgres://a b:5432/",
            "postgres://x\n[pgbouncer]:5432/",
            "postgres://x=y:5432/",
            "postgres://'x':5432/",
            "postgres://[::1:5432/",
            "postgres://[notv6]:5432/",
        ] {
            let e = parse_conn_url(bad).unwrap_err();
            assert!(!e.contains('\n'), "{bad:?}: {e}");
        }
        let long = format!("postgres://{}:5432/", "a".repeat(300));
        assert!(parse_conn_url(&long).is_err());
        assert!(parse_api_url("ftp://x/").is_err());
    }

    #[test]
    fn shown_escapes_and_clips() {
        assert_eq!(shown("a\nb\x1b"), r#""a\nb\u{1b}""#);
        let long = "x".repeat(200);
        let s = shown(&long);
        assert!(s.ends_with("... (200 bytes)"), "{s}");
    }
}
