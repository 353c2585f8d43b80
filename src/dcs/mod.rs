//! The DCS: one small interface (`Dcs`) over Consul's and etcd's clients,
//! and the layout of Patroni's keys in either.
//!
//! `Entry` is what a read of the DCS gives, whichever client made it; `keys`
//! reads Patroni's layout from entries and knows nothing of the transport.
//! The planners see only `ScopeView`s built from entries: they cannot tell
//! which DCS answered.

pub mod consul;
pub mod etcd3;
mod http;
pub mod keys;

use crate::config::DcsConfig;
use crate::error::{Error, Result};
use std::time::Instant;

pub use http::MAX_ANSWER;

/// One key as the DCS returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Full key.
    pub key: String,
    /// Decoded value (`null` becomes empty).
    pub value: Vec<u8>,
    /// The index of its last change (Consul's ModifyIndex, etcd's
    /// mod_revision), for check-and-set.
    pub modify_index: u64,
    /// What keeps the key alive, if anything: Consul's session, etcd's lease.
    pub session: Option<String>,
}

/// The DCS this run talks to. Every call is bounded by the per-call timeout
/// and by the deadline of the DCS part of the run.
pub enum Dcs {
    Consul(consul::Consul),
    Etcd3(etcd3::Etcd3),
}

impl Dcs {
    /// Builds the client; `deadline` is when the DCS part of the run must
    /// end; `lock_file` names the state directory (etcd keeps its auth
    /// token there between runs). Setup errors surface on the first call.
    pub fn new(cfg: &DcsConfig, lock_file: &std::path::Path, deadline: Instant) -> Self {
        match cfg {
            DcsConfig::Consul(c) => Dcs::Consul(consul::Consul::new(c, deadline)),
            DcsConfig::Etcd3(e) => Dcs::Etcd3(etcd3::Etcd3::new(e, lock_file, deadline)),
        }
    }

    /// Moves the end of the DCS part of the run (the record step after the
    /// local change gets the time the local steps left over).
    pub fn set_deadline(&self, deadline: Instant) {
        match self {
            Dcs::Consul(c) => c.set_deadline(deadline),
            Dcs::Etcd3(e) => e.set_deadline(deadline),
        }
    }

    /// Logs in again at the next call rather than use a kept credential
    /// (etcd's token): what `check-config --online` checks is the file.
    pub fn login_afresh(&self) {
        if let Dcs::Etcd3(e) = self {
            e.login_afresh();
        }
    }

    /// The setup error every call would return, if any (for check-config).
    pub fn setup_error(&self) -> Option<&Error> {
        match self {
            Dcs::Consul(c) => c.setup_error(),
            Dcs::Etcd3(e) => e.setup_error(),
        }
    }

    /// Where it is reached (for messages).
    pub fn url(&self) -> String {
        match self {
            Dcs::Consul(c) => c.url().to_string(),
            Dcs::Etcd3(e) => e.url(),
        }
    }

    /// Reads one key; `None` when it does not exist. `consistent` asks
    /// Consul for a read through its leader with a quorum check; etcd's
    /// reads are all linearizable.
    pub async fn get(&self, key: &str, consistent: bool) -> Result<Option<Entry>> {
        match self {
            Dcs::Consul(c) => c.get(key, consistent).await,
            Dcs::Etcd3(e) => e.get(key).await,
        }
    }

    /// Reads every key under `prefix` (which should end in `/`) in one call.
    pub async fn list(&self, prefix: &str, consistent: bool) -> Result<Vec<Entry>> {
        match self {
            Dcs::Consul(c) => c.list(prefix, consistent).await,
            Dcs::Etcd3(e) => e.list(prefix).await,
        }
    }

    /// Reads a scope (`prefix`, ending in `/`) in one call, making sure that
    /// a scope read without `probe` (a key under it the hook needs) is not
    /// a token's blind spot (see `Consul::list_scope`). etcd refuses a
    /// range the user may not read as a whole, so there is nothing to probe.
    pub async fn list_scope(
        &self,
        prefix: &str,
        probe: &str,
        consistent: bool,
    ) -> Result<Vec<Entry>> {
        match self {
            Dcs::Consul(c) => c.list_scope(prefix, probe, consistent).await,
            Dcs::Etcd3(e) => e.list(prefix).await,
        }
    }

    /// For a read of `prefix` that came back as `entries`: fails when
    /// `probe` is missing because the token may not read it (Consul 1.8).
    pub async fn check_hidden(&self, prefix: &str, entries: &[Entry], probe: &str) -> Result<()> {
        match self {
            Dcs::Consul(c) => c.check_hidden(prefix, entries, probe).await,
            Dcs::Etcd3(_) => Ok(()),
        }
    }

    /// Ok when the token or user may read `key` (present or not).
    pub async fn check_readable(&self, key: &str) -> Result<()> {
        self.get(key, false).await.map(drop)
    }

    /// Whether the token or user may write `key`, without writing it.
    pub async fn check_writable(&self, key: &str) -> Result<()> {
        match self {
            Dcs::Consul(c) => c.check_writable(key).await,
            Dcs::Etcd3(e) => e.check_writable(key).await,
        }
    }

    /// Writes `value` only if the key's index is `cas` (0: only if absent).
    pub async fn put_cas(&self, key: &str, value: &[u8], cas: u64) -> Result<bool> {
        match self {
            Dcs::Consul(c) => c.put_cas(key, value, cas).await,
            Dcs::Etcd3(e) => e.put_cas(key, value, cas).await,
        }
    }

    /// Writes `value` whatever the key holds.
    pub async fn put(&self, key: &str, value: &[u8]) -> Result<()> {
        match self {
            Dcs::Consul(c) => c.put(key, value).await,
            Dcs::Etcd3(e) => e.put(key, value).await,
        }
    }

    /// Deletes the key whatever it holds (absent is success).
    pub async fn delete(&self, key: &str) -> Result<()> {
        match self {
            Dcs::Consul(c) => c.delete(key).await,
            Dcs::Etcd3(e) => e.delete(key).await,
        }
    }

    /// Deletes the key only if its index is `cas`.
    pub async fn delete_cas(&self, key: &str, cas: u64) -> Result<bool> {
        match self {
            Dcs::Consul(c) => c.delete_cas(key, cas).await,
            Dcs::Etcd3(e) => e.delete_cas(key, cas).await,
        }
    }
}
