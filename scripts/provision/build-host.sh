#!/usr/bin/env bash
# Runs on the Vagrant host (a trigger before `vagrant up`): builds patroni-hook
# and its completions and man pages into vagrant/dist/, which every VM sees
# through the synced folder and installs with scripts/install.sh.
# The VMs run Debian 12 like the build host is expected to; build on Debian 12
# (or a system with an older glibc) so the binary runs there.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
dist="$repo/vagrant/dist"
cd "$repo"
cargo build --release --quiet --bin patroni-hook --example gen-docs
mkdir -p "$dist"
install -m 0755 target/release/patroni-hook "$dist/patroni-hook"
target/release/examples/gen-docs "$dist/docs" >/dev/null
echo "built $dist/patroni-hook and $dist/docs"
