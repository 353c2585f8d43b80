#!/usr/bin/env bash
# Provisions a Consul server (consul-01..03): Consul 1.8.7 as the lab installs
# it, with patroni-conf/consul-server.json (three servers, bootstrap_expect 3,
# ACLs default deny, HTTPS only). The last server, once the cluster has a
# leader, applies the kit's ACL policies and makes every role's and agent's
# token (their secrets come from the host: scripts/provision/build-host.sh).
set -euo pipefail
PATRONI_HOOK_REPO="${PATRONI_HOOK_REPO:-/patroni-hook}"
# shellcheck source=scripts/provision/common.sh
. "$PATRONI_HOOK_REPO/scripts/provision/common.sh"

base_setup
install_consul
configure_consul "$CONF/consul-server.json"
if [ "$(hostname)" = consul-03 ]; then
    wait_for "the Consul servers to elect a leader" 120 consul_has_leader
    wait_for "Consul's ACL system to accept the management token" 60 consul_cli acl token read -self
    log "ACL policies (patroni-conf/consul-acl-*.hcl) and tokens"
    consul_acls
fi
log "Consul server up (the cluster elects a leader once all three run)"
