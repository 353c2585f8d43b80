#!/usr/bin/env bash
# Provisions a database node: Consul client agent (with the watch), PostgreSQL 15,
# Patroni 4 in a virtualenv, patroni-hook as Patroni's callbacks and the
# reconcile timer.
#   patroni-node.sh NAME ADDRESS      e.g. patroni-node.sh pg-patroni1 198.51.100.21
set -euo pipefail
PATRONI_HOOK_REPO="${PATRONI_HOOK_REPO:-/patroni-hook}"
# shellcheck source=scripts/provision/common.sh
. "$PATRONI_HOOK_REPO/scripts/provision/common.sh"

name="${1:?usage: patroni-node.sh NAME ADDRESS}"
addr="${2:?usage: patroni-node.sh NAME ADDRESS}"

base_setup
install_consul
configure_consul "$CONF/consul-client.json" "$(token hook-db)"
install_sudoers

log "PostgreSQL 15 (no default cluster: Patroni creates and owns it)"
apt_install postgresql-common
sed -i 's/^#\?\s*create_main_cluster.*/create_main_cluster = false/' /etc/postgresql-common/createcluster.conf
apt_install postgresql-15 postgresql-client-15 python3-venv
systemctl disable --now postgresql >/dev/null 2>&1 || true

log "Patroni 4 in /opt/patroni/venv"
if [ ! -x /opt/patroni/venv/bin/patroni ]; then
    python3 -m venv /opt/patroni/venv
    /opt/patroni/venv/bin/pip install -q --disable-pip-version-check 'patroni[consul]>=4,<5' 'psycopg[binary]>=3'
fi

install_patroni_hook

log "configuration for $name ($addr)"
install -d -o postgres -g postgres -m 0750 /etc/patroni
sed -e "s/^name: pg-patroni1$/name: $name/" \
    -e "s/198\.51\.100\.21:/$addr:/g" \
    -e "s/REPLACE-WITH-PATRONIS-TOKEN/$(token patroni)/" \
    "$CONF/patroni.yml" >/etc/patroni/patroni.yml.new
chown postgres:postgres /etc/patroni/patroni.yml.new
chmod 0600 /etc/patroni/patroni.yml.new
mv /etc/patroni/patroni.yml.new /etc/patroni/patroni.yml
sed -e "s/^name: pg-patroni1$/name: $name/" "$CONF/patroni-hook-db.yml" >/etc/patroni-hook/config.yml.new
chown root:postgres /etc/patroni-hook/config.yml.new
chmod 0640 /etc/patroni-hook/config.yml.new
mv /etc/patroni-hook/config.yml.new /etc/patroni-hook/config.yml
install_hook_token hook-db
runuser -u postgres -- /usr/local/bin/patroni-hook --config /etc/patroni-hook/config.yml check-config

install -o root -g root -m 0644 "$CONF/patroni.service" /etc/systemd/system/patroni.service
systemctl daemon-reload
wait_for "the local Consul agent to join the servers" 120 consul_has_leader
runuser -u postgres -- /opt/patroni/venv/bin/patroni --validate-config /etc/patroni/patroni.yml
systemctl enable --now patroni
systemctl enable --now patroni-hook-reconcile.timer

# The first node bootstraps the cluster; once it is primary (and so holds the
# VIP), it creates the application's role and database that PgBouncer serves.
if [ "$name" = pg-patroni1 ]; then
    wait_for "Patroni on $name to become primary" 180 curl -fsS http://127.0.0.1:8008/primary
    log "creating role app and database appdb"
    runuser -u postgres -- psql -h /run/postgresql -qAtc \
        "SELECT 1 FROM pg_roles WHERE rolname = 'app'" | grep -q 1 ||
        runuser -u postgres -- psql -h /run/postgresql -qc "CREATE ROLE app LOGIN PASSWORD 'CHANGE-ME-app'"
    runuser -u postgres -- psql -h /run/postgresql -qAtc \
        "SELECT 1 FROM pg_database WHERE datname = 'appdb'" | grep -q 1 ||
        runuser -u postgres -- psql -h /run/postgresql -qc "CREATE DATABASE appdb OWNER app"
fi
log "Patroni node $name up; patroni-hook status:"
runuser -u postgres -- /usr/local/bin/patroni-hook --config /etc/patroni-hook/config.yml status || true
