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

# The Consul cluster's TLS files and tokens, made once here and kept (every VM
# reads its own from the synced vagrant/dist/; a second `vagrant up` reuses them).
# shellcheck source=scripts/provision/common.sh
. "$repo/scripts/provision/common.sh"
specs=()
tokens=(master patroni hook-db pgbouncer)
while read -r addr host; do
    case "$host" in consul-*) specs+=("server:$host=$addr") ;; *) specs+=("client:$host=$addr") ;; esac
    tokens+=("agent-$host")
done <<<"$LAB_HOSTS"
bash "$repo/scripts/provision/consul-certs.sh" "$dist/consul-tls" dc1 "${specs[@]}" >/dev/null
mkdir -p "$dist/consul-tokens"
chmod 0700 "$dist/consul-tokens"
for t in "${tokens[@]}"; do
    f="$dist/consul-tokens/$t"
    [ -s "$f" ] && continue
    (umask 077 && { cat /proc/sys/kernel/random/uuid 2>/dev/null || uuidgen | tr '[:upper:]' '[:lower:]'; } >"$f")
done
echo "Consul TLS files in $dist/consul-tls, tokens in $dist/consul-tokens"
