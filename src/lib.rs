//! patroni-hook: Patroni callbacks that move a floating IP, and a reconciler that
//! points PgBouncer at the current leader, from Consul, with no resident daemon.
//!
//! `main.rs` is a thin shell over this library; tests use the modules directly.
//! Pure modules (no I/O): `budget`, `config` (`from_str`), `ini`, `keys`,
//! `plan`, `pause`. Effect modules: `admin`, `announce`, `consul`, `netlink`,
//! `patroni_api`, `pgbouncer`, `state`, `log`, `out`. Verbs: `vip`, `reconcile`,
//! `pgbouncer_host`, `pause_host`, `before_stop`, `commands`.

pub mod admin;
pub mod announce;
pub mod apply;
pub mod before_stop;
pub mod budget;
pub mod cli;
pub mod commands;
pub mod config;
pub mod consul;
pub mod error;
pub mod ini;
pub mod keys;
pub mod log;
pub mod metrics;
pub mod netlink;
pub mod out;
pub mod patroni_api;
pub mod pause;
pub mod pause_host;
pub mod pgbouncer;
pub mod pgbouncer_host;
pub mod plan;
pub mod reconcile;
pub mod state;
pub mod vip;
