#!/usr/bin/env bash
# Installs every prerequisite of the test suite on a fresh Debian machine, then
# runs all tests, `cargo fmt --check` and clippy. Run as root: sudo scripts/test.sh
#
# Prerequisites (installed when missing): PostgreSQL 15, PgBouncer, iproute2,
# libcap2-bin (setcap), python3-venv, curl, iputils-arping, shellcheck, and a
# virtualenv with Patroni 4.x at $PATRONI_VENV (default /opt/patroni-hook-test/venv).
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=scripts/prereqs.sh
. scripts/prereqs.sh

need_root
install_prereqs
export PATRONI_VENV

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo build (debug and release binaries used by the tests)"
cargo build --workspace --all-targets
cargo build --release --bins

step "shellcheck"
shellcheck -x scripts/*.sh
shellcheck -x scripts/provision/*.sh scripts/lab/*.sh

step "cargo test"
cargo test --workspace -- --test-threads="${TEST_THREADS:-2}"
