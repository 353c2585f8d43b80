//! Helpers shared by the integration tests; each test file takes what it needs.
// Each test file is its own crate and uses a different part of these helpers.
#![allow(dead_code)]

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
pub mod tls;

pub use basics::*;
