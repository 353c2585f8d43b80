# shellcheck shell=bash
# Shared by the Vagrant provisioning scripts beside it (sourced, not run):
# the lab's address plan, /etc/hosts, Debian packages, Consul from HashiCorp's
# apt repository, and the sudoers rule the Consul watch needs.
#
# The repository is synced into every VM at $PATRONI_HOOK_REPO (vagrant/Vagrantfile);
# vagrant/dist/ holds the patroni-hook binary and generated docs built on the
# host by scripts/provision/build-host.sh.

PATRONI_HOOK_REPO="${PATRONI_HOOK_REPO:-/patroni-hook}"
CONF="$PATRONI_HOOK_REPO/patroni-conf"
DIST="$PATRONI_HOOK_REPO/vagrant/dist"

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

# Consul from HashiCorp's release packages (apt.releases.hashicorp.com).
install_consul() {
    if ! command -v consul >/dev/null 2>&1; then
        log "installing Consul from HashiCorp's apt repository"
        local keyring=/usr/share/keyrings/hashicorp-archive-keyring.gpg codename
        curl -fsSL https://apt.releases.hashicorp.com/gpg | gpg --batch --yes --dearmor -o "$keyring"
        codename="$(. /etc/os-release && echo "$VERSION_CODENAME")"
        echo "deb [signed-by=$keyring] https://apt.releases.hashicorp.com $codename main" \
            >/etc/apt/sources.list.d/hashicorp.list
        apt-get update -qq
        apt_install consul
    fi
    # The package's sample consul.hcl would merge with ours; ours is the whole config.
    rm -f /etc/consul.d/consul.hcl
}

# configure_consul JSON: installs it as the agent's only config and (re)starts it.
configure_consul() {
    install -o consul -g consul -m 0640 "$1" /etc/consul.d/consul.json
    consul validate /etc/consul.d/ >/dev/null
    systemctl enable consul >/dev/null 2>&1
    systemctl restart consul
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
