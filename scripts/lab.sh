#!/usr/bin/env bash
# A local lab of the whole story, in network namespaces: three PostgreSQL 15 +
# Patroni 4 nodes, a VIP, PgBouncer, and a client writing through both. As
# root, or as a user with sudo: it runs itself again through sudo, keeping
# PATH (a rustup toolchain) and LAB_*, CI, PATRONI_VENV. This script brings a
# lab up and takes it down (the `ip netns` commands below are the
# specification of the topology, whose names and addresses are in
# scripts/lab/topology.env); it runs scripts/lab/labtool.py, the entry point
# of the Python package scripts/lab/labkit/, for every other command and for
# the steps of `up` that are Python's (consul-configs, wait-healthy,
# prepare-db, backup-setup, backup-stanza-create). There, a module per
# concern: runlab (one running lab), measure (the load generator and the
# sampler), events (switchover, failover, ...), analysis (timelines),
# reports (target/lab-*.json and .md), scenarios (demo, bench), faults (the
# fault matrix), backup, adopt; labkit/__init__.py lists them all.
#
#   scripts/lab.sh demo [--dcs consul|etcd3]   # install, build, up, three events with timelines, down (< 3 min)
#   scripts/lab.sh bench [--n N] [--events LIST] [--managers hook,vip-manager] [--dcs consul,etcd3]
#                                # repeated events per (DCS, VIP manager) -> target/lab-bench.{md,json}
#   scripts/lab.sh faults [--consul real|double | --dcs etcd3] [--only LIST] [--repeats N] [--use-lab]
#                                # the fault matrix (scripts/lab/labkit/faults.py) -> target/lab-faults.{md,json}
#   scripts/lab.sh up | status | switchover | failover | stop-primary | kill-patroni | down
#   scripts/lab.sh kv KEY       # a key's value in the lab's Consul or etcd (etcd3: etcdctl, v3 keys)
#   scripts/lab.sh consul ARGS  # real Consul: the consul CLI on the client host, management token
#   scripts/lab.sh backup | adopt-single | adopt-cluster   # scenarios, each on a lab of its own
#                                # (scripts/lab/labkit/backup.py, adopt.py) -> target/lab-<name>.json
#
# Two variants (LAB_VIP_MANAGER at `up`):
#   hook         Patroni on Consul (or etcd3, LAB_DCS); patroni-hook as the callbacks
#                on every node, reconcile from Consul watches (on etcd3: the kit's
#                patroni-hook-etcd-watch@.service) on every node and on the PgBouncer
#                host, and from a timer as the safety net
#   vip-manager  Patroni on the etcd members' v2 API (Debian's vip-manager 1.0.2
#                reads nothing else); vip-manager on every node; PgBouncer points at the VIP
#
# Two DCSs for the hook variant (LAB_DCS at `up`, or `--dcs KIND`):
#   consul       (default: LAB_DCS_DEFAULT in topology.env) one of the Consuls below
#   etcd3        three etcd 3.4 members (es1..3) as nobody, TLS for clients and peers
#                with the lab's CA (scripts/provision/etcd-certs.sh), --client-cert-auth,
#                auth and the kit's roles (patroni-conf/etcd-rbac.sh), --enable-v2 too;
#                Patroni with `etcd3:`, the hook with `dcs: etcd3`, the kit's watch unit
#                run by `labtool.py run-unit` (no systemd here). The vip-manager
#                variant always runs on these members (LAB_DCS=etcd3 in its lab.env).
#
# Two Consuls for the hook variant (LAB_CONSUL at `up`, or `--consul KIND` on
# any command that brings a lab up):
#   double       the in-repo double (tests/consul-double) in a namespace of its
#                own, over HTTP, its --watch runners as the agents' watches
#   real         Consul 1.8.7: three servers (cs1..3), a client agent on every
#                database node, the PgBouncer host and the client; the kit's
#                consul-server.json and consul-client.json rendered for the lab
#                (their watches run the hook); ACLs on (default deny, one token
#                and policy per role, patroni-conf/consul-acl-*.hcl); HTTPS only,
#                verified with the lab's CA
#
# Environment:
#   LAB_CONSUL     real or double (default: LAB_CONSUL_DEFAULT in topology.env);
#                  `--consul KIND` sets it
#   LAB_DCS        consul or etcd3 (default: LAB_DCS_DEFAULT in topology.env);
#                  `--dcs KIND` sets it (bench: a list, its own option)
#   LAB_RUN_ID     run id (namespace names phl-<id>-*); default: new for up/demo/bench,
#                  else the id in $LAB_ROOT/current
#   LAB_ROOT       state directory root (default /run/patroni-hook-lab); the lab's
#                  files, logs and pids live in $LAB_ROOT/<id>
#   LAB_VIP_MANAGER  hook (default) or vip-manager
#   LAB_VIP_MANAGER_INTERVAL  vip-manager's --interval in ms (default 1000, its own default)
#   LAB_NODE_WATCHES=0  hook variant without the watches on the database nodes (their
#                  timers only), to measure what the watches cost or save
#   LAB_PAUSE_ON   the PgBouncer host's pgbouncer.pause_on: switchover (default), always
#                  or never; recorded with the run and in the bench rows
#   LAB_PGB_LOGIN_RETRY  PgBouncer's server_login_retry (default 0.1)
#   LAB_HOOK_BIN, LAB_DOUBLE_BIN   binaries to use instead of building target/release
#   LAB_OUT_DIR    where bench and demo write lab-*.{md,json} (default target/)
#   LAB_KEEP_LOGS  down copies logs/ and events/ there before removing the run dir
#   LAB_FAIL_AFTER=dcs  up stops after starting the DCS (tests: down after a partial up)
#   LAB_BACKUP=1   hook variant with pgBackRest: a repository host (TLS server), Patroni
#                  archiving to it and building replicas from it (scripts/lab/labkit/backup.py)
#   LAB_LEGACY=1   hook variant without Patroni: hosts, Consul and PgBouncer only,
#                  the hook's watches not yet installed; the adopt scenarios build an
#                  existing setup there and adopt it (scripts/lab/labkit/adopt.py)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/prereqs.sh
. "$REPO/scripts/prereqs.sh"
# shellcheck source=scripts/lab/topology.env
. "$REPO/scripts/lab/topology.env"

export LAB_ROOT="${LAB_ROOT:-/run/patroni-hook-lab}"
CONSUL_KIND="${LAB_CONSUL:-$LAB_CONSUL_DEFAULT}"
DCS_KIND="${LAB_DCS:-$LAB_DCS_DEFAULT}"
PY="$PATRONI_VENV/bin/python"
LABTOOL="$REPO/scripts/lab/labtool.py"
VIP="$LAB_VIP"
SCOPE="$LAB_SCOPE"
read -r -a NODES <<<"$LAB_DB_NODES"
# Patroni settings (see patroni_yaml): ttl 20 is Patroni's minimum; loop_wait
# and retry_timeout shrunk with it (loop_wait + 2*retry_timeout <= ttl).
PATRONI_TTL="${LAB_PATRONI_TTL:-20}"
PATRONI_LOOP_WAIT="${LAB_PATRONI_LOOP_WAIT:-2}"
PATRONI_RETRY_TIMEOUT="${LAB_PATRONI_RETRY_TIMEOUT:-5}"
# The hook's reconcile timer on the database nodes and on the PgBouncer host
# (a systemd timer in production, the safety net under the watches).
SAFETY_NET_INTERVAL="${LAB_SAFETY_NET_INTERVAL:-2}"
PGB_SAFETY_NET_INTERVAL="${LAB_PGB_SAFETY_NET_INTERVAL:-5}"

say() { printf '==> %s\n' "$*"; }
die() { printf 'lab.sh: error: %s\n' "$*" >&2; exit 1; }

addr_of() { local v="LAB_ADDR_$1"; echo "${!v}"; }
# The kit's systemd template unit that runs reconcile from an etcd watch.
ETCD_WATCH_UNIT="patroni-hook-etcd-watch@.service"
# The etcd users the lab gives certificates and passwords (the PgBouncer
# host's is patroni-hook-pgbouncer-<its name>, PGB_NAME below).
ETCD_USERS="root patroni patroni-hook-db patroni-hook-pgbouncer-pgbouncer"
# The PgBouncer host's name (its hook.yml `name`): its etcd user is
# patroni-hook-pgbouncer-<name> (patroni-conf/etcd-rbac.sh).
PGB_NAME=pgbouncer
read -r -a ETCD_MEMBERS <<<"$LAB_ETCD_MEMBERS"
# host:port of every etcd member, comma separated (Patroni's and the hook's `hosts`).
etcd_hosts() {
    local m out=()
    for m in "${ETCD_MEMBERS[@]}"; do out+=("$(addr_of "$m"):$LAB_ETCD_PORT"); done
    (IFS=,; echo "${out[*]}")
}
etcd_endpoints() {
    local m out=()
    for m in "${ETCD_MEMBERS[@]}"; do out+=("https://$(addr_of "$m"):$LAB_ETCD_PORT"); done
    (IFS=,; echo "${out[*]}")
}
hosts_of() { local v="LAB_HOSTS_${1//-/_}"; echo "${!v}"; }

# ---- run id, names, state -------------------------------------------------

set_run() {
    RID="$1"
    [[ "$RID" =~ ^[a-z0-9]{1,12}$ ]] || die "run id '$RID' must be 1-12 lowercase letters or digits"
    RUN="$LAB_ROOT/$RID"
}
ns_of() { echo "$LAB_NS_PREFIX-$RID-$1"; }

# The lab the other commands act on: $LAB_RUN_ID, else the last one brought up.
load_run() {
    local id="${LAB_RUN_ID:-}"
    if [ -z "$id" ]; then
        [ -f "$LAB_ROOT/current" ] || die "no lab is up (no $LAB_ROOT/current); run: scripts/lab.sh up"
        id="$(cat "$LAB_ROOT/current")"
    fi
    set_run "$id"
    [ -f "$RUN/lab.env" ] || die "no lab with run id $RID ($RUN/lab.env is missing)"
    MANAGER="$(sed -n 's/^LAB_MANAGER=//p' "$RUN/lab.env")"
    CONSUL_KIND="$(sed -n 's/^LAB_CONSUL=//p' "$RUN/lab.env")"
    DCS_KIND="$(sed -n 's/^LAB_DCS=//p' "$RUN/lab.env")"
    DCS_KIND="${DCS_KIND:-consul}"
    CONSUL_DIR="$RUN/consul"
    ETCD_DIR="$RUN/etcd"
}

new_run_id() { printf 'l%s%04d' "$(date +%H%M%S)" $((RANDOM % 10000)); }

pidfile() { echo "$RUN/pids/$1.pid"; }
pid_of() { local f; f="$(pidfile "$1")"; [ -f "$f" ] && cat "$f"; }
# A zombie (exited, not yet reaped by its parent) is not alive.
alive() {
    [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null || return 1
    local stat
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
    stat="${stat##*) }"
    [ "${stat:0:1}" != Z ]
}

# Waits until pid $1 is gone, at most $2 seconds; returns 1 if it is not.
wait_gone() {
    local pid="$1" end=$((SECONDS + $2))
    while alive "$pid"; do
        [ "$SECONDS" -lt "$end" ] || return 1
        sleep 0.05
    done
}

# Stops the process recorded as $1 by its pid: signal $2 (TERM), up to $3 s, then KILL.
stop_named() {
    local name="$1" sig="${2:-TERM}" grace="${3:-10}" pid
    pid="$(pid_of "$name" || true)"
    if alive "$pid"; then
        kill "-$sig" "$pid" 2>/dev/null || true
        if ! wait_gone "$pid" "$grace"; then
            echo "  $name (pid $pid) did not stop on SIG$sig within ${grace}s; SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null || true
            wait_gone "$pid" 5 || echo "  $name (pid $pid) survived SIGKILL" >&2
        fi
    fi
    rm -f "$(pidfile "$name")"
}

in_client() { ip netns exec "$(ns_of client)" "$@"; }
labtool() { LAB_ROOT="$LAB_ROOT" LAB_RUN_ID="$RID" ip netns exec "$(ns_of client)" "$PY" "$LABTOOL" "$@"; }

# ---- prerequisites and binaries -------------------------------------------

check_prereqs() {
    local manager="$1" missing=()
    [ -x "$PG_BIN/postgres" ] || missing+=("PostgreSQL 15 ($PG_BIN/postgres)")
    command -v pgbouncer >/dev/null 2>&1 || missing+=(pgbouncer)
    command -v psql >/dev/null 2>&1 || missing+=(psql)
    command -v setpriv >/dev/null 2>&1 || missing+=("setpriv (util-linux)")
    command -v curl >/dev/null 2>&1 || missing+=(curl)
    [ -x "$PATRONI_VENV/bin/patroni" ] || missing+=("Patroni in $PATRONI_VENV")
    "$PY" -c 'import psycopg' 2>/dev/null || missing+=("psycopg in $PATRONI_VENV")
    id postgres >/dev/null 2>&1 || missing+=("the postgres user")
    case "$manager" in
    hook)
        command -v setcap >/dev/null 2>&1 || missing+=("setcap (libcap2-bin)")
        if [ "$DCS_KIND" = etcd3 ]; then
            etcd_prereqs
            "$PY" -c 'import patroni.dcs.etcd3' 2>/dev/null || missing+=("Patroni's etcd3 extra in $PATRONI_VENV (patroni[etcd3])")
        elif [ "$CONSUL_KIND" = real ]; then
            # Read whole: `| head -n1` would make consul die of SIGPIPE (pipefail).
            local version
            version="$("$CONSUL_BIN" version 2>/dev/null || true)"
            [[ "$version" == "Consul v1.8.7"$'\n'* ]] ||
                missing+=("Consul 1.8.7 at $CONSUL_BIN (scripts/prereqs.sh install_consul)")
            command -v openssl >/dev/null 2>&1 || missing+=(openssl)
        fi
        ;;
    vip-manager)
        command -v vip-manager >/dev/null 2>&1 || missing+=("vip-manager (Debian package vip-manager)")
        etcd_prereqs
        "$PY" -c 'import etcd' 2>/dev/null || missing+=("python-etcd in $PATRONI_VENV (patroni[etcd])")
        ;;
    *) die "LAB_VIP_MANAGER must be hook or vip-manager, not '$manager'" ;;
    esac
    if [ "${#missing[@]}" -gt 0 ]; then
        [ "$manager" != hook ] || manager="hook on $DCS_KIND"
        die "missing prerequisites for the $manager lab: ${missing[*]} (scripts/lab.sh demo installs them)"
    fi
}

# What a lab on the three etcd members needs (check_prereqs adds to `missing`).
etcd_prereqs() {
    command -v etcd >/dev/null 2>&1 || missing+=("etcd (Debian package etcd-server)")
    command -v etcdctl >/dev/null 2>&1 || missing+=("etcdctl (Debian package etcd-client)")
    command -v openssl >/dev/null 2>&1 || missing+=(openssl)
    [ -f "$REPO/patroni-conf/etcd-rbac.sh" ] || missing+=("the kit's patroni-conf/etcd-rbac.sh")
    if [ "$manager" = hook ] && [ ! -f "$REPO/patroni-conf/$ETCD_WATCH_UNIT" ]; then
        missing+=("the kit's patroni-conf/$ETCD_WATCH_UNIT")
    fi
}

# The hook and the double: given, or built from this checkout.
resolve_binaries() {
    HOOK_BIN="${LAB_HOOK_BIN:-}"
    DOUBLE_BIN="${LAB_DOUBLE_BIN:-}"
    if [ -z "$HOOK_BIN" ] || { [ "$CONSUL_KIND" = double ] && [ -z "$DOUBLE_BIN" ]; }; then
        say "building the hook and the Consul double (cargo build --release --workspace --bins)"
        (cd "$REPO" && cargo build --release --workspace --bins --quiet)
        HOOK_BIN="${HOOK_BIN:-$REPO/target/release/patroni-hook}"
        DOUBLE_BIN="${DOUBLE_BIN:-$REPO/target/release/consul-double}"
    fi
    [ -x "$HOOK_BIN" ] || die "no hook binary at $HOOK_BIN"
    [ "$CONSUL_KIND" != double ] || [ -x "$DOUBLE_BIN" ] || die "no consul-double binary at $DOUBLE_BIN"
}

# ---- configuration files --------------------------------------------------

patroni_yaml() {
    local n="$1" addr dir="$RUN/$1" hook
    addr="$(addr_of "$n")"
    hook="$RUN/bin/patroni-hook --config $dir/hook.yml"
    cat <<EOF
# Generated by scripts/lab.sh. Production-like except ttl/loop_wait/retry_timeout
# (shrunk so a failover takes ~20 s, not ~40 s) and everything living on one machine.
scope: $SCOPE
namespace: /$LAB_DCS_NAMESPACE/
name: $n
restapi:
  listen: $addr:$LAB_PATRONI_API_PORT
  connect_address: $addr:$LAB_PATRONI_API_PORT
EOF
    if [ "$MANAGER" = hook ] && [ "$DCS_KIND" = etcd3 ]; then
        cat <<EOF
# etcd's v3 API (its JSON gateway) over HTTPS, verified with the lab's CA;
# a client certificate without a CN (etcd refuses a CN through the gateway
# once auth is on) and Patroni's own user (role patroni, patroni-conf/etcd-rbac.sh).
etcd3:
  hosts: $(etcd_hosts)
  protocol: https
  cacert: $ETCD_DIR/tls/ca.pem
  cert: $RUN/$n/etcd/patroni/gateway.pem
  key: $RUN/$n/etcd/patroni/gateway-key.pem
  username: patroni
  password: $(cat "$RUN/$n/etcd/patroni/password")
EOF
    elif [ "$MANAGER" = hook ] && [ "$CONSUL_KIND" = real ]; then
        cat <<EOF
consul:
  # The local agent's HTTPS API, verified with the lab's CA; Patroni's own
  # token (policy patroni-conf/consul-acl-patroni.hcl).
  host: 127.0.0.1:$LAB_CONSUL_HTTPS_PORT
  scheme: https
  cacert: $CONSUL_DIR/tls/ca.pem
  token: $(cat "$CONSUL_DIR/tokens/patroni")
  register_service: true
EOF
    elif [ "$MANAGER" = hook ]; then
        cat <<EOF
consul:
  host: $(addr_of consul):$LAB_CONSUL_PORT
  register_service: true
EOF
    else
        cat <<EOF
# Patroni's etcd backend speaks the v2 API, the one vip-manager 1.0.2 reads
# (etcd 3.4 keeps the v2 and v3 keyspaces apart). Over HTTPS with a client
# certificate, as the hook's lab on etcd3; v2 has no auth of its own here.
etcd:
  hosts: $(etcd_hosts)
  protocol: https
  cacert: $ETCD_DIR/tls/ca.pem
  cert: $RUN/$n/etcd/patroni/gateway.pem
  key: $RUN/$n/etcd/patroni/gateway-key.pem
EOF
    fi
    cat <<EOF
bootstrap:
  dcs:
    ttl: $PATRONI_TTL
    loop_wait: $PATRONI_LOOP_WAIT
    retry_timeout: $PATRONI_RETRY_TIMEOUT
    maximum_lag_on_failover: 1048576
    # Synchronous replication: an acknowledged commit survives the loss of the
    # primary, and a primary cut off from its standby (Patroni killed, the
    # cluster moved on) cannot acknowledge writes; see docs/lab.md, "The lab".
    synchronous_mode: true
    failsafe_mode: false
    postgresql:
      use_pg_rewind: true
      use_slots: true
      parameters:
        wal_level: replica
        hot_standby: "on"
        max_wal_senders: 10
        max_replication_slots: 10
        wal_keep_size: 64MB
        max_connections: 100
  initdb:
    - encoding: UTF8
    - locale: C
postgresql:
  # Every address, so the VIP is served the moment it lands on this node.
  listen: 0.0.0.0:$LAB_PG_PORT
  connect_address: $addr:$LAB_PG_PORT
  data_dir: $dir/data
  bin_dir: $PG_BIN
  pgpass: $dir/pgpass
  authentication:
    superuser:
      username: postgres
      password: lab-superuser
    replication:
      username: replicator
      password: lab-replication
  parameters:
    unix_socket_directories: '$dir'
    shared_buffers: 32MB
  # Lab only: trust inside the documentation range, which exists only in the lab's namespaces.
  pg_hba:
    - local all all trust
    - host all all 127.0.0.1/32 trust
    - host replication all 127.0.0.1/32 trust
    - host all all 198.51.100.0/24 trust
    - host replication all 198.51.100.0/24 trust
EOF
    if [ "$MANAGER" = hook ]; then
        cat <<EOF
  # Right before PostgreSQL stops (after the checkpoint of a switchover):
  # ask PgBouncer to pause, wait for it (at most before_stop.wait).
  before_stop: $hook before-stop
  callbacks:
    on_start: $hook
    on_stop: $hook
    on_role_change: $hook
    on_restart: $hook
    on_reload: $hook
EOF
    fi
}

# The consul section of a hook.yml: the double over HTTP, or the host's own
# agent over HTTPS with the lab's CA and this host's token file $1 (policy
# consul-acl-hook-db.hcl on the database nodes, consul-acl-pgbouncer.hcl on pgb).
hook_consul_yaml() {
    if [ "$DCS_KIND" = etcd3 ]; then
        # $1: the host's directory of etcd files, $2 its etcd user
        # (patroni-hook-db, patroni-hook-pgbouncer-<name>): through the
        # gateway, a certificate without a CN and the user's password.
        cat <<EOF
dcs: etcd3
etcd3:
  hosts: $(etcd_hosts)
  protocol: https
  cacert: $ETCD_DIR/tls/ca.pem
  cert: $1/gateway.pem
  key: $1/gateway-key.pem
  username: $2
  password_file: $1/password
  namespace: /$LAB_DCS_NAMESPACE
  timeout: 2s
EOF
    elif [ "$CONSUL_KIND" = real ]; then
        cat <<EOF
consul:
  url: https://127.0.0.1:$LAB_CONSUL_HTTPS_PORT
  namespace: $LAB_DCS_NAMESPACE
  token_file: $1
  ca_file: $CONSUL_DIR/tls/ca.pem
  timeout: 2s
EOF
    else
        cat <<EOF
consul:
  url: http://$(addr_of consul):$LAB_CONSUL_PORT
  namespace: $LAB_DCS_NAMESPACE
  timeout: 2s
EOF
    fi
}

hook_yaml() {
    local n="$1"
    cat <<EOF
name: $n
scope: $SCOPE
deadline: 5s
lock_file: $RUN/$n/lock/patroni-hook.lock
$(if [ "$DCS_KIND" = etcd3 ]; then hook_consul_yaml "$RUN/$n/etcd" patroni-hook-db; else hook_consul_yaml "$RUN/$n/consul.token"; fi)
vip:
  address: $VIP/$LAB_PREFIX_LEN
  interface: $LAB_IFACE
  gratuitous_arp: 3
before_stop:
  wait: 1s
EOF
}

pgbouncer_files() {
    local d="$RUN/pgbouncer" first
    mkdir -p "$d/lock"
    printf '"lab" ""\n"postgres" ""\n' >"$d/userlist.txt"
    if [ "$MANAGER" = hook ]; then
        first="$(addr_of "${NODES[0]}")"
        cat >"$d/pgbouncer.ini" <<EOF
; Generated by scripts/lab.sh. patroni-hook manages host= and port= of $LAB_PGB_DB;
; the first value is only a start, the watch on the leader key fixes it.
EOF
    else
        first="$VIP"
        cat >"$d/pgbouncer.ini" <<EOF
; Generated by scripts/lab.sh. vip-manager variant: nothing rewrites this file,
; PgBouncer reaches the primary through the VIP, as vip-manager's users run it.
EOF
    fi
    cat >>"$d/pgbouncer.ini" <<EOF
[databases]
$LAB_PGB_DB = host=$first port=$LAB_PG_PORT dbname=postgres

[pgbouncer]
listen_addr = $(addr_of pgb)
listen_port = $LAB_PGB_PORT
; The admin console on this socket, for the hook's PAUSE, RESUME and RELOAD.
unix_socket_dir = $d
admin_users = postgres
auth_type = trust
auth_file = $d/userlist.txt
pool_mode = transaction
; The default 15 turns a 3 s switchover into a 15 s stall; 0.1 caps the
; back-off failed logins to a stopping or dead primary leave behind.
server_login_retry = ${LAB_PGB_LOGIN_RETRY:-0.1}
; After a SIGKILL of Patroni alone, its PostgreSQL runs on as a primary whose
; synchronous standby has just been promoted elsewhere: a COMMIT there waits
; for that standby forever (statement_timeout ends before the commit's wait).
; The reload marks the server connection for closing, but only when it is
; released, which a stuck commit never does. query_timeout makes PgBouncer
; cancel it, so the client's next transaction goes to the new primary. It
; also bounds a client queued by a pause, so it is longer than pause_timeout.
query_timeout = 4
max_client_conn = 200
default_pool_size = 20
; No logfile: PgBouncer in the foreground logs to stderr, i.e. logs/pgbouncer.log.
pidfile = $d/pgbouncer.pid
EOF
    if [ "$MANAGER" = hook ]; then
        cat >"$d/hook.yml" <<EOF
name: pgbouncer
scope: $SCOPE
deadline: 5s
lock_file: $d/lock/patroni-hook.lock
$(if [ "$DCS_KIND" = etcd3 ]; then hook_consul_yaml "$d/etcd" "patroni-hook-pgbouncer-$PGB_NAME"; else hook_consul_yaml "$d/consul.token"; fi)
pgbouncer:
  ini: $d/pgbouncer.ini
  pidfile: $d/pgbouncer.pid
  admin:
    socket_dir: $d
    port: $LAB_PGB_PORT
    user: postgres
  pause_on: $PAUSE_ON
  # A switchover's pause lasts about Patroni's own outage (~2 s here).
  pause_timeout: 3s
  clusters:
    - scope: $SCOPE
      databases: [$LAB_PGB_DB]
EOF
    fi
    chown -R postgres:postgres "$d"
}

# ---- processes ------------------------------------------------------------

# Starts "$@" in namespace $2 in the background, records its pid as $1, output to logs/$1.log.
# The command must exec (no forking wrapper) so the recorded pid is the server's own.
spawn() {
    local name="$1" ns="$2"
    shift 2
    ip netns exec "$ns" "$@" >>"$RUN/logs/$name.log" 2>&1 </dev/null &
    echo $! >"$(pidfile "$name")"
    disown $!
}

# setpriv execs (runuser forks and waits), so the pid recorded is the program's own.
start_patroni() {
    local n="$1"
    # The hook inherits this environment from Patroni: logs to stderr, i.e. this log.
    # With pgBackRest (LAB_BACKUP=1), PostgreSQL's archive_command and
    # Patroni's restore find this node's pgbackrest.conf through the environment.
    local pgbackrest=()
    [ ! -f "$RUN/$n/pgbackrest.conf" ] || pgbackrest=("PGBACKREST_CONFIG=$RUN/$n/pgbackrest.conf")
    spawn "$n-patroni" "$(ns_of "$n")" setpriv --reuid=postgres --regid=postgres --init-groups -- \
        env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="$RUN/$n" USER=postgres LC_ALL=C.UTF-8 \
        PATRONI_HOOK_LOG_STDERR=1 "${pgbackrest[@]}" "$PATRONI_VENV/bin/patroni" "$RUN/$n/patroni.yml"
}

# The reconcile timer of a host (a systemd timer in production).
start_safety_net() {
    local name="$1" ns="$2" config="$3" interval="$4"
    spawn "$name-safety-net" "$ns" setpriv --reuid=postgres --regid=postgres --init-groups -- \
        env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin PATRONI_HOOK_LOG_STDERR=1 \
        /bin/bash "$RUN/bin/safety-net.sh" "$RUN/bin/patroni-hook" "$config" "$interval"
}

# vip-manager 1.0.2 (Debian), flags checked against `vip-manager --help`: etcd
# is its default DCS type and it reads the key through etcd's v2 keys API;
# over HTTPS with the lab's CA and a client certificate of its own.
# It runs as root, as Debian's unit runs it.
start_vip_manager() {
    local n="$1" interval="$2"
    spawn "$n-vip-manager" "$(ns_of "$n")" vip-manager --ip "$VIP" --netmask "$LAB_PREFIX_LEN" \
        --interface "$LAB_IFACE" --trigger-key "/$LAB_DCS_NAMESPACE/$SCOPE/leader" --trigger-value "$n" \
        --dcs-type etcd --dcs-endpoints "$(etcd_endpoints)" --etcd-ca-file "$ETCD_DIR/tls/ca.pem" \
        --etcd-cert-file "$ETCD_DIR/tls/client-vip-manager.pem" --etcd-key-file "$ETCD_DIR/tls/client-vip-manager-key.pem" \
        --interval "$interval"
}

# ---- etcd (LAB_DCS=etcd3, and the vip-manager variant) ---------------------------

# etcdctl (v3 API) in the client namespace against every member, as etcd's
# root user: the client certificate whose CN is root (the lab's own reads,
# the RBAC set-up, `scripts/lab.sh kv`).
etcdctl_root() {
    in_client env ETCDCTL_API=3 etcdctl --endpoints "$(etcd_endpoints)" --cacert "$ETCD_DIR/tls/ca.pem" \
        --cert "$ETCD_DIR/tls/client-root.pem" --key "$ETCD_DIR/tls/client-root-key.pem" \
        --dial-timeout 2s --command-timeout 5s "$@"
}

# The TLS files (scripts/provision/etcd-certs.sh) and passwords. A
# certificate per member (client and peer URLs); root's client certificate
# whose CN is root, for etcdctl (gRPC: the CN is the user); per etcd user a
# client certificate without a CN plus a password, for what goes through
# etcd's v3 JSON gateway (Patroni's etcd3 backend, the hook, the lab's reads)
# and the watch unit's etcdctl (patroni-hook-etcd-watch.default): with
# --client-cert-auth and auth on, etcd 3.4 refuses a gateway request whose
# certificate has a CN ("CommonName of client sending a request against
# gateway will be ignored and not used as expected"). The passwords are made
# here, in the directory the kit's etcd-rbac.sh -p reads them from. Each
# host gets the files it uses, readable by the user that uses them.
etcd_files() {
    local m specs=() n u
    for m in "${ETCD_MEMBERS[@]}"; do specs+=("member:$m=$(addr_of "$m")"); done
    for u in $ETCD_USERS; do specs+=("gateway:$u"); done
    bash "$REPO/scripts/provision/etcd-certs.sh" "$ETCD_DIR/tls" "${specs[@]}" client:root client:vip-manager >/dev/null
    chmod 0755 "$ETCD_DIR" "$ETCD_DIR/tls"
    # etcd runs as nobody, as Debian's unit runs it as etcd.
    for m in "${ETCD_MEMBERS[@]}"; do chown nobody:nogroup "$ETCD_DIR/tls/$m-key.pem"; done
    mkdir -p "$ETCD_DIR/passwords"
    chmod 0700 "$ETCD_DIR/passwords"
    for u in $ETCD_USERS; do
        (umask 077 && head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$ETCD_DIR/passwords/$u")
    done
    # host_files DIR USER: the host's certificate (no CN) and password file.
    host_files() {
        mkdir -p "$1"
        install -o postgres -g postgres -m 0644 "$ETCD_DIR/tls/gateway-$2.pem" "$1/gateway.pem"
        install -o postgres -g postgres -m 0600 "$ETCD_DIR/tls/gateway-$2-key.pem" "$1/gateway-key.pem"
        install -o postgres -g postgres -m 0600 "$ETCD_DIR/passwords/$2" "$1/password"
    }
    for n in "${NODES[@]}"; do
        host_files "$RUN/$n/etcd/patroni" patroni
        [ "$MANAGER" != hook ] || host_files "$RUN/$n/etcd" patroni-hook-db
    done
    [ "$MANAGER" != hook ] || host_files "$RUN/pgbouncer/etcd" "patroni-hook-pgbouncer-$PGB_NAME"
}

# Lab only, before patroni-conf/etcd-rbac.sh: root with a password, for the
# lab's own reads through the gateway (the kit's root is a CN=root
# certificate for etcdctl alone; the script leaves an existing root as it
# is). Not `etcdctl user passwd` afterwards: on etcd 3.4.23 a user added with
# --no-password stays one ("password was given for no password user").
etcd_users() {
    etcdctl_root user add root --interactive=false <"$ETCD_DIR/passwords/root" >/dev/null ||
        die "etcdctl user add root failed"
}

# Three members, each in its namespace, as nobody: TLS for clients and peers,
# both verified with the lab's CA (--client-cert-auth: a client certificate
# is required, and with auth on its CN is the etcd user), the v2 API enabled
# (the vip-manager variant's Patroni and vip-manager use it; etcd 3.4 keeps
# its keys apart from v3's).
start_etcd_member() {
    local m="$1" addr cluster=() x tls="$ETCD_DIR/tls"
    addr="$(addr_of "$m")"
    for x in "${ETCD_MEMBERS[@]}"; do cluster+=("$x=https://$(addr_of "$x"):$LAB_ETCD_PEER_PORT"); done
    mkdir -p "$ETCD_DIR/$m"
    chown nobody:nogroup "$ETCD_DIR/$m"
    chmod 0700 "$ETCD_DIR/$m"
    spawn "etcd-$m" "$(ns_of "$m")" setpriv --reuid=nobody --regid=nogroup --clear-groups -- \
        etcd --name "$m" --data-dir "$ETCD_DIR/$m/data" \
        --listen-client-urls "https://$addr:$LAB_ETCD_PORT" --advertise-client-urls "https://$addr:$LAB_ETCD_PORT" \
        --listen-peer-urls "https://$addr:$LAB_ETCD_PEER_PORT" --initial-advertise-peer-urls "https://$addr:$LAB_ETCD_PEER_PORT" \
        --initial-cluster "$(IFS=,; echo "${cluster[*]}")" --initial-cluster-state new --initial-cluster-token "lab-$RID" \
        --client-cert-auth --trusted-ca-file "$tls/ca.pem" --cert-file "$tls/$m.pem" --key-file "$tls/$m-key.pem" \
        --peer-client-cert-auth --peer-trusted-ca-file "$tls/ca.pem" --peer-cert-file "$tls/$m.pem" --peer-key-file "$tls/$m-key.pem" \
        --enable-v2=true
}

start_etcd_cluster() {
    local m end=$((SECONDS + 60))
    for m in "${ETCD_MEMBERS[@]}"; do start_etcd_member "$m"; done
    until etcdctl_root endpoint health >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$end" ] || die "timed out after 60s waiting for the three etcd members to be healthy (see $RUN/logs/etcd-*.log)"
        sleep 0.2
    done
    etcd_users
    etcd_rbac
}

# The kit's patroni-conf/etcd-rbac.sh, as its header says to run it (etcd's
# root user by its client certificate): the users patroni, patroni-hook-db
# and patroni-hook-pgbouncer-<PgBouncer host> with the passwords in -p DIR,
# their roles, then auth on.
etcd_rbac() {
    say "etcd users and roles: patroni-conf/etcd-rbac.sh -n /$LAB_DCS_NAMESPACE -p $ETCD_DIR/passwords $SCOPE $PGB_NAME (then auth enable)"
    in_client env ETCDCTL_API=3 ETCDCTL_ENDPOINTS="$(etcd_endpoints)" ETCDCTL_CACERT="$ETCD_DIR/tls/ca.pem" \
        ETCDCTL_CERT="$ETCD_DIR/tls/client-root.pem" ETCDCTL_KEY="$ETCD_DIR/tls/client-root-key.pem" \
        sh "$REPO/patroni-conf/etcd-rbac.sh" -n "/$LAB_DCS_NAMESPACE" -p "$ETCD_DIR/passwords" "$SCOPE" "$PGB_NAME" \
        >>"$RUN/logs/etcd-rbac.log" 2>&1 || die "patroni-conf/etcd-rbac.sh failed (see $RUN/logs/etcd-rbac.log)"
}

# The kit's watch unit on host $1 (db1..3, or pgb for the PgBouncer host, whose
# files are under pgbouncer/): the lab cannot run systemd, so labtool's
# run-unit runs the unit's ExecStart* command lines (%i the scope, the
# EnvironmentFile rendered for the lab) in the host's namespace and starts
# ExecStart again when it exits, as Restart= does.
start_etcd_watch() {
    local host="$1" name="$1" dir env user=patroni-hook-db
    [ "$host" != pgb ] || name=pgbouncer user="patroni-hook-pgbouncer-$PGB_NAME"
    dir="$RUN/$name"
    env="$dir/etcd/patroni-hook-etcd-watch"
    # The kit's /etc/default/patroni-hook-etcd-watch with this host's values
    # (0600 root, as the kit says: it holds the password).
    (umask 077 && sed -e "s|^ETCDCTL_ENDPOINTS=.*|ETCDCTL_ENDPOINTS=$(etcd_endpoints)|" \
        -e "s|^ETCDCTL_CACERT=.*|ETCDCTL_CACERT=$ETCD_DIR/tls/ca.pem|" \
        -e "s|^ETCDCTL_CERT=.*|ETCDCTL_CERT=$dir/etcd/gateway.pem|" \
        -e "s|^ETCDCTL_KEY=.*|ETCDCTL_KEY=$dir/etcd/gateway-key.pem|" \
        -e "s|^ETCDCTL_USER=.*|ETCDCTL_USER=$user|" \
        -e "s|^ETCDCTL_PASSWORD=.*|ETCDCTL_PASSWORD=$(head -n1 "$dir/etcd/password")|" \
        -e "s|^PATRONI_NAMESPACE=.*|PATRONI_NAMESPACE=/$LAB_DCS_NAMESPACE|" \
        "$REPO/patroni-conf/patroni-hook-etcd-watch.default" >"$env")
    grep -q "^ETCDCTL_USER=$user\$" "$env" || die "the kit's patroni-hook-etcd-watch.default has no ETCDCTL_USER line to fill in"
    # The unit's hook reads /etc/patroni-hook/config.yml, here this host's
    # hook.yml ($PATRONI_HOOK_CONFIG); its log lines to the watch's log.
    # The PgBouncer host keeps the unit's NoNewPrivileges=yes (the hook's file
    # capabilities unused); a database node's reconcile moves the VIP, so
    # there it runs as the node's other reconciles do (see docs/lab.md).
    local nnp=()
    [ "$host" != pgb ] || nnp=(--no-new-privs)
    spawn "$name-watch" "$(ns_of "$host")" env LAB_ROOT="$LAB_ROOT" LAB_RUN_ID="$RID" "$PY" "$LABTOOL" run-unit \
        --unit "$REPO/patroni-conf/$ETCD_WATCH_UNIT" --instance "$SCOPE" \
        --env-file "/etc/default/patroni-hook-etcd-watch=$env" "${nnp[@]}" \
        --setenv "PATRONI_HOOK_CONFIG=$dir/hook.yml" --setenv PATRONI_HOOK_LOG_STDERR=1 \
        --replace "/usr/bin/patroni-hook=$RUN/bin/patroni-hook"
}

# The double runs in the Consul namespace; each watch handler acts in another
# (watch-handler.sh enters it). One watch on the leader key per database node
# (its VIP) and one for the PgBouncer host (its ini).
start_consul_double() {
    local watch="$LAB_DCS_NAMESPACE/$SCOPE/leader" handler="$RUN/bin/watch-handler.sh" args=() n
    # The legacy lab's agents have the hook's watches only once the adoption
    # installs them (agent-watch.sh runs a handler only while its entry is in
    # place), and the old glue's watches on the legacy key until it removes them.
    local gate_node=() gate_pgb=()
    if [ "$LEGACY" = 1 ]; then
        gate_pgb=("$RUN/bin/agent-watch.sh" "$RUN/pgbouncer/agent/patroni-hook")
        for n in "${NODES[@]}"; do
            args+=(--watch "$LAB_LEGACY_PRIMARY_KEY=$RUN/bin/agent-watch.sh $RUN/$n/agent/legacy-vip $RUN/bin/legacy-glue.sh vip $(ns_of "$n") $RUN/logs/$n-legacy-glue.log $(addr_of "$n") $VIP/$LAB_PREFIX_LEN $LAB_IFACE http://$(addr_of consul):$LAB_CONSUL_PORT/v1/kv/$LAB_LEGACY_PRIMARY_KEY")
        done
        args+=(--watch "$LAB_LEGACY_PRIMARY_KEY=$RUN/bin/agent-watch.sh $RUN/pgbouncer/agent/legacy-render $RUN/bin/legacy-glue.sh render $(ns_of pgb) $RUN/logs/pgbouncer-legacy-glue.log $RUN/pgbouncer/pgbouncer.ini.ctmpl $RUN/pgbouncer/pgbouncer.ini $RUN/pgbouncer/pgbouncer.pid http://$(addr_of consul):$LAB_CONSUL_PORT/v1/kv/$LAB_LEGACY_PRIMARY_KEY")
    fi
    if [ "${LAB_NODE_WATCHES:-1}" = 1 ]; then
        for n in "${NODES[@]}"; do
            [ "$LEGACY" != 1 ] || gate_node=("$RUN/bin/agent-watch.sh" "$RUN/$n/agent/patroni-hook")
            args+=(--watch "$watch=${gate_node[*]:+${gate_node[*]} }$handler $(ns_of "$n") $RUN/logs/$n-watch.log $RUN/bin/patroni-hook $RUN/$n/hook.yml")
        done
    fi
    # The PgBouncer host also follows a switchover's start and the old
    # primary's pause request.
    local key
    for key in leader failover pause-request; do
        args+=(--watch "$LAB_DCS_NAMESPACE/$SCOPE/$key=${gate_pgb[*]:+${gate_pgb[*]} }$handler $(ns_of pgb) $RUN/logs/pgbouncer-watch.log $RUN/bin/patroni-hook $RUN/pgbouncer/hook.yml")
    done
    # The fault matrix makes Consul slow by writing a duration to consul-delay.
    spawn consul "$(ns_of consul)" "$RUN/bin/consul-double" \
        --listen "$(addr_of consul):$LAB_CONSUL_PORT" --delay-file "$RUN/consul-delay" "${args[@]}"
}

# ---- real Consul (LAB_CONSUL=real) -------------------------------------------

# `consul` CLI in HOST's namespace against its agent's HTTPS API, with the
# lab's CA and the management token (the operator's shell on that host).
consul_on() {
    local host="$1"
    shift
    ip netns exec "$(ns_of "$host")" env CONSUL_HTTP_ADDR="https://127.0.0.1:$LAB_CONSUL_HTTPS_PORT" \
        CONSUL_CACERT="$CONSUL_DIR/tls/ca.pem" CONSUL_HTTP_TOKEN_FILE="$CONSUL_DIR/tokens/master" \
        "$CONSUL_BIN" "$@"
}

# Waits (bounded) until HOST's agent knows a Raft leader: its HTTPS API is up,
# it joined, and its RPC reaches a server over TLS.
wait_consul_leader() {
    local host="$1" timeout="$2" end=$((SECONDS + $2)) url
    url="https://127.0.0.1:$LAB_CONSUL_HTTPS_PORT/v1/status/leader"
    until ip netns exec "$(ns_of "$host")" curl -sf --max-time 1 --cacert "$CONSUL_DIR/tls/ca.pem" "$url" 2>/dev/null |
        grep -q '^"[^"]'; do
        [ "$SECONDS" -lt "$end" ] || die "timed out after ${timeout}s waiting for Consul on $host to know a leader ($url; see $RUN/logs/consul-$host.log)"
        sleep 0.1
    done
}

# Starts HOST's agent on its rendered config (labtool.py consul-configs).
# CURL_CA_BUNDLE: the legacy glue's curl (run by the agent's watches) trusts the lab's CA.
start_consul_agent() {
    local host="$1"
    spawn "consul-$host" "$(ns_of "$host")" env CURL_CA_BUNDLE="$CONSUL_DIR/tls/ca.pem" \
        "$CONSUL_BIN" agent -config-file "$CONSUL_DIR/$host/consul.json"
}

# The hosts with a Consul client agent: the database nodes, the PgBouncer host,
# the client (the operator's shell), and with LAB_BACKUP=1 the PITR host,
# whose new cluster's Patroni needs its local agent too.
consul_clients() {
    if [ "${BACKUP:-0}" = 1 ]; then echo "$LAB_CONSUL_CLIENTS pitr"; else echo "$LAB_CONSUL_CLIENTS"; fi
}

# The Consul cluster: TLS files (scripts/provision/consul-certs.sh), a token
# per role, the kit's files rendered, three servers, the ACL policies of
# patroni-conf/ applied with `consul acl policy create` and the tokens made,
# then the client agents, whose watches run the hook once at start.
consul_real_files() {
    local h specs=() servers=() clients=() n
    read -r -a servers <<<"$LAB_CONSUL_SERVERS"
    read -r -a clients <<<"$(consul_clients)"
    mkdir -p "$CONSUL_DIR/tokens" "$CONSUL_DIR/policies"
    for h in "${servers[@]}"; do specs+=("server:$h=$(addr_of "$h")"); done
    for h in "${clients[@]}"; do specs+=("client:$h=$(addr_of "$h")"); done
    bash "$REPO/scripts/provision/consul-certs.sh" "$CONSUL_DIR/tls" "$LAB_CONSUL_DC" "${specs[@]}" >/dev/null
    chmod 0755 "$CONSUL_DIR" "$CONSUL_DIR/tls"
    # Secrets chosen here, so every file can name its token before Consul runs.
    local t
    for t in master patroni patroni-pitr hook-db pgbouncer legacy-glue $(printf 'agent-%s ' "${servers[@]}" "${clients[@]}"); do
        cat /proc/sys/kernel/random/uuid >"$CONSUL_DIR/tokens/$t"
    done
    chmod 0600 "$CONSUL_DIR"/tokens/*
    for n in "${NODES[@]}"; do
        mkdir -p "$RUN/$n"
        install -o postgres -g postgres -m 0600 "$CONSUL_DIR/tokens/hook-db" "$RUN/$n/consul.token"
    done
    mkdir -p "$RUN/pgbouncer"
    install -o postgres -g postgres -m 0600 "$CONSUL_DIR/tokens/pgbouncer" "$RUN/pgbouncer/consul.token"
}

start_consul_real() {
    local h servers=() clients=()
    read -r -a servers <<<"$LAB_CONSUL_SERVERS"
    read -r -a clients <<<"$(consul_clients)"
    labtool consul-configs
    for h in "${servers[@]}"; do start_consul_agent "$h"; done
    for h in "${servers[@]}"; do wait_consul_leader "$h" 60; done
    # The management token works once the new leader has set ACLs up.
    local end=$((SECONDS + 30))
    until consul_on cs1 acl token read -self >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$end" ] || die "timed out after 30s waiting for Consul's ACL system to accept the management token"
        sleep 0.1
    done
    # The kit's policies, for this lab's namespace, scope, node names and PgBouncer host name.
    local p
    for p in patroni hook-db pgbouncer; do
        sed -e "s|\"service/postgres/|\"$LAB_DCS_NAMESPACE/$SCOPE/|" \
            -e 's|session_prefix "pg-patroni"|session_prefix "db"|' \
            -e "s|service \"postgres\"|service \"$SCOPE\"|" \
            "$REPO/patroni-conf/consul-acl-$p.hcl" >"$CONSUL_DIR/policies/$p.hcl"
        consul_on cs1 acl policy create -name "lab-$p" -rules "@$CONSUL_DIR/policies/$p.hcl" >/dev/null
        consul_on cs1 acl token create -description "lab $p" -policy-name "lab-$p" \
            -secret "$(cat "$CONSUL_DIR/tokens/$p")" >/dev/null
    done
    if [ "$BACKUP" = 1 ]; then
        # The PITR host's new cluster: Patroni's policy for its own scope and node.
        sed -e "s|\"service/postgres/|\"$LAB_DCS_NAMESPACE/$SCOPE-pitr/|" \
            -e 's|session_prefix "pg-patroni"|session_prefix "pitr"|' \
            -e "s|service \"postgres\"|service \"$SCOPE-pitr\"|" \
            "$REPO/patroni-conf/consul-acl-patroni.hcl" >"$CONSUL_DIR/policies/patroni-pitr.hcl"
        consul_on cs1 acl policy create -name lab-patroni-pitr -rules "@$CONSUL_DIR/policies/patroni-pitr.hcl" >/dev/null
        consul_on cs1 acl token create -description "lab patroni-pitr" -policy-name lab-patroni-pitr \
            -secret "$(cat "$CONSUL_DIR/tokens/patroni-pitr")" >/dev/null
    fi
    # The legacy lab's old glue reads its one key with the agents' default token.
    printf 'key "%s" {\n  policy = "read"\n}\n' "$LAB_LEGACY_PRIMARY_KEY" >"$CONSUL_DIR/policies/legacy-glue.hcl"
    consul_on cs1 acl policy create -name lab-legacy-glue -rules "@$CONSUL_DIR/policies/legacy-glue.hcl" >/dev/null
    consul_on cs1 acl token create -description "lab legacy glue" -policy-name lab-legacy-glue \
        -secret "$(cat "$CONSUL_DIR/tokens/legacy-glue")" >/dev/null
    # Each agent's own token: node identity (its node, read of services).
    for h in "${servers[@]}" "${clients[@]}"; do
        consul_on cs1 acl token create -description "agent $h" -node-identity "$h:$LAB_CONSUL_DC" \
            -secret "$(cat "$CONSUL_DIR/tokens/agent-$h")" >/dev/null
    done
    for h in "${clients[@]}"; do start_consul_agent "$h"; done
    for h in "${clients[@]}"; do wait_consul_leader "$h" 60; done
    # An agent starts its watches before it has joined: their first reads fail
    # ("No known Consul servers") and back off 5 s, then 20 s, during which a
    # change goes unseen. `consul reload` starts them again, now joined; each
    # runs its handler once more, as at any reload.
    for h in "${clients[@]}"; do consul_on "$h" reload >/dev/null; done
}

# Waits (bounded) until an HTTP URL answers 2xx from the client namespace.
wait_http() {
    local what="$1" url="$2" timeout="$3" end=$((SECONDS + $3))
    until in_client curl -sf --max-time 1 "$url" >/dev/null; do
        [ "$SECONDS" -lt "$end" ] || die "timed out after ${timeout}s waiting for $what ($url)"
        sleep 0.05
    done
}

wait_sql() {
    local what="$1" conninfo="$2" timeout="$3" end=$((SECONDS + $3))
    until in_client psql "$conninfo connect_timeout=1" -Atqc 'select 1' >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$end" ] || die "timed out after ${timeout}s waiting for $what"
        sleep 0.1
    done
}

# ---- up -------------------------------------------------------------------

cmd_up() {
    need_root
    MANAGER="${LAB_VIP_MANAGER:-hook}"
    local interval="${LAB_VIP_MANAGER_INTERVAL:-1000}"
    PAUSE_ON="${LAB_PAUSE_ON:-switchover}"
    [ "$MANAGER" = hook ] || PAUSE_ON=""
    [[ "$interval" =~ ^[1-9][0-9]{0,5}$ ]] || die "LAB_VIP_MANAGER_INTERVAL must be milliseconds, not '$interval'"
    case "$PAUSE_ON" in "" | switchover | always | never) ;; *) die "LAB_PAUSE_ON must be switchover, always or never, not '$PAUSE_ON'" ;; esac
    BACKUP="${LAB_BACKUP:-0}"
    LEGACY="${LAB_LEGACY:-0}"
    [[ "$BACKUP$LEGACY" =~ ^[01][01]$ ]] || die "LAB_BACKUP and LAB_LEGACY must be 0 or 1, not '$BACKUP' and '$LEGACY'"
    [ "$BACKUP$LEGACY" != 11 ] || die "LAB_BACKUP=1 and LAB_LEGACY=1 are two different labs; choose one"
    [ "$MANAGER" = hook ] || [ "$BACKUP$LEGACY" = 00 ] || die "LAB_BACKUP and LAB_LEGACY need the hook variant"
    if [ "$BACKUP" = 1 ]; then
        command -v pgbackrest >/dev/null 2>&1 || die "missing prerequisite for LAB_BACKUP=1: pgbackrest (Debian package pgbackrest)"
        command -v openssl >/dev/null 2>&1 || die "missing prerequisite for LAB_BACKUP=1: openssl"
    fi
    CONSUL_KIND="${LAB_CONSUL:-$LAB_CONSUL_DEFAULT}"
    case "$CONSUL_KIND" in double | real) ;; *) die "LAB_CONSUL (--consul) must be double or real, not '$CONSUL_KIND'" ;; esac
    DCS_KIND="${LAB_DCS:-$LAB_DCS_DEFAULT}"
    case "$DCS_KIND" in consul | etcd3) ;; *) die "LAB_DCS (--dcs) must be consul or etcd3, not '$DCS_KIND'" ;; esac
    # vip-manager runs on the etcd members (their v2 API) whatever LAB_DCS says.
    [ "$MANAGER" = hook ] || DCS_KIND=etcd3
    [ "$DCS_KIND" = consul ] || [ "$BACKUP$LEGACY" = 00 ] || die "LAB_BACKUP and LAB_LEGACY need the hook variant on Consul (LAB_DCS=consul)"
    [ "$DCS_KIND" = consul ] || CONSUL_KIND=""
    check_prereqs "$MANAGER"
    CONSUL_VERSION="" ETCD_VERSION=""
    [ "$CONSUL_KIND" != real ] || CONSUL_VERSION="$("$CONSUL_BIN" version | sed -n '1s/^Consul v//p')"
    [ "$DCS_KIND" != etcd3 ] || ETCD_VERSION="$(etcd --version | sed -n 's/^etcd Version: //p')"
    set_run "${LAB_RUN_ID:-$(new_run_id)}"
    CONSUL_DIR="$RUN/consul"
    ETCD_DIR="$RUN/etcd"
    [ ! -e "$RUN" ] || die "a lab with run id $RID exists ($RUN); run: LAB_RUN_ID=$RID scripts/lab.sh down"
    [ "$MANAGER" = vip-manager ] || resolve_binaries
    say "lab $RID in $RUN (VIP managed by $MANAGER, on $DCS_KIND)"
    mkdir -p "$RUN"/{bin,pids,logs,events}
    chmod 0755 "$LAB_ROOT" "$RUN" "$RUN/bin" "$RUN/logs"
    cat >"$RUN/lab.env" <<EOF
LAB_RUN_ID=$RID
LAB_MANAGER=$MANAGER
LAB_VIP_MANAGER_INTERVAL=$interval
LAB_NODE_WATCHES=${LAB_NODE_WATCHES:-1}
LAB_PAUSE_ON=$PAUSE_ON
LAB_BACKUP=$BACKUP
LAB_LEGACY=$LEGACY
LAB_CONSUL=$CONSUL_KIND
LAB_CONSUL_VERSION=$CONSUL_VERSION
LAB_DCS=$DCS_KIND
LAB_ETCD_VERSION=$ETCD_VERSION
EOF
    echo "$RID" >"$LAB_ROOT/current"
    chown postgres:postgres "$RUN/logs"
    if [ "$MANAGER" = hook ]; then
        # postgres must traverse to its files and run the hook: copies under the run dir.
        install -m 0755 "$HOOK_BIN" "$RUN/bin/patroni-hook"
        setcap cap_net_admin,cap_net_raw+ep "$RUN/bin/patroni-hook"
        [ "$CONSUL_KIND" != double ] || install -m 0755 "$DOUBLE_BIN" "$RUN/bin/consul-double"
        install -m 0755 "$REPO/scripts/lab/safety-net.sh" "$RUN/bin/safety-net.sh"
        install -m 0755 "$REPO/scripts/lab/watch-handler.sh" "$RUN/bin/watch-handler.sh"
        if [ "$LEGACY" = 1 ]; then
            install -m 0755 "$REPO/scripts/lab/agent-watch.sh" "$RUN/bin/agent-watch.sh"
            install -m 0755 "$REPO/scripts/lab/legacy-glue.sh" "$RUN/bin/legacy-glue.sh"
        fi
    fi

    say "network namespaces and the bridge"
    local sw host ns hosts
    hosts="$(hosts_of "$MANAGER")"
    [ "$CONSUL_KIND" != real ] || hosts="$LAB_HOSTS_hook_real"
    [ "$MANAGER$DCS_KIND" != hooketcd3 ] || hosts="$LAB_HOSTS_hook_etcd3"
    [ "$BACKUP" != 1 ] || hosts="$hosts $LAB_HOSTS_backup"
    sw="$(ns_of "$LAB_SWITCH")"
    ip netns add "$sw"
    ip -n "$sw" link set lo up
    ip -n "$sw" link add br0 type bridge
    ip -n "$sw" link set br0 up
    for host in $hosts; do
        ns="$(ns_of "$host")"
        ip netns add "$ns"
        ip -n "$ns" link set lo up
        # Created inside the switch namespace: the host never sees either end.
        ip -n "$sw" link add "v-$host" type veth peer name "$LAB_IFACE" netns "$ns"
        ip -n "$sw" link set "v-$host" master br0 up
        ip -n "$ns" addr add "$(addr_of "$host")/$LAB_PREFIX_LEN" dev "$LAB_IFACE"
        ip -n "$ns" link set "$LAB_IFACE" up
    done

    # Every configuration first: the watches run once as soon as the double
    # (or an agent) starts. Real Consul's files come first: the others name
    # its CA and tokens.
    local n
    [ "$CONSUL_KIND" != real ] || consul_real_files
    [ "$DCS_KIND" != etcd3 ] || etcd_files
    for n in "${NODES[@]}"; do
        mkdir -p "$RUN/$n/lock"
        patroni_yaml "$n" >"$RUN/$n/patroni.yml"
        [ "$MANAGER" != hook ] || hook_yaml "$n" >"$RUN/$n/hook.yml"
        [ "$LEGACY" != 1 ] || mkdir -p "$RUN/$n/agent"
        chown -R postgres:postgres "$RUN/$n"
        chmod 0755 "$RUN/$n"
    done
    pgbouncer_files
    [ "$LEGACY" != 1 ] || mkdir -p "$RUN/pgbouncer/agent"
    if [ "$BACKUP" = 1 ]; then
        say "pgBackRest: TLS files, pgbackrest.conf of every host (patroni-conf/), its TLS servers on repo and ${NODES[*]}"
        LAB_RUN_ID="$RID" "$PY" "$LABTOOL" backup-setup
    fi

    if [ "$DCS_KIND" = etcd3 ]; then
        say "etcd $ETCD_VERSION: members ${ETCD_MEMBERS[*]} (HTTPS :$LAB_ETCD_PORT, client certificates, v2 API enabled)"
        start_etcd_cluster
    elif [ "$MANAGER" = hook ] && [ "$CONSUL_KIND" = real ]; then
        say "Consul $CONSUL_VERSION: servers $LAB_CONSUL_SERVERS, agents on $LAB_CONSUL_CLIENTS (ACLs default deny, HTTPS :$LAB_CONSUL_HTTPS_PORT); the agents' watches run reconcile"
        start_consul_real
    elif [ "$MANAGER" = hook ]; then
        say "Consul double on $(addr_of consul):$LAB_CONSUL_PORT, watches on $LAB_DCS_NAMESPACE/$SCOPE/leader run reconcile on ${NODES[*]} and pgb"
        start_consul_double
        wait_http "the Consul double" "http://$(addr_of consul):$LAB_CONSUL_PORT/v1/status/leader" 20
    fi
    # Fault injection for tests/e2e.rs: `down` must clean up after a partial `up`.
    [ "${LAB_FAIL_AFTER:-}" != dcs ] || die "stopping after the DCS (LAB_FAIL_AFTER=dcs)"

    say "PgBouncer on $(addr_of pgb):$LAB_PGB_PORT"
    spawn pgbouncer "$(ns_of pgb)" setpriv --reuid=postgres --regid=postgres --init-groups -- \
        "$(command -v pgbouncer)" "$RUN/pgbouncer/pgbouncer.ini"
    if [ "$LEGACY" = 1 ]; then
        say "legacy lab $RID is up: no PostgreSQL and no Patroni yet, the hook's watches and timers not installed (scripts/lab/labkit/adopt.py builds the rest)"
        return 0
    fi
    if [ "$MANAGER" = hook ]; then
        if [ "$DCS_KIND" = etcd3 ]; then
            local watch_hosts=(pgb)
            [ "${LAB_NODE_WATCHES:-1}" != 1 ] || watch_hosts+=("${NODES[@]}")
            say "the kit's $ETCD_WATCH_UNIT on ${watch_hosts[*]} (labtool run-unit: its command lines, restarted as Restart= does)"
            for n in "${watch_hosts[@]}"; do start_etcd_watch "$n"; done
        fi
        start_safety_net pgbouncer "$(ns_of pgb)" "$RUN/pgbouncer/hook.yml" "$PGB_SAFETY_NET_INTERVAL"
    else
        say "vip-manager on ${NODES[*]}, interval $interval ms"
        for n in "${NODES[@]}"; do start_vip_manager "$n" "$interval"; done
    fi

    say "three Patroni nodes (${NODES[*]})"
    for n in "${NODES[@]}"; do start_patroni "$n"; done
    local lead
    lead="$(labtool wait-healthy --timeout 180)" || die "the cluster did not come up; see $RUN/logs/db*-patroni.log"
    say "leader: $lead"
    labtool prepare-db --node "$lead"

    if [ "$MANAGER" = hook ]; then
        for n in "${NODES[@]}"; do
            start_safety_net "$n" "$(ns_of "$n")" "$RUN/$n/hook.yml" "$SAFETY_NET_INTERVAL"
        done
    fi
    wait_sql "writes through PgBouncer" "host=$(addr_of pgb) port=$LAB_PGB_PORT dbname=$LAB_PGB_DB user=lab" 60
    wait_sql "writes through the VIP" "host=$VIP port=$LAB_PG_PORT dbname=postgres user=lab" 60
    if [ "$BACKUP" = 1 ]; then
        say "pgBackRest: stanza $SCOPE on the repository host"
        LAB_RUN_ID="$RID" "$PY" "$LABTOOL" backup-stanza-create
    fi
    say "lab $RID is up: LAB_RUN_ID=$RID scripts/lab.sh status"
}

# ---- process control for labtool ------------------------------------------

# start-patroni NODE: (re)starts one node's Patroni, as `up` does.
cmd_start_patroni() {
    need_root
    load_run
    local n="${1:-}"
    [[ " ${NODES[*]} " == *" $n "* ]] || die "start-patroni: '$n' is not one of ${NODES[*]}"
    alive "$(pid_of "$n-patroni" || true)" && die "start-patroni: Patroni of $n is still running"
    start_patroni "$n"
}

# start-etcd MEMBER: starts one etcd member again on its data (the fault
# matrix, after killing it), as `up` started it.
cmd_start_etcd() {
    need_root
    load_run
    local m="${1:-}"
    [[ " ${ETCD_MEMBERS[*]} " == *" $m "* ]] || die "start-etcd: '$m' is not one of ${ETCD_MEMBERS[*]}"
    [ "$DCS_KIND" = etcd3 ] || die "start-etcd: lab $RID does not run on etcd"
    alive "$(pid_of "etcd-$m" || true)" && die "start-etcd: etcd member $m is still running"
    start_etcd_member "$m"
}

# enable-reconcile HOST (legacy lab): what installing the hook's Consul watch
# and enabling its timer does on HOST (db1..3 or pgb): the agent's watch entry
# goes in place and runs once, as a `consul reload` runs a new watch; the
# reconcile timer starts.
cmd_enable_reconcile() {
    need_root
    load_run
    local host="${1:-}" dir name config interval log
    case " ${NODES[*]} pgb " in
    *" $host "*) ;;
    *) die "enable-reconcile: '$host' is not one of ${NODES[*]} pgb" ;;
    esac
    if [ "$host" = pgb ]; then
        name=pgbouncer interval="$PGB_SAFETY_NET_INTERVAL"
    else
        name="$host" interval="$SAFETY_NET_INTERVAL"
    fi
    dir="$RUN/$name" config="$RUN/$name/hook.yml" log="$RUN/logs/$name-watch.log"
    [ -d "$dir/agent" ] || die "enable-reconcile: lab $RID is not a legacy lab (no $dir/agent)"
    touch "$dir/agent/patroni-hook"
    "$RUN/bin/watch-handler.sh" "$(ns_of "$host")" "$log" "$RUN/bin/patroni-hook" "$config" </dev/null || true
    alive "$(pid_of "$name-safety-net" || true)" || start_safety_net "$name" "$(ns_of "$host")" "$config" "$interval"
}

# vip-manager-interval MS: restarts every node's vip-manager with another interval.
cmd_vip_manager_interval() {
    need_root
    load_run
    local ms="${1:-}" n
    [ "$MANAGER" = vip-manager ] || die "vip-manager-interval: lab $RID runs the $MANAGER variant"
    [[ "$ms" =~ ^[1-9][0-9]{0,5}$ ]] || die "vip-manager-interval: expected milliseconds, not '$ms'"
    for n in "${NODES[@]}"; do stop_named "$n-vip-manager" TERM 10; done
    for n in "${NODES[@]}"; do start_vip_manager "$n" "$ms"; done
    sed -i "s/^LAB_VIP_MANAGER_INTERVAL=.*/LAB_VIP_MANAGER_INTERVAL=$ms/" "$RUN/lab.env"
    say "vip-manager on ${NODES[*]}, interval $ms ms"
}

# ---- down -----------------------------------------------------------------

cmd_down() {
    need_root
    local id="${LAB_RUN_ID:-}"
    if [ -z "$id" ]; then
        [ -f "$LAB_ROOT/current" ] || { say "no lab to take down"; return 0; }
        id="$(cat "$LAB_ROOT/current")"
    fi
    set_run "$id"
    say "taking lab $RID down"
    local n f pid problems=0
    # Measuring helpers, timers and vip-managers first, so nothing reacts to the shutdown.
    for f in "$RUN"/pids/ev-*.pid "$RUN"/pids/*-safety-net.pid "$RUN"/pids/*-watch.pid "$RUN"/pids/*-vip-manager.pid; do
        [ -e "$f" ] || continue
        stop_named "$(basename "$f" .pid)" TERM 10
    done
    # Patroni stops its PostgreSQL on SIGTERM; in parallel, bounded.
    for n in "${NODES[@]}"; do
        pid="$(pid_of "$n-patroni" 2>/dev/null || true)"
        if alive "$pid"; then kill -TERM "$pid"; fi
    done
    # pitr: the node of a point-in-time recovery's new cluster (LAB_BACKUP=1).
    for n in "${NODES[@]}" pitr; do
        stop_named "$n-patroni" TERM 30
        pid="$(postmaster_pid "$n" || true)"
        if alive "$pid"; then
            kill -INT "$pid" 2>/dev/null || true # fast shutdown
            wait_gone "$pid" 15 || { kill -KILL "$pid" 2>/dev/null || true; }
        fi
    done
    for f in "$RUN"/pids/*-pgbackrest.pid; do
        [ -e "$f" ] || continue
        stop_named "$(basename "$f" .pid)" TERM 10
    done
    stop_named pgbouncer TERM 10
    stop_named consul TERM 10
    # Real Consul: the client agents (they leave the cluster), then the servers;
    # each group signalled at once, then awaited. Consul exits 1 on SIGTERM.
    local group
    for group in "$LAB_CONSUL_CLIENTS pitr" "$LAB_CONSUL_SERVERS"; do
        for n in $group; do
            pid="$(pid_of "consul-$n" 2>/dev/null || true)"
            if alive "$pid"; then kill -TERM "$pid"; fi
        done
        for n in $group; do stop_named "consul-$n" TERM 10; done
    done
    stop_named etcd TERM 10
    for n in $LAB_ETCD_MEMBERS; do
        pid="$(pid_of "etcd-$n" 2>/dev/null || true)"
        if alive "$pid"; then kill -TERM "$pid"; fi
    done
    for n in $LAB_ETCD_MEMBERS; do stop_named "etcd-$n" TERM 10; done
    # Anything still running inside the lab's namespaces was started by the lab
    # (a backend, a callback, a watch handler, a sleep of a timer): by pid, then
    # the namespaces. Hosts of both variants: a partial lab may have either.
    local hosts=() host namespaces=()
    read -r -a hosts <<<"$LAB_HOSTS_hook $LAB_HOSTS_hook_real $LAB_HOSTS_hook_etcd3 $LAB_HOSTS_vip_manager $LAB_HOSTS_backup"
    for host in "${hosts[@]}"; do
        [[ " ${namespaces[*]} " == *" $(ns_of "$host") "* ]] || namespaces+=("$(ns_of "$host")")
    done
    for ns in "${namespaces[@]}" "$(ns_of "$LAB_SWITCH")"; do
        [ -e "/run/netns/$ns" ] || continue
        for pid in $(ip netns pids "$ns" 2>/dev/null); do
            kill -KILL "$pid" 2>/dev/null || true
        done
        for pid in $(ip netns pids "$ns" 2>/dev/null); do
            wait_gone "$pid" 5 || { echo "  pid $pid in $ns survived SIGKILL" >&2; problems=1; }
        done
        ip netns del "$ns" || { echo "  could not remove namespace $ns" >&2; problems=1; }
    done
    if [ -d "$RUN" ]; then
        # Keep the measurements of a failed run for a post-mortem when asked.
        if [ -n "${LAB_KEEP_LOGS:-}" ]; then
            mkdir -p "$LAB_KEEP_LOGS"
            cp -r "$RUN/logs" "$RUN/events" "$LAB_KEEP_LOGS/" 2>/dev/null || true
        fi
        rm -rf "$RUN"
    fi
    if [ -f "$LAB_ROOT/current" ] && [ "$(cat "$LAB_ROOT/current")" = "$RID" ]; then
        rm -f "$LAB_ROOT/current"
    fi
    rmdir "$LAB_ROOT" 2>/dev/null || true
    [ "$problems" = 0 ] || die "lab $RID: some parts could not be removed (above)"
    say "lab $RID is down"
}

postmaster_pid() {
    local f="$RUN/$1/data/postmaster.pid" pid
    [ -f "$f" ] || return 0
    pid="$(head -n1 "$f")"
    # Only a live postgres (pids are reused).
    if alive "$pid" && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q postgres; then
        echo "$pid"
    fi
}

down_after_failed_up() {
    if [ "$1" -ne 0 ]; then
        say "up failed; taking the partial lab down"
        cmd_down || true
    fi
}

usage() {
    sed -n '2,/^set -euo pipefail/{/^#/s/^# \{0,1\}//p}' "$0"
    exit 2
}

main() {
    [ $# -ge 1 ] || usage
    # --consul KIND anywhere after the command: LAB_CONSUL for the labs it brings up.
    local args=() a dcs=""
    while [ $# -gt 0 ]; do
        a="$1"
        shift
        case "$a" in
        --consul) [ $# -ge 1 ] || die "--consul needs double or real"; export LAB_CONSUL="$1"; shift ;;
        --consul=*) export LAB_CONSUL="${a#--consul=}" ;;
        # bench takes a list (--dcs consul,etcd3): its own option, passed on.
        --dcs) [ $# -ge 1 ] || die "--dcs needs consul or etcd3"; dcs="$1"; shift ;;
        --dcs=*) dcs="${a#--dcs=}" ;;
        *) args+=("$a") ;;
        esac
    done
    set -- "${args[@]}"
    if [ -n "$dcs" ]; then
        if [ "${1:-}" = bench ]; then
            set -- "$@" --dcs "$dcs"
        else
            export LAB_DCS="$dcs"
        fi
    fi
    [ $# -ge 1 ] || usage
    case "$1" in -h | --help | help) usage ;; esac
    as_root "$0" "$@"
    local cmd="$1"
    shift
    case "$cmd" in
    up)
        # A failed `up` takes its partial lab down (clean up on failure),
        # except when a test stops it on purpose to exercise `down`.
        if [ -z "${LAB_FAIL_AFTER:-}" ]; then
            trap 'down_after_failed_up $?' EXIT
        fi
        cmd_up
        trap - EXIT
        ;;
    down) cmd_down ;;
    start-patroni) cmd_start_patroni "$@" ;;
    start-etcd) cmd_start_etcd "$@" ;;
    enable-reconcile) cmd_enable_reconcile "$@" ;;
    vip-manager-interval) cmd_vip_manager_interval "$@" ;;
    check-prereqs) need_root; check_prereqs "${1:-hook}" ;;
    kv)
        need_root
        load_run
        if [ "$DCS_KIND" = etcd3 ] && [ "$MANAGER" = hook ]; then
            # etcd's v3 keys (Patroni's etcd3 layout: /<namespace>/<scope>/...).
            [ $# -eq 1 ] || die "kv takes one key"
            local key="$1"
            [ "${key:0:1}" = / ] || key="/$key"
            ETCD_DIR="$RUN/etcd"
            etcdctl_root get --print-value-only "$key" | tr -d '\n'
        else
            exec "$PY" "$LABTOOL" kv "$@"
        fi
        ;;
    consul)
        need_root
        load_run
        [ "$CONSUL_KIND" = real ] || die "consul: lab $RID runs on ${CONSUL_KIND:-etcd} (the Consul double: http://$(addr_of consul):$LAB_CONSUL_PORT)"
        consul_on client "$@"
        ;;
    -h | --help | help) usage ;;
    demo | backup | adopt-single | adopt-cluster)
        need_root
        install_prereqs
        exec "$PY" "$LABTOOL" "$cmd" "$@"
        ;;
    *)
        # status, the events, bench and the other scenarios: labtool.py.
        need_root
        [ -x "$PY" ] || die "no Python at $PY (the Patroni virtualenv; scripts/lab.sh demo installs it)"
        exec "$PY" "$LABTOOL" "$cmd" "$@"
        ;;
    esac
}

main "$@"
