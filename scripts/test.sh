#!/usr/bin/env bash
# Installs every prerequisite of the test suite on a fresh Debian machine, then
# runs all tests, `cargo fmt --check` and clippy. As root, or as a user with
# sudo: it runs itself again through sudo, keeping PATH (a rustup toolchain)
# and CI, PATRONI_VENV, TEST_THREADS, LAB_*.
#
# Prerequisites (installed when missing): PostgreSQL 15, PgBouncer, iproute2,
# libcap2-bin (setcap), python3-venv, curl, iputils-arping, shellcheck, pgbackrest,
# dpkg-dev, lintian, cargo-deb, Consul 1.8.7 (Debian bullseye's binary, see
# install_consul in scripts/prereqs.sh), and a virtualenv with Patroni 4.x at
# $PATRONI_VENV (default /opt/patroni-hook-test/venv).
set -euo pipefail

# shellcheck source=scripts/prereqs.sh
. "$(dirname "$0")/prereqs.sh"
as_root "$0" "$@"
cd "$(dirname "$0")/.."

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
shellcheck -x scripts/provision/*.sh scripts/lab/*.sh scripts/deb/postinst scripts/deb/postrm
shellcheck -x scripts/adopt/*.sh scripts/backup/*.sh

step "cargo test"
cargo test --workspace -- --test-threads="${TEST_THREADS:-2}"
