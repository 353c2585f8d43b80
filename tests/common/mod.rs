//! Helpers shared by the integration tests; each test file takes what it needs.
// Each test file is its own crate and uses a different part of these helpers.
#![allow(dead_code)]

pub mod consul;
pub mod netns;
pub mod pg;
