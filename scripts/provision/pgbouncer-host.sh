#!/usr/bin/env bash
# Provisions the PgBouncer host: Consul client agent with the watch on the
# leader key, PgBouncer with patroni-conf/pgbouncer.ini, patroni-hook reconcile
# run by the watch (through sudo, as postgres) and by the timer.
set -euo pipefail
PATRONI_HOOK_REPO="${PATRONI_HOOK_REPO:-/patroni-hook}"
# shellcheck source=scripts/provision/common.sh
. "$PATRONI_HOOK_REPO/scripts/provision/common.sh"

base_setup
install_consul
install_sudoers

log "PgBouncer"
apt_install pgbouncer postgresql-client-15
id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
# reconcile replaces pgbouncer.ini atomically (temp file + rename in the same
# directory), as postgres: the directory must be postgres's. A statoverride
# keeps it so across package upgrades.
if ! dpkg-statoverride --list /etc/pgbouncer >/dev/null; then
    dpkg-statoverride --update --add postgres postgres 0750 /etc/pgbouncer
fi
install -o postgres -g postgres -m 0640 "$CONF/pgbouncer.ini" /etc/pgbouncer/pgbouncer.ini
# The application's role, as created on pg-patroni1 (plain text here so that
# PgBouncer can log in to PostgreSQL with SCRAM on the client's behalf).
# Created 0640 from the start: never readable by others, not even for a moment.
printf '"app" "CHANGE-ME-app"\n"postgres" "CHANGE-ME-superuser"\n' |
    install -o postgres -g postgres -m 0640 /dev/stdin /etc/pgbouncer/userlist.txt

install_patroni_hook
install -o root -g postgres -m 0640 "$CONF/patroni-hook-pgbouncer.yml" /etc/patroni-hook/config.yml
install_hook_token pgbouncer
runuser -u postgres -- /usr/local/bin/patroni-hook --config /etc/patroni-hook/config.yml check-config

systemctl enable pgbouncer >/dev/null 2>&1
systemctl restart pgbouncer
# The watch runs reconcile as soon as the agent is up, and at every leader change.
configure_consul "$CONF/consul-client.json" "$(token pgbouncer)"
systemctl enable --now patroni-hook-reconcile.timer

wait_for "a Patroni leader in Consul" 300 \
    curl -fsS --cacert /etc/consul.d/tls/ca.pem -H "X-Consul-Token: $(token pgbouncer)" \
    https://127.0.0.1:8501/v1/kv/service/postgres/leader
wait_for "pgbouncer.ini to point at the leader" 60 \
    runuser -u postgres -- /usr/local/bin/patroni-hook --config /etc/patroni-hook/config.yml reconcile
log "PgBouncer host up: psql -h 198.51.100.30 -p 6432 -U app appdb"
runuser -u postgres -- /usr/local/bin/patroni-hook --config /etc/patroni-hook/config.yml status || true
