//! HTTP layer: routing, query-parameter parsing, ACL checks, blocking
//! queries and response headers. Translates each request into `State` calls
//! and prints the result the way Consul's handlers do (SPEC.md §3).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;
use serde_json::Value;

use crate::duration::{format_go_duration, parse_go_duration, parse_go_duration_ns};
use crate::server::Shared;
use crate::state::{
    check_session_id, Behavior, Check, Entry, OpError, Service, Session, State, SESSION_TTL_MAX,
};
use crate::wire;

/// Consul's default `kv_max_value_size` (§3.3).
const KV_MAX_VALUE_SIZE: usize = 512 * 1024;
/// Bodies larger than this are not read at all.
const BODY_LIMIT: usize = 4 * 1024 * 1024;
/// Blocking-query defaults: `default_query_time` and `max_query_time` (§3.6).
const DEFAULT_WAIT: Duration = Duration::from_secs(300);
const MAX_WAIT: Duration = Duration::from_secs(600);
/// The anonymous token's fixed AccessorID, printed in permission errors.
const ANONYMOUS_ACCESSOR: &str = "00000000-0000-0000-0000-000000000002";
/// What `/v1/status/leader` and `peers` report: a single server.
const LEADER_ADDR: &str = "127.0.0.1:8300";

type Resp = Response<Full<Bytes>>;

/// A response under construction.
struct Reply {
    status: StatusCode,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn text(status: StatusCode, text: impl Into<String>) -> Reply {
        Reply {
            status,
            headers: vec![("Content-Type", "text/plain; charset=utf-8".to_string())],
            body: text.into().into_bytes(),
        }
    }

    fn json_bytes(body: Vec<u8>) -> Reply {
        Reply {
            status: StatusCode::OK,
            headers: vec![("Content-Type", "application/json".to_string())],
            body,
        }
    }

    fn empty(status: StatusCode) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }
}

/// Parsed request pieces every handler needs.
struct Req {
    method: Method,
    path: String,
    params: Vec<(String, String)>,
    token: Option<String>,
    body: Bytes,
    pretty: bool,
}

impl Req {
    /// Presence flag (`recurse`, `keys`, `raw`, …): value is ignored (§3.2).
    fn has(&self, name: &str) -> bool {
        self.params.iter().any(|(k, _)| k == name)
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn json<T: Serialize + ?Sized>(&self, v: &T) -> Reply {
        Reply::json_bytes(if self.pretty {
            wire::to_go_json_pretty(v)
        } else {
            wire::to_go_json(v)
        })
    }
}

/// Outcome of resolving the request's token (§3.8).
enum Auth {
    /// ACLs off, or the configured token.
    Allowed,
    /// No token: the anonymous token, which may do nothing.
    Anonymous,
    /// A token that does not exist.
    NotFound,
}

/// Blocking-query and consistency parameters (§3.6).
struct QueryOpts {
    index: u64,
    wait: Duration,
    consistency: &'static str,
}

/// Entry point for every request.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Resp, Infallible> {
    let acl_on = shared.acl_token.is_some();
    let reply = match read_request(req).await {
        Ok(r) => {
            // A slow Consul: the request is handled (and answered) late.
            if let Some(d) = shared.delay() {
                tokio::time::sleep(d).await;
            }
            route(&shared, r).await
        }
        Err(reply) => reply,
    };
    Ok(finish(reply, acl_on))
}

async fn read_request(req: Request<Incoming>) -> Result<Req, Reply> {
    let (parts, body) = req.into_parts();
    // Go's net/http hands Consul a decoded path; Patroni does not encode, but
    // other clients may (§1.1).
    let path = percent_encoding::percent_decode_str(parts.uri.path())
        .decode_utf8_lossy()
        .into_owned();
    let params: Vec<(String, String)> = parts
        .uri
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    // Token precedence: ?token, X-Consul-Token, Authorization: Bearer (§3.8).
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let token = params
        .iter()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.clone())
        .or_else(|| header("x-consul-token"))
        .or_else(|| {
            header("authorization").and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
                    .map(|t| t.trim().to_string())
            })
        })
        .filter(|t| !t.is_empty());
    let body = match Limited::new(body, BODY_LIMIT).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return Err(Reply::text(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Request body too large",
            ))
        }
    };
    let pretty = params.iter().any(|(k, _)| k == "pretty");
    Ok(Req {
        method: parts.method,
        path,
        params,
        token,
        body,
        pretty,
    })
}

/// Headers every Consul response carries (§3.7).
fn finish(reply: Reply, acl_on: bool) -> Resp {
    let mut b = Response::builder()
        .status(reply.status)
        .header("Vary", "Accept-Encoding")
        .header(
            "X-Consul-Default-Acl-Policy",
            if acl_on { "deny" } else { "allow" },
        );
    for (k, v) in reply.headers {
        b = b.header(k, v);
    }
    b.body(Full::new(Bytes::from(reply.body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

async fn route(shared: &Arc<Shared>, r: Req) -> Reply {
    let path = r.path.clone();
    if let Some(key) = path.strip_prefix("/v1/kv/") {
        return kv(shared, &r, key).await;
    }
    if let Some(rest) = path.strip_prefix("/v1/session/") {
        return session(shared, &r, rest).await;
    }
    if let Some(rest) = path.strip_prefix("/v1/health/service/") {
        return health_service(shared, &r, rest).await;
    }
    match path.as_str() {
        "/v1/status/leader" => only(&r, &[Method::GET], || r.json(LEADER_ADDR)),
        "/v1/status/peers" => only(&r, &[Method::GET], || r.json(&[LEADER_ADDR])),
        "/v1/agent/self" => only(&r, &[Method::GET], || agent_self(shared, &r)),
        "/v1/agent/services" => only(&r, &[Method::GET], || agent_services(shared, &r)),
        "/v1/agent/service/register" => only(&r, &[Method::PUT], || service_register(shared, &r)),
        p => match p.strip_prefix("/v1/agent/service/deregister/") {
            Some(id) => only(&r, &[Method::PUT], || service_deregister(shared, &r, id)),
            // Consul's catch-all handler: a bare 404 (Consul 1.8.7).
            None => Reply::empty(StatusCode::NOT_FOUND),
        },
    }
}

/// 405 with Consul's text and an `Allow` header for a wrong method (§3.10).
fn method_not_allowed(r: &Req, allowed: &[Method]) -> Reply {
    let allow: Vec<&str> = allowed.iter().map(Method::as_str).collect();
    Reply::text(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method {} not allowed", r.method),
    )
    .header("Allow", allow.join(","))
}

fn only(r: &Req, allowed: &[Method], f: impl FnOnce() -> Reply) -> Reply {
    if allowed.contains(&r.method) {
        f()
    } else {
        method_not_allowed(r, allowed)
    }
}

fn auth(shared: &Shared, r: &Req) -> Auth {
    match (&shared.acl_token, &r.token) {
        (None, _) => Auth::Allowed,
        (Some(want), Some(got)) if want == got => Auth::Allowed,
        (Some(_), Some(_)) => Auth::NotFound,
        (Some(_), None) => Auth::Anonymous,
    }
}

/// For list reads (§3.2, §5 item 6): whether the anonymous token's results are
/// filtered to nothing, or the 403 of an unknown token.
fn list_filter(shared: &Shared, r: &Req) -> Result<bool, Reply> {
    match auth(shared, r) {
        Auth::Allowed => Ok(false),
        Auth::NotFound => Err(acl_not_found()),
        Auth::Anonymous => Ok(true),
    }
}

fn acl_not_found() -> Reply {
    Reply::text(StatusCode::FORBIDDEN, "ACL not found")
}

/// `Permission denied: …` in the newer, detailed form (§3.8).
fn permission_denied(perm: &str, resource: &str) -> Reply {
    Reply::text(
        StatusCode::FORBIDDEN,
        format!(
            "Permission denied: token with AccessorID '{ANONYMOUS_ACCESSOR}' lacks permission '{perm}' on {resource:?}"
        ),
    )
}

/// Denies unless allowed; `None` means go ahead.
fn require(shared: &Shared, r: &Req, perm: &str, resource: &str) -> Option<Reply> {
    match auth(shared, r) {
        Auth::Allowed => None,
        Auth::NotFound => Some(acl_not_found()),
        Auth::Anonymous => Some(permission_denied(perm, resource)),
    }
}

/// `?dc=` other than ours fails like a Consul with no WAN peers.
fn check_dc(r: &Req) -> Option<Reply> {
    match r.get("dc") {
        Some(dc) if !dc.is_empty() && dc != "dc1" => Some(Reply::text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "No path to datacenter",
        )),
        _ => None,
    }
}

fn parse_query_opts(r: &Req) -> Result<QueryOpts, Reply> {
    if r.has("stale") && r.has("consistent") {
        return Err(Reply::text(
            StatusCode::BAD_REQUEST,
            "Cannot specify ?stale with ?consistent, conflicting semantics.",
        ));
    }
    let index = match r.get("index") {
        None | Some("") => 0,
        Some(v) => v
            .parse::<u64>()
            .map_err(|_| Reply::text(StatusCode::BAD_REQUEST, "Invalid index"))?,
    };
    let wait = match r.get("wait") {
        None | Some("") => DEFAULT_WAIT,
        Some(v) => parse_go_duration(v)
            .map_err(|_| Reply::text(StatusCode::BAD_REQUEST, "Invalid wait time"))?,
    };
    // `wait` ≤ 0 means the default; the maximum is 10 minutes (§3.6).
    let wait = if wait.is_zero() {
        DEFAULT_WAIT
    } else {
        wait.min(MAX_WAIT)
    };
    let consistency = if r.has("consistent") {
        "consistent"
    } else if r.has("stale") {
        "stale"
    } else {
        "leader"
    };
    Ok(QueryOpts {
        index,
        wait,
        consistency,
    })
}

/// What a blocking query's look watches for changes (its go-memdb watch
/// set, §3.6).
enum Watch {
    /// Anything: the look is run again on every change, and answers only
    /// once its index moved, so only changes to what it reads count.
    Any,
    /// Writes to keys starting with `prefix` (bytes); `seen` is the highest
    /// such write at the look. Where a read of a missing key is watched
    /// (`State::kv_missing_key_watch`): a write elsewhere moves the KV
    /// table's index, which that read reports, but does not wake it.
    KvPrefix { prefix: Vec<u8>, seen: u64 },
}

impl Watch {
    /// The watch of a read of the missing `key`.
    fn missing_key(st: &State, key: &str) -> Watch {
        let prefix = st.kv_missing_key_watch(key);
        Watch::KvPrefix {
            seen: st.kv_prefix_written(&prefix),
            prefix,
        }
    }

    fn fired(&self, st: &State) -> bool {
        match self {
            Watch::Any => true,
            Watch::KvPrefix { prefix, seen } => st.kv_prefix_written(prefix) > *seen,
        }
    }
}

/// Runs `query` as a Consul blocking query (§3.6): at once when `index` is
/// absent or the result's index is already past it; otherwise again each
/// time its watch fires, until the index is past, or until `wait` runs out:
/// then the last look's answer (whose index may equal the requested one,
/// and is the one of that look, not of now: Consul 1.8.7 does so).
async fn blocking<T>(
    shared: &Shared,
    q: &QueryOpts,
    query: impl Fn(&State) -> (u64, T, Watch),
) -> (u64, T) {
    let mut rx = shared.changes.subscribe();
    let deadline = tokio::time::Instant::now() + q.wait;
    loop {
        rx.borrow_and_update();
        let (idx, out, watch) = query(&shared.read());
        // Never report 0 (§3.1).
        let idx = idx.max(1);
        if q.index == 0 || idx > q.index {
            return (idx, out);
        }
        loop {
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {
                    rx.borrow_and_update();
                    if watch.fired(&shared.read()) {
                        break;
                    }
                }
                // Timeout (or the server is going away): the last look.
                _ => return (idx, out),
            }
        }
    }
}

/// Query-meta headers of reads (§3.7).
fn with_meta(reply: Reply, index: u64, q: &QueryOpts) -> Reply {
    reply
        .header("X-Consul-Index", index.max(1).to_string())
        .header("X-Consul-Knownleader", "true")
        .header("X-Consul-Lastcontact", "0")
        .header("X-Consul-Effective-Consistency", q.consistency)
        .header("X-Consul-Query-Backend", "blocking-query")
}

// ---------------------------------------------------------------- KV (§3.2–3.4)

async fn kv(shared: &Arc<Shared>, r: &Req, key: &str) -> Reply {
    if let Some(e) = check_dc(r) {
        return e;
    }
    match r.method {
        Method::GET => kv_get(shared, r, key).await,
        Method::PUT => kv_put(shared, r, key),
        Method::DELETE => kv_delete(shared, r, key),
        _ => method_not_allowed(r, &[Method::GET, Method::PUT, Method::DELETE]),
    }
}

enum KvRead {
    One(Option<Entry>),
    Many(Vec<Entry>),
    Keys(Vec<String>),
}

async fn kv_get(shared: &Arc<Shared>, r: &Req, key: &str) -> Reply {
    let recurse = r.has("recurse");
    let keys = r.has("keys");
    if !recurse && !keys && key.is_empty() {
        return Reply::text(StatusCode::BAD_REQUEST, "Missing key name");
    }
    let q = match parse_query_opts(r) {
        Ok(q) => q,
        Err(e) => return e,
    };
    // Anonymous list reads are filtered (to nothing), not refused (§3.2).
    let filtered = match auth(shared, r) {
        Auth::Allowed => false,
        Auth::NotFound => return acl_not_found(),
        Auth::Anonymous if recurse || keys => true,
        Auth::Anonymous => return permission_denied("key:read", key),
    };
    let separator = r
        .get("separator")
        .or_else(|| r.get("seperator"))
        .unwrap_or("")
        .to_string();
    let (idx, result) = blocking(shared, &q, |st| {
        if keys {
            let (idx, entries) = st.kv_list(key);
            let list = list_keys(key, &separator, &entries);
            (idx, KvRead::Keys(list), Watch::Any)
        } else if recurse {
            let (idx, entries) = st.kv_list(key);
            (idx, KvRead::Many(entries), Watch::Any)
        } else {
            let (idx, entry) = st.kv_get(key);
            let watch = match entry {
                Some(_) => Watch::Any,
                None => Watch::missing_key(st, key),
            };
            (idx, KvRead::One(entry), watch)
        }
    })
    .await;
    let reply = match result {
        KvRead::Keys(list) => {
            let list = if filtered { Vec::new() } else { list };
            // The root prefix answers `[]` where any other prefix is a 404.
            if list.is_empty() && !key.is_empty() {
                Reply::empty(StatusCode::NOT_FOUND)
            } else {
                r.json(&list)
            }
        }
        KvRead::Many(entries) if entries.is_empty() || filtered => {
            Reply::empty(StatusCode::NOT_FOUND)
        }
        KvRead::Many(entries) => r.json(&wire::dir_entries(&entries)),
        KvRead::One(None) => Reply::empty(StatusCode::NOT_FOUND),
        KvRead::One(Some(e)) if r.has("raw") => Reply {
            status: StatusCode::OK,
            headers: vec![
                ("Content-Type", "text/plain".to_string()),
                ("X-Content-Type-Options", "nosniff".to_string()),
                ("Content-Security-Policy", "sandbox".to_string()),
            ],
            body: e.value,
        },
        KvRead::One(Some(e)) => r.json(&wire::dir_entries(std::slice::from_ref(&e))),
    };
    with_meta(reply, idx, &q)
}

/// `?keys`: key names, collapsed at the first separator after the prefix.
fn list_keys(prefix: &str, separator: &str, entries: &[Entry]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for e in entries {
        let name = match separator {
            "" => e.key.clone(),
            sep => match e.key[prefix.len()..].find(sep) {
                Some(i) => e.key[..prefix.len() + i + sep.len()].to_string(),
                None => e.key.clone(),
            },
        };
        if out.last() != Some(&name) {
            out.push(name);
        }
    }
    out
}

/// Go `strconv.ParseUint` error text, which Consul returns as a 500.
fn parse_u64(v: &str) -> Result<u64, Reply> {
    v.parse::<u64>().map_err(|_| {
        let why = if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
            "value out of range"
        } else {
            "invalid syntax"
        };
        Reply::text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("strconv.ParseUint: parsing {v:?}: {why}"),
        )
    })
}

/// `Conflicting flags: <url.Values.Encode()>` (keys sorted, §3.3).
fn conflicting(r: &Req) -> Reply {
    let mut pairs = r.params.clone();
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    let encoded = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    Reply::text(
        StatusCode::BAD_REQUEST,
        format!("Conflicting flags: {encoded}"),
    )
}

fn bool_reply(b: bool) -> Reply {
    Reply::json_bytes(if b {
        b"true".to_vec()
    } else {
        b"false".to_vec()
    })
}

fn op_error(e: OpError) -> Reply {
    Reply::text(StatusCode::INTERNAL_SERVER_ERROR, e.0)
}

fn kv_put(shared: &Arc<Shared>, r: &Req, key: &str) -> Reply {
    if key.is_empty() {
        return Reply::text(StatusCode::BAD_REQUEST, "Missing key name");
    }
    if let Some(e) = require(shared, r, "key:write", key) {
        return e;
    }
    let set_flags = ["cas", "acquire", "release"]
        .iter()
        .filter(|f| r.has(f))
        .count();
    if set_flags > 1 {
        return conflicting(r);
    }
    let flags = match r.get("flags").map(parse_u64).transpose() {
        Ok(f) => f.unwrap_or(0),
        Err(e) => return e,
    };
    if r.body.len() > KV_MAX_VALUE_SIZE {
        return Reply::text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "Request body({} bytes) too large, max size: {KV_MAX_VALUE_SIZE} bytes. See https://developer.hashicorp.com/docs/agent/config/config-files#kv_max_value_size.",
                r.body.len()
            ),
        );
    }
    let value = &r.body[..];
    let now = Instant::now();
    let result = if let Some(cas) = r.get("cas") {
        match parse_u64(cas) {
            Ok(cas) => Ok(shared.write(|st| st.kv_cas(key, value, flags, cas))),
            Err(e) => return e,
        }
    } else if let Some(sid) = r.get("acquire") {
        shared.write(|st| st.kv_acquire(key, value, flags, sid, now))
    } else if let Some(sid) = r.get("release") {
        shared.write(|st| st.kv_release(key, value, flags, sid))
    } else {
        shared.write(|st| st.kv_set(key, value, flags));
        Ok(true)
    };
    match result {
        Ok(b) => bool_reply(b),
        Err(e) => op_error(e),
    }
}

fn kv_delete(shared: &Arc<Shared>, r: &Req, key: &str) -> Reply {
    let recurse = r.has("recurse");
    if recurse && r.has("cas") {
        return conflicting(r);
    }
    if key.is_empty() && !recurse {
        return Reply::text(StatusCode::BAD_REQUEST, "Missing key name");
    }
    if let Some(e) = require(shared, r, "key:write", key) {
        return e;
    }
    if recurse {
        return bool_reply(shared.write(|st| st.kv_delete_tree(key)));
    }
    match r.get("cas") {
        Some(cas) => match parse_u64(cas) {
            Ok(cas) => bool_reply(shared.write(|st| st.kv_delete_cas(key, cas))),
            Err(e) => e,
        },
        None => bool_reply(shared.write(|st| st.kv_delete(key))),
    }
}

// ------------------------------------------------------------ sessions (§3.5)

async fn session(shared: &Arc<Shared>, r: &Req, rest: &str) -> Reply {
    if let Some(e) = check_dc(r) {
        return e;
    }
    let (verb, arg) = match rest.split_once('/') {
        Some((v, a)) => (v, Some(a)),
        None => (rest, None),
    };
    let node = shared.read().node().to_string();
    match verb {
        "create" | "renew" | "destroy" => {
            if r.method != Method::PUT {
                return method_not_allowed(r, &[Method::PUT]);
            }
            if let Some(e) = require(shared, r, "session:write", &node) {
                return e;
            }
            match verb {
                "create" => session_create(shared, r),
                "renew" => session_renew(shared, r, arg.unwrap_or("")),
                _ => session_destroy(shared, arg.unwrap_or("")),
            }
        }
        "info" | "list" | "node" => {
            if r.method != Method::GET {
                return method_not_allowed(r, &[Method::GET]);
            }
            let q = match parse_query_opts(r) {
                Ok(q) => q,
                Err(e) => return e,
            };
            let filtered = match list_filter(shared, r) {
                Ok(f) => f,
                Err(reply) => return reply,
            };
            let arg = arg.unwrap_or("").to_string();
            if verb == "info" && arg.is_empty() {
                return Reply::text(StatusCode::BAD_REQUEST, "Missing session");
            }
            if verb == "info" {
                if let Err(e) = check_session_id(&arg) {
                    return op_error(e);
                }
            }
            let (idx, list) = blocking(shared, &q, |st| {
                let list: Vec<Session> = st
                    .sessions()
                    .filter(|s| match verb {
                        "info" => s.id == arg,
                        "node" => s.node == arg,
                        _ => true,
                    })
                    .cloned()
                    .collect();
                (st.sessions_index(), list, Watch::Any)
            })
            .await;
            let list = if filtered { Vec::new() } else { list };
            let json: Vec<wire::SessionJson<'_>> = list.iter().map(wire::session_json).collect();
            with_meta(r.json(&json), idx, &q)
        }
        _ => Reply::empty(StatusCode::NOT_FOUND),
    }
}

/// JSON object with keys folded to lower case and `_` removed, the way Go's
/// case-insensitive decoder (plus Consul's snake_case translation) sees them.
fn folded_object(body: &[u8]) -> Result<BTreeMap<String, Value>, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    match v {
        Value::Object(m) => Ok(m
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase().replace('_', ""), v))
            .collect()),
        Value::Null => Ok(BTreeMap::new()),
        other => Err(format!(
            "json: cannot unmarshal {} into Go value of type structs.Session",
            json_kind(&other)
        )),
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn opt_string(m: &BTreeMap<String, Value>, key: &str) -> Result<Option<String>, String> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(format!(
            "json: cannot unmarshal {} into Go struct field of type string",
            json_kind(other)
        )),
    }
}

fn opt_strings(m: &BTreeMap<String, Value>, key: &str) -> Result<Option<Vec<String>>, String> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                other => Err(format!(
                    "json: cannot unmarshal {} into Go struct field of type string",
                    json_kind(other)
                )),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(other) => Err(format!(
            "json: cannot unmarshal {} into Go struct field of type []string",
            json_kind(other)
        )),
    }
}

/// `LockDelay`: a duration string, or a number where values below 1000 are
/// seconds and larger ones nanoseconds (`lockDelayMinThreshold`, §1.4).
fn lock_delay(v: Option<&Value>) -> Result<Option<Duration>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => parse_go_duration(s).map(Some),
        Some(Value::Number(n)) => {
            let f = n.as_f64().unwrap_or(0.0).max(0.0);
            Ok(Some(if f < 1000.0 {
                Duration::from_secs_f64(f)
            } else {
                Duration::from_nanos(f as u64)
            }))
        }
        Some(other) => Err(format!(
            "json: cannot unmarshal {} into Go struct field of type time.Duration",
            json_kind(other)
        )),
    }
}

fn session_create(shared: &Arc<Shared>, r: &Req) -> Reply {
    let decode_failed = |e: String| {
        Reply::text(
            StatusCode::BAD_REQUEST,
            format!("Request decode failed: {e}"),
        )
    };
    // The body is optional and only decoded when non-empty (§3.5).
    let m = if r.body.is_empty() {
        BTreeMap::new()
    } else {
        match folded_object(&r.body) {
            Ok(m) => m,
            Err(e) => return decode_failed(e),
        }
    };
    let fields = (|| {
        Ok::<_, String>((
            opt_string(&m, "name")?,
            opt_string(&m, "node")?,
            opt_strings(&m, "checks")?,
            opt_strings(&m, "nodechecks")?,
            lock_delay(m.get("lockdelay"))?,
            opt_string(&m, "behavior")?,
            opt_string(&m, "ttl")?,
        ))
    })();
    let (name, node, checks, node_checks, delay, behavior, ttl_text) = match fields {
        Ok(f) => f,
        Err(e) => return decode_failed(e),
    };
    let server_error = |t: String| Reply::text(StatusCode::INTERNAL_SERVER_ERROR, t);
    let behavior = match behavior.as_deref() {
        None | Some("") | Some("release") => Behavior::Release,
        Some("delete") => Behavior::Delete,
        Some(other) => return server_error(format!("Invalid Behavior setting '{other}'")),
    };
    let ttl_text = ttl_text.unwrap_or_default();
    let mut ttl = Duration::ZERO;
    if !ttl_text.is_empty() {
        let ns = match parse_go_duration_ns(&ttl_text) {
            Ok(ns) => ns,
            Err(e) => return server_error(format!("Session TTL '{ttl_text}' invalid: {e}")),
        };
        let min = shared.session_ttl_min;
        let too_small = ns < 0 || (ns as u128) < min.as_nanos();
        if ns != 0 && (too_small || ns as u128 > SESSION_TTL_MAX.as_nanos()) {
            // Exact text Patroni matches with startswith (§0.3, [PAT-T]).
            return server_error(format!(
                "Invalid Session TTL '{ns}', must be between [{}={}]",
                format_go_duration(min),
                format_go_duration(SESSION_TTL_MAX)
            ));
        }
        ttl = Duration::from_nanos(ns.max(0) as u64);
    }
    // Defaults: serfHealth, unless checks were given (even as `[]`, §1.5).
    let node_checks = match (checks, node_checks) {
        (None, None) => vec!["serfHealth".to_string()],
        (a, b) => {
            let mut all = a.unwrap_or_default();
            for c in b.unwrap_or_default() {
                if !all.contains(&c) {
                    all.push(c);
                }
            }
            all
        }
    };
    let now = Instant::now();
    let result = shared.write(|st| {
        let node = node
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| st.node().to_string());
        if node != st.node() {
            return Err("Missing node registration".to_string());
        }
        if let Some(c) = node_checks.iter().find(|c| !st.check_exists(c)) {
            return Err(format!("Missing check '{c}' registration"));
        }
        let s = Session {
            id: uuid::Uuid::new_v4().to_string(),
            name: name.unwrap_or_default(),
            node,
            lock_delay: delay.unwrap_or(Duration::from_secs(15)),
            behavior,
            ttl_text: ttl_text.clone(),
            ttl,
            node_checks,
            create_index: 0,
            expires_at: None,
        };
        Ok(st.session_create(s, now))
    });
    match result {
        Ok(id) => r.json(&serde_json::json!({ "ID": id })),
        Err(e) => server_error(e),
    }
}

fn session_renew(shared: &Arc<Shared>, r: &Req, id: &str) -> Reply {
    if id.is_empty() {
        return Reply::text(StatusCode::BAD_REQUEST, "Missing session");
    }
    if let Err(e) = check_session_id(id) {
        return op_error(e);
    }
    // Not a Raft write: no index bump, but the reaper must re-arm (§3.1).
    let renewed = shared.write(|st| st.session_renew(id, Instant::now()));
    match renewed {
        Some(s) => r.json(&[wire::session_json(&s)]),
        None => Reply::text(
            StatusCode::NOT_FOUND,
            format!("Session id '{id}' not found"),
        ),
    }
}

fn session_destroy(shared: &Arc<Shared>, id: &str) -> Reply {
    if id.is_empty() {
        return Reply::text(StatusCode::BAD_REQUEST, "Missing session");
    }
    if let Err(e) = check_session_id(id) {
        return op_error(e);
    }
    // Idempotent: unknown ids are fine (§3.5).
    shared.write(|st| st.session_destroy(id, Instant::now()));
    bool_reply(true)
}

// --------------------------------------------------------------- agent (§3.9)

fn agent_self(shared: &Arc<Shared>, r: &Req) -> Reply {
    let node = shared.read().node().to_string();
    if let Some(e) = require(shared, r, "agent:read", &node) {
        return e;
    }
    r.json(&wire::agent_self(
        &node,
        &shared.node_id,
        shared.session_ttl_min,
    ))
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct AgentService<'a> {
    #[serde(rename = "ID")]
    id: &'a str,
    service: &'a str,
    tags: &'a [String],
    address: &'a str,
    port: u64,
    datacenter: &'static str,
}

fn agent_services(shared: &Arc<Shared>, r: &Req) -> Reply {
    let filtered = match list_filter(shared, r) {
        Ok(f) => f,
        Err(reply) => return reply,
    };
    let st = shared.read();
    let map: BTreeMap<&str, AgentService<'_>> = st
        .services()
        .filter(|_| !filtered)
        .map(|s| {
            (
                s.id.as_str(),
                AgentService {
                    id: &s.id,
                    service: &s.name,
                    tags: &s.tags,
                    address: &s.address,
                    port: s.port,
                    datacenter: "dc1",
                },
            )
        })
        .collect();
    r.json(&map)
}

/// Reads one check definition (keys folded) into a stored check.
fn check_from(v: &Value, default_id: String) -> Check {
    let m: BTreeMap<String, &Value> = match v {
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase().replace('_', ""), v))
            .collect(),
        _ => BTreeMap::new(),
    };
    let s = |k: &str| m.get(k).and_then(|v| v.as_str()).map(str::to_string);
    let id = s("checkid").or_else(|| s("id")).unwrap_or(default_id);
    Check {
        name: s("name").unwrap_or_else(|| format!("Service '{id}' check")),
        // New checks start critical unless the registration says otherwise.
        status: s("status").unwrap_or_else(|| "critical".to_string()),
        id,
    }
}

fn service_register(shared: &Arc<Shared>, r: &Req) -> Reply {
    let m = match folded_object(&r.body) {
        Ok(m) => m,
        Err(e) => {
            return Reply::text(
                StatusCode::BAD_REQUEST,
                format!("Request decode failed: {e}"),
            )
        }
    };
    let s = |k: &str| m.get(k).and_then(|v| v.as_str()).map(str::to_string);
    let Some(name) = s("name").filter(|n| !n.is_empty()) else {
        return Reply::text(StatusCode::BAD_REQUEST, "Missing service name");
    };
    if let Some(e) = require(shared, r, "service:write", &name) {
        return e;
    }
    let address = s("address").unwrap_or_default();
    if address == "0.0.0.0" || address == "::" || address == "[::]" {
        return Reply::text(StatusCode::BAD_REQUEST, "Invalid service address");
    }
    let id = s("id")
        .filter(|i| !i.is_empty())
        .unwrap_or_else(|| name.clone());
    // Both `check` (py-consul ≤ 1.3) and `checks` (≥ 1.4.1) are accepted (§0.4).
    let mut raw_checks: Vec<&Value> = Vec::new();
    if let Some(c) = m.get("check").filter(|c| c.is_object()) {
        raw_checks.push(c);
    }
    if let Some(Value::Array(a)) = m.get("checks") {
        raw_checks.extend(a.iter());
    }
    let many = raw_checks.len() > 1;
    let checks = raw_checks
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let default_id = if many {
                format!("service:{id}:{}", i + 1)
            } else {
                format!("service:{id}")
            };
            check_from(c, default_id)
        })
        .collect();
    let tags = m
        .get("tags")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let svc = Service {
        id,
        name,
        tags,
        address,
        port: m.get("port").and_then(Value::as_u64).unwrap_or(0),
        checks,
        modify_index: 0,
    };
    shared.write(|st| st.service_register(svc));
    Reply::empty(StatusCode::OK)
}

fn service_deregister(shared: &Arc<Shared>, r: &Req, id: &str) -> Reply {
    if let Some(e) = require(shared, r, "service:write", id) {
        return e;
    }
    if shared.write(|st| st.service_deregister(id)) {
        Reply::empty(StatusCode::OK)
    } else {
        Reply::text(
            StatusCode::NOT_FOUND,
            format!(
                "Unknown service ID {id:?}. Ensure that the service ID is passed, not the service name."
            ),
        )
    }
}

// -------------------------------------------------------------- health (§3.12)

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct HealthNode<'a> {
    #[serde(rename = "ID")]
    id: &'a str,
    node: &'a str,
    address: &'static str,
    datacenter: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct HealthCheck<'a> {
    node: &'a str,
    #[serde(rename = "CheckID")]
    check_id: &'a str,
    name: &'a str,
    status: &'a str,
    #[serde(rename = "ServiceID")]
    service_id: &'a str,
    service_name: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct HealthEntry<'a> {
    node: HealthNode<'a>,
    service: AgentService<'a>,
    checks: Vec<HealthCheck<'a>>,
}

async fn health_service(shared: &Arc<Shared>, r: &Req, name: &str) -> Reply {
    if r.method != Method::GET {
        return method_not_allowed(r, &[Method::GET]);
    }
    let q = match parse_query_opts(r) {
        Ok(q) => q,
        Err(e) => return e,
    };
    let filtered = match list_filter(shared, r) {
        Ok(f) => f,
        Err(reply) => return reply,
    };
    let passing = r.has("passing");
    let tags: Vec<&str> = r
        .params
        .iter()
        .filter(|(k, _)| k == "tag")
        .map(|(_, v)| v.as_str())
        .collect();
    let (idx, services) = blocking(shared, &q, |st| {
        let list: Vec<Service> = st
            .services()
            .filter(|s| s.name == name)
            .filter(|s| tags.iter().all(|t| s.tags.iter().any(|x| x == t)))
            .filter(|s| !passing || s.checks.iter().all(|c| c.status == "passing"))
            .cloned()
            .collect();
        (st.services_index(), list, Watch::Any)
    })
    .await;
    let services = if filtered { Vec::new() } else { services };
    let node = shared.read().node().to_string();
    let serf = Check {
        id: "serfHealth".to_string(),
        name: "Serf Health Status".to_string(),
        status: "passing".to_string(),
    };
    let entries: Vec<HealthEntry<'_>> = services
        .iter()
        .map(|s| HealthEntry {
            node: HealthNode {
                id: &shared.node_id,
                node: &node,
                address: "127.0.0.1",
                datacenter: "dc1",
            },
            service: AgentService {
                id: &s.id,
                service: &s.name,
                tags: &s.tags,
                address: &s.address,
                port: s.port,
                datacenter: "dc1",
            },
            checks: std::iter::once((&serf, "", ""))
                .chain(s.checks.iter().map(|c| (c, s.id.as_str(), s.name.as_str())))
                .map(|(c, sid, sname)| HealthCheck {
                    node: &node,
                    check_id: &c.id,
                    name: &c.name,
                    status: &c.status,
                    service_id: sid,
                    service_name: sname,
                })
                .collect(),
        })
        .collect();
    // No instances is `[]` with 200, not a 404 (§3.12).
    with_meta(r.json(&entries), idx, &q)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str) -> Entry {
        Entry {
            key: key.to_string(),
            value: Vec::new(),
            create_index: 1,
            modify_index: 1,
            lock_index: 0,
            flags: 0,
            session: None,
        }
    }

    #[test]
    fn keys_collapse_at_separator() {
        let entries = [entry("a/b/c"), entry("a/b/d"), entry("a/e"), entry("a/f/")];
        assert_eq!(list_keys("a/", "/", &entries), vec!["a/b/", "a/e", "a/f/"]);
        assert_eq!(list_keys("a/", "", &entries).len(), 4);
    }
}
