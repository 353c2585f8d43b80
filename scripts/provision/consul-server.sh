#!/usr/bin/env bash
# Provisions a Consul server (consul-01..03): Consul from HashiCorp's apt
# repository with patroni-conf/consul-server.json (three servers, bootstrap_expect 3).
set -euo pipefail
PATRONI_HOOK_REPO="${PATRONI_HOOK_REPO:-/patroni-hook}"
# shellcheck source=scripts/provision/common.sh
. "$PATRONI_HOOK_REPO/scripts/provision/common.sh"

base_setup
install_consul
configure_consul "$CONF/consul-server.json"
log "Consul server up (the cluster elects a leader once all three run)"
