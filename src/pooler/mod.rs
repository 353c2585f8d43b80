//! The PgBouncer host. A reconcile (`host`) observes (`observe`), decides
//! (`plan`, pure, with `pause` deciding each cluster's pause) and carries
//! out (`apply`): the entries and the reload (`repoint`, `ini`, `file`) and
//! the pause (`pause_host`, on PgBouncer's admin console, `admin`).

pub mod admin;
pub mod apply;
pub mod file;
pub mod host;
pub mod ini;
pub mod observe;
pub mod pause;
pub mod pause_host;
pub mod plan;
pub mod repoint;
