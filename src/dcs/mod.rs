//! The DCS: Consul's client and the layout of Patroni's keys in it.

pub mod consul;
pub mod keys;
