//! The database node: the VIP's callbacks and reconcile (observe in `vip`,
//! decide in `plan`, carry out in `apply`), before-stop, and the kernel
//! effects (`netlink`, `announce`).

pub mod announce;
pub mod apply;
pub mod before_stop;
pub mod netlink;
pub mod plan;
pub mod vip;
