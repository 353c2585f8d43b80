//! patroni-hook: Patroni callbacks that move a floating IP, and a reconciler that
//! points PgBouncer at the current leader, from the DCS, with no resident daemon.
//!
//! `main.rs` is a thin shell over this library; tests use the modules directly.
//! The tree says where code runs:
//! - `node`: the database node (the VIP verbs, before-stop, netlink, the
//!   announcements);
//! - `pooler`: the PgBouncer host (its reconcile, the pause, the admin
//!   console, the ini and its reload);
//! - `dcs`: the DCS client and Patroni's key layout;
//! - at the top, what both sides share: the command line, the configuration,
//!   state files, the run's budget, metrics, errors and logging.

pub mod budget;
pub mod cli;
pub mod commands;
pub mod config;
pub mod dcs;
pub mod error;
pub mod log;
pub mod metrics;
pub mod node;
pub mod out;
pub mod patroni_api;
pub mod pooler;
pub mod reconcile;
pub mod report;
pub mod state;
pub mod tls;
