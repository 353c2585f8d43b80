//! Helpers shared by the integration tests; each test file takes what it needs.
// Each test file is its own crate and uses a different part of these helpers.
#![allow(dead_code)]

/// Which Consul a test's hook talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The in-repo double, plain HTTP, no ACLs.
    Double,
    /// A real Consul 1.8.7 of the test's own (real_consul.rs): TLS, ACLs on
    /// (default deny), the hook with a token of the kit's policy.
    Real,
    /// A real etcd 3.4 of the test's own (real_etcd.rs): mutual TLS, auth on
    /// with the kit's roles, the hook (`dcs: etcd3`) as the role's user
    /// with a password file and a client certificate without a CN.
    Etcd,
}

/// One test body, two Consuls: `both!(name)` after `fn name(b: Backend)`
/// makes the tests `name::on_the_double` and `name::on_real_consul` (the
/// test file declares `#[macro_use] mod common;` and uses `Backend`).
#[allow(unused_macros)]
macro_rules! both {
    ($name:ident) => {
        mod $name {
            #[test]
            fn on_the_double() {
                super::$name(super::Backend::Double)
            }
            #[test]
            fn on_real_consul() {
                super::$name(super::Backend::Real)
            }
        }
    };
}

/// One test body, three DCSs: `every_dcs!(name)` after `fn name(b:
/// Backend)` makes `name::on_the_double`, `name::on_real_consul` and
/// `name::on_real_etcd`, for bodies that do not depend on the DCS.
#[allow(unused_macros)]
macro_rules! every_dcs {
    ($name:ident) => {
        mod $name {
            #[test]
            fn on_the_double() {
                super::$name(super::Backend::Double)
            }
            #[test]
            fn on_real_consul() {
                super::$name(super::Backend::Real)
            }
            #[test]
            fn on_real_etcd() {
                super::$name(super::Backend::Etcd)
            }
        }
    };
}

mod basics;
pub mod consul;
pub mod fake_consul;
pub mod hook;
pub mod kit;
pub mod lab;
pub mod netns;
pub mod pause_lab;
pub mod pg;
pub mod real_consul;
pub mod real_etcd;
pub mod tls;

pub use basics::*;
