//! The DCS: Consul's client and the layout of Patroni's keys in it.
//!
//! `Entry` is what a read of the DCS gives, whichever client made it; `keys`
//! reads Patroni's layout from entries and knows nothing of the transport.

pub mod consul;
pub mod keys;

/// One key as the DCS returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Full key.
    pub key: String,
    /// Decoded value (`null` becomes empty).
    pub value: Vec<u8>,
    /// The index of its last change (Consul's ModifyIndex), for check-and-set.
    pub modify_index: u64,
    /// Session holding the key, if any.
    pub session: Option<String>,
}
