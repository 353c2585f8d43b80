//! The PgBouncer host: reconcile's host side (`host`), the pause around a
//! switchover (`pause` decides, `pause_host` acts), PgBouncer's admin console
//! (`admin`), the `[databases]` edit (`ini`) and the file and its reload
//! (`file`).

pub mod admin;
pub mod file;
pub mod host;
pub mod ini;
pub mod pause;
pub mod pause_host;
