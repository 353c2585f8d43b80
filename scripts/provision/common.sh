# shellcheck shell=bash
# Shared by the Vagrant provisioning scripts beside it (sourced, not run):
# the lab's address plan, /etc/hosts, Debian packages, Consul 1.8.7 installed
# and configured as scripts/lab.sh runs it (scripts/prereqs.sh install_consul;
# the kit's consul-*.json, ACLs on, HTTPS only), and the sudoers rule the
# Consul watch needs.
#
# The repository is synced into every VM at $PATRONI_HOOK_REPO (vagrant/Vagrantfile);
# vagrant/dist/ holds the patroni-hook binary and generated docs built on the
# host by scripts/provision/build-host.sh, and the Consul cluster's TLS files
# (consul-tls/) and tokens (consul-tokens/) it makes there once.

PATRONI_HOOK_REPO="${PATRONI_HOOK_REPO:-/patroni-hook}"
CONF="$PATRONI_HOOK_REPO/patroni-conf"
DIST="$PATRONI_HOOK_REPO/vagrant/dist"
CONSUL_TLS="$DIST/consul-tls"
CONSUL_TOKENS="$DIST/consul-tokens"

# The lab's addresses (documentation range; see vagrant/Vagrantfile).
LAB_HOSTS="198.51.100.11 consul-01
198.51.100.12 consul-02
198.51.100.13 consul-03
198.51.100.21 pg-patroni1
198.51.100.22 pg-patroni2
198.51.100.23 pg-patroni3
198.51.100.30 pgbouncer"

log() { printf '==> %s: %s\n' "$(hostname)" "$*"; }

apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

base_setup() {
    log "base packages and /etc/hosts"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt_install ca-certificates curl gnupg jq sudo libcap2-bin iproute2 iputils-arping
    local line
    while IFS= read -r line; do
        grep -qxF "$line" /etc/hosts || echo "$line" >>/etc/hosts
    done <<<"$LAB_HOSTS"
}

# Consul 1.8.7 as the lab installs it: scripts/prereqs.sh's install_consul
# (Debian bullseye's consul binary, checked by its sha256, to
# /usr/local/bin/consul), a consul user and a unit of our own.
install_consul() {
    apt_install debian-archive-keyring
    # shellcheck source=scripts/prereqs.sh
    (. "$PATRONI_HOOK_REPO/scripts/prereqs.sh" && install_consul)
    id consul >/dev/null 2>&1 ||
        useradd --system --home-dir /opt/consul --shell /usr/sbin/nologin consul
    install -d -o consul -g consul -m 0750 /opt/consul /etc/consul.d /etc/consul.d/tls
    # Consul exits 1 on SIGTERM: a stop is a success.
    cat >/etc/systemd/system/consul.service <<'EOF'
[Unit]
Description=Consul agent
Wants=network-online.target
After=network-online.target

[Service]
User=consul
Group=consul
ExecStart=/usr/local/bin/consul agent -config-dir=/etc/consul.d/
ExecReload=/bin/kill -HUP $MAINPID
KillMode=process
SuccessExitStatus=1
Restart=on-failure
LimitNOFILE=65536

[Install]
WantedBy=multi-user.target
EOF
    systemctl daemon-reload
}

# token NAME: a token's secret, made on the host by build-host.sh.
token() {
    [ -s "$CONSUL_TOKENS/$1" ] || { echo "error: $CONSUL_TOKENS/$1 missing: run scripts/provision/build-host.sh on the host" >&2; exit 1; }
    cat "$CONSUL_TOKENS/$1"
}

# consul_cli ARGS...: the consul command against the local agent's HTTPS API,
# with the CA and the management token (provisioning only).
consul_cli() {
    CONSUL_HTTP_ADDR=https://127.0.0.1:8501 CONSUL_CACERT=/etc/consul.d/tls/ca.pem \
        CONSUL_HTTP_TOKEN="$(token master)" /usr/local/bin/consul "$@"
}

# configure_consul JSON [HOOK_TOKEN]: installs the kit's agent config (the
# watches' token placeholder replaced with this host's hook token), this
# host's TLS files, and a second file with its agent token (servers: and the
# management token, known to the cluster from its start); validates all of
# it with `consul validate`, then (re)starts the agent.
configure_consul() {
    local json="$1" hook_token="${2:-}" name
    name="$(hostname)"
    install -o consul -g consul -m 0644 "$CONSUL_TLS/ca.pem" /etc/consul.d/tls/ca.pem
    install -o consul -g consul -m 0644 "$CONSUL_TLS/$name.pem" /etc/consul.d/tls/agent.pem
    install -o consul -g consul -m 0600 "$CONSUL_TLS/$name-key.pem" /etc/consul.d/tls/agent-key.pem
    sed "s/REPLACE-WITH-THIS-HOSTS-PATRONI-HOOK-TOKEN/$hook_token/" "$json" |
        install -o consul -g consul -m 0640 /dev/stdin /etc/consul.d/consul.json
    local tokens
    tokens="\"agent\": \"$(token "agent-$name")\""
    case "$name" in consul-*) tokens="$tokens, \"master\": \"$(token master)\"" ;; esac
    printf '{"acl": {"tokens": {%s}}}\n' "$tokens" |
        install -o consul -g consul -m 0640 /dev/stdin /etc/consul.d/tokens.json
    /usr/local/bin/consul validate /etc/consul.d/ >/dev/null
    systemctl enable consul >/dev/null 2>&1
    systemctl restart consul
}

# consul_acls: the kit's policies applied with `consul acl policy create`, and
# the tokens of every role and agent with their secrets from the host; each
# only when missing (provisioning runs again).
consul_acls() {
    local p name
    for p in patroni:patroni-postgres hook-db:patroni-hook-db-postgres pgbouncer:patroni-hook-pgbouncer; do
        name="${p#*:}"
        p="${p%%:*}"
        consul_cli acl policy read -name "$name" >/dev/null 2>&1 ||
            consul_cli acl policy create -name "$name" -rules "@$CONF/consul-acl-$p.hcl" >/dev/null
        CONSUL_HTTP_TOKEN="$(token "$p")" consul_token_exists ||
            consul_cli acl token create -description "$p" -policy-name "$name" -secret "$(token "$p")" >/dev/null
    done
    local host
    while read -r _ host; do
        CONSUL_HTTP_TOKEN="$(token "agent-$host")" consul_token_exists ||
            consul_cli acl token create -description "agent $host" -node-identity "$host:dc1" \
                -secret "$(token "agent-$host")" >/dev/null
    done <<<"$LAB_HOSTS"
}

# Whether $CONSUL_HTTP_TOKEN is a token the cluster knows.
consul_token_exists() {
    CONSUL_HTTP_ADDR=https://127.0.0.1:8501 CONSUL_CACERT=/etc/consul.d/tls/ca.pem \
        /usr/local/bin/consul acl token read -self >/dev/null 2>&1
}

# The local agent answers on HTTPS and knows a Raft leader.
consul_has_leader() {
    curl -fsS --cacert /etc/consul.d/tls/ca.pem https://127.0.0.1:8501/v1/status/leader | grep -q :8300
}

# install_hook_token NAME: /etc/patroni-hook/consul.token, the hook's token
# (consul.token_file of its config), root:postgres 0640.
install_hook_token() {
    token "$1" | install -o root -g postgres -m 0640 /dev/stdin /etc/patroni-hook/consul.token
}

# The Consul agent (user consul) runs the watch handler as postgres through sudo.
install_sudoers() {
    install -o root -g root -m 0440 "$CONF/patroni-hook.sudoers" /etc/sudoers.d/patroni-hook
    visudo -cf /etc/sudoers.d/patroni-hook >/dev/null
}

# patroni-hook, its units, completions and man pages, from the host's build.
install_patroni_hook() {
    if [ ! -x "$DIST/patroni-hook" ]; then
        echo "error: $DIST/patroni-hook missing: run scripts/provision/build-host.sh on the host (vagrant up does, through a trigger)" >&2
        exit 1
    fi
    log "installing patroni-hook"
    "$PATRONI_HOOK_REPO/scripts/install.sh" --binary "$DIST/patroni-hook" --docs "$DIST/docs"
}

# wait_for WHAT SECONDS COMMAND...: polls COMMAND every second, bounded.
wait_for() {
    local what="$1" seconds="$2"
    shift 2
    local i
    for ((i = 0; i < seconds; i++)); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 1
    done
    echo "error: timed out after ${seconds}s waiting for $what" >&2
    return 1
}
