//! patroni-hook: Patroni callbacks that move a floating IP, and a reconciler that
//! points PgBouncer at the current leader, from Consul, with no resident daemon.
//!
//! `main.rs` is a thin shell over this library; tests use the modules directly.

pub mod announce;
pub mod apply;
pub mod cli;
pub mod commands;
pub mod config;
pub mod consul;
pub mod error;
pub mod ini;
pub mod lock;
pub mod log;
pub mod netlink;
pub mod pgbouncer;
pub mod plan;
pub mod reconcile;
pub mod vip;
