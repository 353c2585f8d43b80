//! The double's data: the global index, the KV table with tombstones and
//! lock-delays, sessions and agent services. Pure: no I/O, no clock (callers
//! pass `now`), so every rule of SPEC.md §3 is a plain function here and
//! the HTTP layer only translates requests into these calls.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// Consul caps an applied lock-delay at 60 s (`structs.MaxLockDelay`, §3.5).
pub const MAX_LOCK_DELAY: Duration = Duration::from_secs(60);
/// Session TTLs above 24 h are rejected (`structs.SessionTTLMax`, §3.5).
pub const SESSION_TTL_MAX: Duration = Duration::from_secs(24 * 3600);

/// One KV entry, as Consul's `DirEntry` holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The key, without a leading `/`.
    pub key: String,
    /// The raw value bytes (empty reads back as JSON `null`).
    pub value: Vec<u8>,
    /// Index at which the key was created.
    pub create_index: u64,
    /// Index of the last write that changed the entry.
    pub modify_index: u64,
    /// Number of times the key was acquired while unheld.
    pub lock_index: u64,
    /// Opaque client flags.
    pub flags: u64,
    /// The session holding the lock, if any.
    pub session: Option<String>,
}

impl Entry {
    /// Consul's `DirEntry.Equal`: the fields a no-op write is judged by (§3.1).
    fn same_content(&self, other: &Entry) -> bool {
        self.lock_index == other.lock_index
            && self.key == other.key
            && self.flags == other.flags
            && self.value == other.value
            && self.session == other.session
    }
}

/// What happens to a session's keys when it is invalidated (§3.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behavior {
    /// Keys are released: `Session` cleared, `LockIndex` kept.
    Release,
    /// Keys are deleted, leaving tombstones.
    Delete,
}

impl Behavior {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Behavior::Release => "release",
            Behavior::Delete => "delete",
        }
    }
}

/// One session.
#[derive(Clone, Debug)]
pub struct Session {
    /// UUID-format id.
    pub id: String,
    /// Free-form name.
    pub name: String,
    /// The node it is bound to.
    pub node: String,
    /// Lock-delay as requested (capped only when applied, §3.5).
    pub lock_delay: Duration,
    /// Invalidation behaviour.
    pub behavior: Behavior,
    /// The TTL text exactly as the client sent it (echoed back, §3.5).
    pub ttl_text: String,
    /// Parsed TTL; zero means no TTL.
    pub ttl: Duration,
    /// Node checks the session depends on.
    pub node_checks: Vec<String>,
    /// Raft index of creation.
    pub create_index: u64,
    /// When the session expires: `2 × TTL` after create/renew (§3.5).
    pub expires_at: Option<Instant>,
}

/// An agent service registration, as far as the double keeps it.
#[derive(Clone, Debug, PartialEq)]
pub struct Service {
    /// Service id (may contain `/`, §3.9).
    pub id: String,
    /// Service name.
    pub name: String,
    /// Tags in request order.
    pub tags: Vec<String>,
    /// Address, possibly empty.
    pub address: String,
    /// Port.
    pub port: u64,
    /// Checks registered with it.
    pub checks: Vec<Check>,
    /// Index of the registration.
    pub modify_index: u64,
}

/// A service check as registered. The double does not run checks, so the
/// status stays what the registration said (Consul's default: `critical`).
#[derive(Clone, Debug, PartialEq)]
pub struct Check {
    /// Check id (`service:<id>` unless given).
    pub id: String,
    /// Display name.
    pub name: String,
    /// `passing`, `warning` or `critical`.
    pub status: String,
}

/// A KV or session failure that Consul reports as an HTTP 500 text.
#[derive(Debug, PartialEq, Eq)]
pub struct OpError(pub String);

/// All of the double's state.
#[derive(Debug)]
pub struct State {
    index: u64,
    kv: BTreeMap<String, Entry>,
    tombstones: BTreeMap<String, u64>,
    lock_delays: HashMap<String, Instant>,
    sessions: BTreeMap<String, Session>,
    services: BTreeMap<String, Service>,
    /// Index of the last session create or invalidation: the sessions
    /// table's index, which session reads report.
    sessions_index: u64,
    /// Index of the last service registration change: the services
    /// table's index, which health reads report.
    services_index: u64,
    node: String,
}

impl State {
    /// An empty store for agent node `node`. Index starts at 1: Consul never
    /// reports 0 (§3.1), and the first write gets 2.
    pub fn new(node: &str) -> State {
        State {
            index: 1,
            kv: BTreeMap::new(),
            tombstones: BTreeMap::new(),
            lock_delays: HashMap::new(),
            sessions: BTreeMap::new(),
            services: BTreeMap::new(),
            sessions_index: 1,
            services_index: 1,
            node: node.to_string(),
        }
    }

    /// The global (Raft) index: never 0, never goes backwards.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// The sessions table's index (session create, destroy, expiry; not
    /// renew), which session reads report (seen on Consul 1.8.7).
    pub fn sessions_index(&self) -> u64 {
        self.sessions_index
    }

    /// The services table's index (any registration or deregistration),
    /// which health reads report (seen on Consul 1.8.7).
    pub fn services_index(&self) -> u64 {
        self.services_index
    }

    /// The agent's node name.
    pub fn node(&self) -> &str {
        &self.node
    }

    fn next_index(&mut self) -> u64 {
        self.index += 1;
        self.index
    }

    /// Table-wide KV index: max over entries and tombstones, 1 if none
    /// (§3.2 "Single key not found").
    pub fn kv_table_index(&self) -> u64 {
        let live = self.kv.values().map(|e| e.modify_index).max().unwrap_or(0);
        let dead = self.tombstones.values().copied().max().unwrap_or(0);
        live.max(dead).max(1)
    }

    /// A single key, with the index a GET reports: the entry's ModifyIndex,
    /// or the table index when missing (§3.2).
    pub fn kv_get(&self, key: &str) -> (u64, Option<Entry>) {
        match self.kv.get(key) {
            Some(e) => (e.modify_index.max(1), Some(e.clone())),
            None => (self.kv_table_index(), None),
        }
    }

    /// All entries under `prefix` in key order, with the prefix index: the
    /// max of entries and tombstones under it, else the table index (§3.2).
    pub fn kv_list(&self, prefix: &str) -> (u64, Vec<Entry>) {
        let entries: Vec<Entry> = self
            .kv
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, e)| e.clone())
            .collect();
        let live = entries.iter().map(|e| e.modify_index).max().unwrap_or(0);
        let dead = self
            .tombstones
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, i)| *i)
            .max()
            .unwrap_or(0);
        let idx = live.max(dead);
        let idx = if idx == 0 { self.kv_table_index() } else { idx };
        (idx, entries)
    }

    /// Which writes wake a blocking read of the missing `key`: those to
    /// keys starting with the returned bytes ("" is the root: any KV
    /// write). go-memdb hands such a read the watch channel of the deepest
    /// radix-tree node whose edge matched on the way to where the key would
    /// be (`iradix` `GetWatch`; keys are stored NUL-terminated), and a
    /// write closes the channel of every node on its own path and of a node
    /// it splits: both are the writes to keys under that node's edge. So
    /// on Consul 1.8.7 a write to a sibling under the same prefix wakes the
    /// read (still 404, with the new table index) and writes elsewhere do
    /// not. Not reproduced: a delete elsewhere that merges that node into
    /// its parent also wakes it on Consul.
    pub fn kv_missing_key_watch(&self, key: &str) -> Vec<u8> {
        let target: Vec<u8> = key.bytes().chain([0]).collect();
        let stored: Vec<Vec<u8>> = self
            .kv
            .keys()
            .map(|k| k.bytes().chain([0]).collect())
            .collect();
        // Length of the path to the current node, and of the watched edge.
        let (mut node, mut watch) = (0, 0);
        while node < target.len() {
            let edge = &target[..=node];
            let mut under = stored.iter().filter(|k| k.starts_with(edge));
            let Some(first) = under.next() else { break };
            // The child's path: the longest common prefix of the keys under it.
            let child = under.fold(first.len(), |n, k| {
                first[..n].iter().zip(k).take_while(|(a, b)| a == b).count()
            });
            watch = node + 1;
            if target.starts_with(&first[..child]) {
                node = child;
            } else {
                break;
            }
        }
        target[..watch].to_vec()
    }

    /// The highest index of a write (live entry or tombstone) to a key
    /// starting with `prefix`; 0 when there was none.
    pub fn kv_prefix_written(&self, prefix: &[u8]) -> u64 {
        let live = self
            .kv
            .values()
            .filter(|e| e.key.as_bytes().starts_with(prefix))
            .map(|e| e.modify_index);
        let dead = self
            .tombstones
            .iter()
            .filter(|(k, _)| k.as_bytes().starts_with(prefix))
            .map(|(_, i)| *i);
        live.chain(dead).max().unwrap_or(0)
    }

    /// Consul's `kvsSetTxn`: keeps CreateIndex, keeps the existing Session
    /// unless `update_session`, and skips a write equal to the stored entry
    /// (no ModifyIndex bump, §3.1). Returns whether anything changed.
    fn set_txn(&mut self, mut entry: Entry, update_session: bool) -> bool {
        let existing = self.kv.get(&entry.key);
        if !update_session {
            entry.session = existing.and_then(|e| e.session.clone());
        }
        if let Some(old) = existing {
            if old.same_content(&entry) {
                return false;
            }
        }
        let create_index = existing.map(|e| e.create_index);
        let idx = self.next_index();
        entry.create_index = create_index.unwrap_or(idx);
        entry.modify_index = idx;
        self.kv.insert(entry.key.clone(), entry);
        true
    }

    fn new_entry(key: &str, value: &[u8], flags: u64) -> Entry {
        Entry {
            key: key.to_string(),
            value: value.to_vec(),
            create_index: 0,
            modify_index: 0,
            // The HTTP handler builds the entry with LockIndex 0 and
            // kvsSetTxn does not copy it (§3.1, derived).
            lock_index: 0,
            flags,
            session: None,
        }
    }

    /// Plain PUT: always `true` (§3.3). Returns whether the store changed.
    pub fn kv_set(&mut self, key: &str, value: &[u8], flags: u64) -> bool {
        self.set_txn(Self::new_entry(key, value, flags), false)
    }

    /// `?cas=N`: 0 is create-only; N>0 needs an existing key at ModifyIndex N.
    pub fn kv_cas(&mut self, key: &str, value: &[u8], flags: u64, cas: u64) -> bool {
        match (self.kv.get(key), cas) {
            (Some(_), 0) => return false,
            (None, n) if n > 0 => return false,
            (Some(e), n) if e.modify_index != n => return false,
            _ => {}
        }
        self.set_txn(Self::new_entry(key, value, flags), false);
        true
    }

    /// `?acquire=<sid>` (§3.3): lock-delay is checked first (on the leader,
    /// before Raft, [C-KVS]), then the session, then the holder.
    pub fn kv_acquire(
        &mut self,
        key: &str,
        value: &[u8],
        flags: u64,
        sid: &str,
        now: Instant,
    ) -> Result<bool, OpError> {
        if let Some(until) = self.lock_delays.get(key) {
            if *until > now {
                return Ok(false);
            }
        }
        if sid.is_empty() {
            return Err(OpError("missing session".to_string()));
        }
        check_session_id(sid)?;
        if !self.sessions.contains_key(sid) {
            // Go `%#v` of a string: double-quoted (§3.3, [I-1139]).
            return Err(OpError(format!("invalid session {sid:?}")));
        }
        let mut entry = Self::new_entry(key, value, flags);
        match self.kv.get(key) {
            Some(e) => match &e.session {
                Some(holder) if holder == sid => entry.lock_index = e.lock_index,
                Some(_) => return Ok(false),
                None => entry.lock_index = e.lock_index + 1,
            },
            None => entry.lock_index = 1,
        }
        entry.session = Some(sid.to_string());
        self.set_txn(entry, true);
        Ok(true)
    }

    /// `?release=<sid>` (§3.3): clears Session, keeps LockIndex, stores the body.
    pub fn kv_release(
        &mut self,
        key: &str,
        value: &[u8],
        flags: u64,
        sid: &str,
    ) -> Result<bool, OpError> {
        if sid.is_empty() {
            return Err(OpError("missing session".to_string()));
        }
        let lock_index = match self.kv.get(key) {
            Some(e) if e.session.as_deref() == Some(sid) => e.lock_index,
            _ => return Ok(false),
        };
        let mut entry = Self::new_entry(key, value, flags);
        entry.lock_index = lock_index;
        self.set_txn(entry, true);
        Ok(true)
    }

    fn delete_at(&mut self, key: &str, idx: u64) {
        if self.kv.remove(key).is_some() {
            self.tombstones.insert(key.to_string(), idx);
        }
    }

    /// Plain DELETE: `true` whether or not the key existed (§3.4).
    pub fn kv_delete(&mut self, key: &str) -> bool {
        if self.kv.contains_key(key) {
            let idx = self.next_index();
            self.delete_at(key, idx);
        }
        true
    }

    /// `DELETE ?cas=N`: a missing key is `true` (`return entry == nil`, §3.4).
    pub fn kv_delete_cas(&mut self, key: &str, cas: u64) -> bool {
        match self.kv.get(key) {
            None => true,
            Some(e) if e.modify_index != cas => false,
            Some(_) => {
                let idx = self.next_index();
                self.delete_at(key, idx);
                true
            }
        }
    }

    /// `DELETE ?recurse`: every key under the prefix, one index (§3.4).
    pub fn kv_delete_tree(&mut self, prefix: &str) -> bool {
        let keys: Vec<String> = self
            .kv
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k.clone())
            .collect();
        if !keys.is_empty() {
            let idx = self.next_index();
            for k in keys {
                self.delete_at(&k, idx);
            }
        }
        true
    }

    /// Stores a validated session and arms its TTL timer at 2×TTL (§3.5).
    pub fn session_create(&mut self, mut s: Session, now: Instant) -> String {
        s.create_index = self.next_index();
        self.sessions_index = s.create_index;
        s.expires_at = expiry(s.ttl, now);
        let id = s.id.clone();
        self.sessions.insert(id.clone(), s);
        id
    }

    /// Renew: resets the timer; `None` when unknown (→ 404). Not a Raft
    /// write, so no index bump (§3.1).
    pub fn session_renew(&mut self, id: &str, now: Instant) -> Option<Session> {
        let s = self.sessions.get_mut(id)?;
        s.expires_at = expiry(s.ttl, now);
        Some(s.clone())
    }

    /// All sessions in id order.
    pub fn sessions(&self) -> impl Iterator<Item = &Session> {
        self.sessions.values()
    }

    /// Destroys a session (idempotent); returns whether it existed.
    pub fn session_destroy(&mut self, id: &str, now: Instant) -> bool {
        self.invalidate(id, now)
    }

    /// Consul's `deleteSessionTxn`: in one index, release or delete every key
    /// the session holds, and arm each key's lock-delay (capped at 60 s).
    fn invalidate(&mut self, id: &str, now: Instant) -> bool {
        let Some(s) = self.sessions.remove(id) else {
            return false;
        };
        let idx = self.next_index();
        self.sessions_index = idx;
        let delay = s.lock_delay.min(MAX_LOCK_DELAY);
        let held: Vec<String> = self
            .kv
            .values()
            .filter(|e| e.session.as_deref() == Some(id))
            .map(|e| e.key.clone())
            .collect();
        for key in held {
            match s.behavior {
                Behavior::Release => {
                    if let Some(e) = self.kv.get_mut(&key) {
                        e.session = None;
                        e.modify_index = idx;
                    }
                }
                Behavior::Delete => self.delete_at(&key, idx),
            }
            if !delay.is_zero() {
                self.lock_delays.insert(key, now + delay);
            }
        }
        true
    }

    /// Invalidates every session whose timer ran out; returns how many.
    pub fn expire_sessions(&mut self, now: Instant) -> usize {
        let due: Vec<String> = self
            .sessions
            .values()
            .filter(|s| s.expires_at.is_some_and(|t| t <= now))
            .map(|s| s.id.clone())
            .collect();
        for id in &due {
            self.invalidate(id, now);
        }
        self.lock_delays.retain(|_, until| *until > now);
        due.len()
    }

    /// The earliest session expiry, for the reaper's timer.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.sessions.values().filter_map(|s| s.expires_at).min()
    }

    /// Whether check `id` exists on this agent: `serfHealth` always does,
    /// service checks once registered.
    pub fn check_exists(&self, id: &str) -> bool {
        id == "serfHealth"
            || self
                .services
                .values()
                .any(|s| s.checks.iter().any(|c| c.id == id))
    }

    /// Registers or replaces a service; bumps the index.
    pub fn service_register(&mut self, mut svc: Service) {
        svc.modify_index = self.next_index();
        self.services_index = svc.modify_index;
        self.services.insert(svc.id.clone(), svc);
    }

    /// Deregisters; `false` when the id is unknown (→ 404, §3.9).
    pub fn service_deregister(&mut self, id: &str) -> bool {
        if self.services.remove(id).is_some() {
            self.services_index = self.next_index();
            true
        } else {
            false
        }
    }

    /// All registered services in id order.
    pub fn services(&self) -> impl Iterator<Item = &Service> {
        self.services.values()
    }
}

/// Consul looks sessions up through go-memdb's UUID index, which parses the
/// id first (`UUIDFieldIndex.parseString`, length enforced): an id that is
/// no UUID fails the lookup itself, and Consul answers 500 `failed session
/// lookup: index error: <why>` (seen on Consul 1.8.7 for acquire, renew,
/// info and destroy). 36 hex digits without hyphens pass.
pub fn check_session_id(id: &str) -> Result<(), OpError> {
    let hyphens = id.matches('-').count();
    let hex: Vec<u8> = id.bytes().filter(|b| *b != b'-').collect();
    let why = if id.len() != 36 {
        "UUID must be 36 characters".to_string()
    } else if hyphens > 4 {
        format!("UUID should have maximum of 4 \"-\"; got {hyphens}")
    } else if hex.len() % 2 != 0 {
        "Input (without hyphens) must be even length".to_string()
    } else if let Some(b) = hex.iter().find(|b| !b.is_ascii_hexdigit()) {
        // Go's `%#U` of the byte, as `hex.InvalidByteError` prints it.
        format!(
            "Invalid UUID: encoding/hex: invalid byte: U+{:04X} '{}'",
            b, *b as char
        )
    } else {
        return Ok(());
    };
    Err(OpError(format!(
        "failed session lookup: index error: {why}"
    )))
}

fn expiry(ttl: Duration, now: Instant) -> Option<Instant> {
    // Consul arms the timer at TTL × SessionTTLMultiplier (2) (§3.5 [C-SESTTL]).
    (!ttl.is_zero()).then(|| now + ttl * 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S1: &str = "11111111-1111-1111-1111-111111111111";
    const S2: &str = "22222222-2222-2222-2222-222222222222";

    fn session(id: &str, behavior: Behavior, ttl: Duration, lock_delay: Duration) -> Session {
        Session {
            id: id.to_string(),
            name: String::new(),
            node: "n".to_string(),
            lock_delay,
            behavior,
            ttl_text: String::new(),
            ttl,
            node_checks: vec![],
            create_index: 0,
            expires_at: None,
        }
    }

    #[test]
    fn missing_key_watch_is_the_radix_edge_towards_it() {
        let mut st = State::new("n");
        // Empty tree: the root, so any write.
        assert_eq!(st.kv_missing_key_watch("a/missing"), b"");
        st.kv_set("a/x", b"1", 0);
        st.kv_set("zz/y", b"1", 0);
        // Root edges `a` and `z`: the read watches the `a` node.
        assert_eq!(st.kv_missing_key_watch("a/missing"), b"a");
        assert_eq!(st.kv_missing_key_watch("b"), b"");
        st.kv_set("a/other", b"1", 0);
        // `a/` now branches into `x` and `o`; `a/m…` has no edge below it.
        assert_eq!(st.kv_missing_key_watch("a/missing"), b"a");
        assert_eq!(st.kv_missing_key_watch("a/x2"), b"a/x");
        assert_eq!(st.kv_missing_key_watch("a/o"), b"a/o");
        // Tombstones count as writes under the prefix.
        let before = st.kv_prefix_written(b"a");
        st.kv_delete("a/x");
        assert!(st.kv_prefix_written(b"a") > before);
        assert_eq!(st.kv_prefix_written(b"q"), 0);
    }

    #[test]
    fn session_ids_must_parse_as_uuids() {
        assert_eq!(
            check_session_id("adf4238a-882b-9ddc-4a9d-5b6758e4159e"),
            Ok(())
        );
        assert_eq!(
            check_session_id("0123456789abcdef0123456789abcdef0123"),
            Ok(())
        );
        let why = |id: &str| check_session_id(id).map_err(|e| e.0).err();
        assert_eq!(
            why("deadbeef").as_deref(),
            Some("failed session lookup: index error: UUID must be 36 characters")
        );
        assert_eq!(
            why("0123456789abcdef0123456789abcdef012-").as_deref(),
            Some("failed session lookup: index error: Input (without hyphens) must be even length")
        );
        assert_eq!(
            why("a-b-c-d-e-0123456789abcdef0123456789").as_deref(),
            Some("failed session lookup: index error: UUID should have maximum of 4 \"-\"; got 5")
        );
        assert_eq!(
            why("zdf4238a-882b-9ddc-4a9d-5b6758e4159e").as_deref(),
            Some("failed session lookup: index error: Invalid UUID: encoding/hex: invalid byte: U+007A 'z'")
        );
    }

    #[test]
    fn noop_write_keeps_indexes() {
        let mut st = State::new("n");
        assert!(st.kv_set("a", b"1", 0));
        let (i1, _) = st.kv_get("a");
        assert!(!st.kv_set("a", b"1", 0));
        assert_eq!(st.kv_get("a").0, i1);
        assert_eq!(st.index(), i1);
    }

    #[test]
    fn lock_index_rules() {
        let now = Instant::now();
        let mut st = State::new("n");
        let sid = st.session_create(
            session(S1, Behavior::Release, Duration::ZERO, Duration::ZERO),
            now,
        );
        assert_eq!(st.kv_acquire("k", b"v", 0, &sid, now), Ok(true));
        assert_eq!(st.kv_get("k").1.map(|e| e.lock_index), Some(1));
        // Re-acquire by the holder keeps LockIndex.
        assert_eq!(st.kv_acquire("k", b"w", 0, &sid, now), Ok(true));
        assert_eq!(st.kv_get("k").1.map(|e| e.lock_index), Some(1));
        assert_eq!(st.kv_release("k", b"w", 0, &sid), Ok(true));
        let e = st.kv_get("k").1.expect("key");
        assert_eq!((e.lock_index, e.session), (1, None));
        assert_eq!(st.kv_acquire("k", b"w", 0, &sid, now), Ok(true));
        assert_eq!(st.kv_get("k").1.map(|e| e.lock_index), Some(2));
        // A plain PUT keeps Session, zeroes LockIndex.
        st.kv_set("k", b"x", 0);
        let e = st.kv_get("k").1.expect("key");
        assert_eq!((e.lock_index, e.session.as_deref()), (0, Some(S1)));
    }

    #[test]
    fn invalidation_deletes_and_arms_lock_delay() {
        let now = Instant::now();
        let mut st = State::new("n");
        st.session_create(
            session(
                S1,
                Behavior::Delete,
                Duration::from_secs(1),
                Duration::from_secs(90),
            ),
            now,
        );
        st.session_create(
            session(S2, Behavior::Release, Duration::ZERO, Duration::ZERO),
            now,
        );
        assert_eq!(st.kv_acquire("k", b"v", 0, S1, now), Ok(true));
        assert_eq!(st.expire_sessions(now + Duration::from_millis(1999)), 0);
        assert_eq!(st.expire_sessions(now + Duration::from_secs(2)), 1);
        assert!(st.kv_get("k").1.is_none());
        // Lock-delay (90 s requested) capped at 60 s from the invalidation.
        let t = now + Duration::from_secs(2 + 59);
        assert_eq!(st.kv_acquire("k", b"v", 0, S2, t), Ok(false));
        let t = now + Duration::from_secs(2 + 61);
        assert_eq!(st.kv_acquire("k", b"v", 0, S2, t), Ok(true));
    }

    #[test]
    fn prefix_index_never_goes_back() {
        let mut st = State::new("n");
        st.kv_set("p/a", b"1", 0);
        st.kv_set("p/b", b"1", 0);
        let (before, _) = st.kv_list("p/");
        st.kv_delete("p/b");
        let (after, entries) = st.kv_list("p/");
        assert_eq!(entries.len(), 1);
        assert!(after > before);
    }
}
