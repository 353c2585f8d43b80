#!/usr/bin/env bash
# A local lab of the whole story, in network namespaces: the Consul double,
# three PostgreSQL 15 + Patroni 4 nodes with patroni-hook as their callbacks
# (VIP 198.51.100.100), PgBouncer following the leader through a watch, and a
# client writing through both. One implementation, used by the demo, the bench
# and tests/e2e.rs. As root, or as a user with sudo: it runs itself again
# through sudo, keeping PATH (a rustup toolchain) and LAB_*, CI, PATRONI_VENV.
#
#   scripts/lab.sh demo        # install, build, up, three events, timelines, down
#   scripts/lab.sh bench       # repeated events, hook vs vip-manager, Markdown table
#   scripts/lab.sh up | status | switchover | failover | stop-primary | kill-patroni | down
#
# Environment:
#   LAB_RUN_ID     run id (namespace names phl-<id>-*); default: new for up/demo/bench,
#                  else the id in $LAB_ROOT/current
#   LAB_ROOT       state directory root (default /run/patroni-hook-lab); the lab's
#                  files, logs and pids live in $LAB_ROOT/<id>
#   LAB_HOOK_BIN, LAB_DOUBLE_BIN   binaries to use instead of building target/release
#   LAB_VIP_MANAGER  hook (default) or vip-manager: what moves the VIP
#   LAB_BENCH_SWITCHOVERS (5), LAB_BENCH_FAILOVERS (1), LAB_BENCH_KILLS (1), LAB_BENCH_OUT
#   LAB_KEEP_LOGS  down copies logs/ and events/ there before removing the run dir
#   LAB_FAIL_AFTER=consul  up stops after starting the double (tests: down after a partial up)
#
# Topology (LAB.md: documentation range only, nothing on the host's interfaces):
#   phl-<id>-sw      bridge br0; one veth per host below (eth1 inside each host)
#   phl-<id>-consul  198.51.100.2   consul-double :8500, watch on the leader key
#   phl-<id>-db1..3  198.51.100.11-13  Patroni + PostgreSQL as postgres, VIP 198.51.100.100/24
#   phl-<id>-pgb     198.51.100.20  PgBouncer :6432, transaction pooling
#   phl-<id>-client  198.51.100.30  load generator, sampler, patronictl
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/prereqs.sh
. "$REPO/scripts/prereqs.sh"

LAB_ROOT="${LAB_ROOT:-/run/patroni-hook-lab}"
SCOPE="${LAB_SCOPE:-labcluster}"
VIP=198.51.100.100
CONSUL_ADDR=198.51.100.2
PGB_ADDR=198.51.100.20
CLIENT_ADDR=198.51.100.30
NODES=(db1 db2 db3)
declare -A NODE_ADDR=([db1]=198.51.100.11 [db2]=198.51.100.12 [db3]=198.51.100.13)
PY="$PATRONI_VENV/bin/python"
# Patroni settings (see patroni_yaml): ttl 20 is Patroni's minimum; loop_wait
# and retry_timeout shrunk with it (loop_wait + 2*retry_timeout <= ttl).
PATRONI_TTL="${LAB_PATRONI_TTL:-20}"
PATRONI_LOOP_WAIT="${LAB_PATRONI_LOOP_WAIT:-2}"
PATRONI_RETRY_TIMEOUT="${LAB_PATRONI_RETRY_TIMEOUT:-5}"
# The hook's reconcile timer on the database nodes and on the PgBouncer host
# (a systemd timer in production; "every few seconds", PRODUCT.md).
SAFETY_NET_INTERVAL="${LAB_SAFETY_NET_INTERVAL:-2}"
PGB_SAFETY_NET_INTERVAL="${LAB_PGB_SAFETY_NET_INTERVAL:-5}"

say() { printf '==> %s\n' "$*"; }
die() { printf 'lab.sh: error: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }

# ---- run id, names, state -------------------------------------------------

set_run() {
    RID="$1"
    [[ "$RID" =~ ^[a-z0-9]{1,12}$ ]] || die "run id '$RID' must be 1-12 lowercase letters or digits"
    RUN="$LAB_ROOT/$RID"
    NS_SW="phl-$RID-sw"
    NS_CONSUL="phl-$RID-consul"
    NS_PGB="phl-$RID-pgb"
    NS_CLIENT="phl-$RID-client"
    # labtool arguments naming the database nodes.
    DB_ARGS=() ADDR_ARGS=() API_ARGS=()
    local n
    for n in "${NODES[@]}"; do
        DB_ARGS+=(--db "$n=phl-$RID-$n")
        ADDR_ARGS+=(--addr "$n=${NODE_ADDR[$n]}")
        API_ARGS+=(--api "${NODE_ADDR[$n]}:8008")
    done
}
ns_of() { echo "phl-$RID-$1"; }

# The lab the other commands act on: $LAB_RUN_ID, else the last one brought up.
load_run() {
    local id="${LAB_RUN_ID:-}"
    if [ -z "$id" ]; then
        [ -f "$LAB_ROOT/current" ] || die "no lab is up (no $LAB_ROOT/current); run: scripts/lab.sh up"
        id="$(cat "$LAB_ROOT/current")"
    fi
    set_run "$id"
    [ -d "$RUN" ] || die "no lab with run id $RID ($RUN is missing)"
    MODE="$(cat "$RUN/mode")"
}

new_run_id() { printf 'l%s%04d' "$(date +%H%M%S)" $((RANDOM % 10000)); }

pidfile() { echo "$RUN/pids/$1.pid"; }
pid_of() { local f; f="$(pidfile "$1")"; [ -f "$f" ] && cat "$f"; }
alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

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

# Runs a command inside the client namespace (the lab's observer).
in_client() { ip netns exec "$NS_CLIENT" "$@"; }
labtool() { ip netns exec "$NS_CLIENT" "$PY" "$RUN/bin/labtool.py" "$@"; }
as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"; }

leader() {
    in_client curl -s --max-time 2 "http://$CONSUL_ADDR:8500/v1/kv/service/$SCOPE/leader?raw" || true
}


# ---- prerequisites and binaries -------------------------------------------

check_prereqs() {
    local missing=()
    [ -x "$PG_BIN/postgres" ] || missing+=("PostgreSQL 15 ($PG_BIN/postgres)")
    command -v pgbouncer >/dev/null 2>&1 || missing+=(pgbouncer)
    command -v psql >/dev/null 2>&1 || missing+=(psql)
    command -v setcap >/dev/null 2>&1 || missing+=("setcap (libcap2-bin)")
    command -v setpriv >/dev/null 2>&1 || missing+=("setpriv (util-linux)")
    command -v curl >/dev/null 2>&1 || missing+=(curl)
    [ -x "$PATRONI_VENV/bin/patroni" ] || missing+=("Patroni in $PATRONI_VENV")
    "$PY" -c 'import psycopg' 2>/dev/null || missing+=("psycopg in $PATRONI_VENV")
    id postgres >/dev/null 2>&1 || missing+=("the postgres user")
    if [ "${LAB_VIP_MANAGER:-hook}" = vip-manager ] || [ "${NEED_VIP_MANAGER:-}" = 1 ]; then
        command -v vip-manager >/dev/null 2>&1 || missing+=("vip-manager (Debian package vip-manager)")
    fi
    if [ "${#missing[@]}" -gt 0 ]; then
        die "missing prerequisites: ${missing[*]} (scripts/lab.sh demo installs them)"
    fi
}

# The hook and the double: given, or built from this checkout.
resolve_binaries() {
    HOOK_BIN="${LAB_HOOK_BIN:-}"
    DOUBLE_BIN="${LAB_DOUBLE_BIN:-}"
    if [ -z "$HOOK_BIN" ] || [ -z "$DOUBLE_BIN" ]; then
        say "building the hook and the Consul double (cargo build --release --workspace --bins)"
        (cd "$REPO" && cargo build --release --workspace --bins --quiet)
        HOOK_BIN="${HOOK_BIN:-$REPO/target/release/patroni-hook}"
        DOUBLE_BIN="${DOUBLE_BIN:-$REPO/target/release/consul-double}"
    fi
    [ -x "$HOOK_BIN" ] || die "no hook binary at $HOOK_BIN"
    [ -x "$DOUBLE_BIN" ] || die "no consul-double binary at $DOUBLE_BIN"
}

# ---- configuration files --------------------------------------------------

patroni_yaml() {
    local n="$1" addr="${NODE_ADDR[$1]}" dir="$RUN/$1" hook
    hook="$RUN/bin/patroni-hook --config $dir/hook.yml"
    cat <<EOF
# Generated by scripts/lab.sh. Production-like except ttl/loop_wait/retry_timeout
# (shrunk so a failover takes ~20 s, not ~40 s) and everything living on one machine.
scope: $SCOPE
name: $n
restapi:
  listen: $addr:8008
  connect_address: $addr:8008
consul:
  host: $CONSUL_ADDR:8500
  register_service: true
bootstrap:
  dcs:
    ttl: $PATRONI_TTL
    loop_wait: $PATRONI_LOOP_WAIT
    retry_timeout: $PATRONI_RETRY_TIMEOUT
    maximum_lag_on_failover: 1048576
    # Synchronous replication: an acknowledged commit survives the loss of the
    # primary, and a primary cut off from its standby (Patroni killed, the
    # cluster moved on) cannot acknowledge writes; see the README notes.
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
  listen: 0.0.0.0:5432
  connect_address: $addr:5432
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
  callbacks:
    on_start: $hook
    on_stop: $hook
    on_role_change: $hook
    on_restart: $hook
    on_reload: $hook
EOF
}

hook_yaml() {
    local n="$1" with_vip="$2"
    cat <<EOF
name: $n
scope: $SCOPE
deadline: 5s
lock_file: $RUN/$n/lock/patroni-hook.lock
consul:
  url: http://$CONSUL_ADDR:8500
  timeout: 2s
EOF
    if [ "$with_vip" = yes ]; then
        cat <<EOF
vip:
  address: $VIP/24
  interface: eth1
  gratuitous_arp: 3
EOF
    fi
}

pgbouncer_files() {
    local d="$RUN/pgbouncer"
    mkdir -p "$d/lock"
    printf '"lab" ""\n"postgres" ""\n' >"$d/userlist.txt"
    cat >"$d/pgbouncer.ini" <<EOF
; Generated by scripts/lab.sh. patroni-hook manages host= and port= of appdb;
; the first value is only a start, the watch on the leader key fixes it.
[databases]
appdb = host=${NODE_ADDR[db1]} port=5432 dbname=postgres

[pgbouncer]
listen_addr = $PGB_ADDR
listen_port = 6432
unix_socket_dir =
auth_type = trust
auth_file = $d/userlist.txt
pool_mode = transaction
; PRODUCT.md: the default 15 turns a 3 s switchover into a 15 s stall.
server_login_retry = 1
; After a SIGKILL of Patroni alone, its PostgreSQL runs on as a primary whose
; synchronous standby has just been promoted elsewhere: a COMMIT there waits
; for that standby forever (statement_timeout ends before the commit's wait).
; The reload marks the server connection for closing, but only when it is
; released, which a stuck commit never does. query_timeout makes PgBouncer
; cancel it, so the client's next transaction goes to the new primary.
query_timeout = 3
max_client_conn = 200
default_pool_size = 20
logfile = $RUN/logs/pgbouncer.log
pidfile = $d/pgbouncer.pid
EOF
    cat >"$d/hook.yml" <<EOF
name: pgbouncer
scope: $SCOPE
deadline: 5s
lock_file: $d/lock/patroni-hook.lock
consul:
  url: http://$CONSUL_ADDR:8500
  timeout: 2s
pgbouncer:
  ini: $d/pgbouncer.ini
  pidfile: $d/pgbouncer.pid
  clusters:
    - scope: $SCOPE
      databases: [appdb]
EOF
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

start_patroni() {
    local n="$1"
    # setpriv execs (runuser forks and waits), so the pid recorded is Patroni's.
    # The hook inherits this environment from Patroni: logs to stderr, i.e. this log.
    ip netns exec "$(ns_of "$n")" setpriv --reuid=postgres --regid=postgres --init-groups -- \
        env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="$RUN/$n" USER=postgres LC_ALL=C.UTF-8 \
        PATRONI_HOOK_LOG_STDERR=1 "$PATRONI_VENV/bin/patroni" "$RUN/$n/patroni.yml" \
        >>"$RUN/logs/$n-patroni.log" 2>&1 </dev/null &
    echo $! >"$(pidfile "$n-patroni")"
    disown $!
}

start_safety_net() {
    local n="$1"
    ip netns exec "$(ns_of "$n")" setpriv --reuid=postgres --regid=postgres --init-groups -- \
        env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin PATRONI_HOOK_LOG_STDERR=1 \
        /bin/bash "$RUN/bin/safety-net.sh" "$RUN/bin/patroni-hook" "$RUN/$n/hook.yml" "$SAFETY_NET_INTERVAL" \
        >>"$RUN/logs/$n-safety-net.log" 2>&1 </dev/null &
    echo $! >"$(pidfile "$n-safety-net")"
    disown $!
}

start_vip_manager() {
    local n="$1"
    # vip-manager 1.x runs as root (it calls ip and arping); consul mode, default interval.
    spawn "$n-vip-manager" "$(ns_of "$n")" vip-manager --ip "$VIP" --netmask 24 --interface eth1 \
        --trigger-key "service/$SCOPE/leader" --trigger-value "$n" --dcs-type consul \
        --dcs-endpoints "http://$CONSUL_ADDR:8500" --interval 1000
}

postmaster_pid() {
    local f="$RUN/$1/data/postmaster.pid" pid
    [ -f "$f" ] || return 0
    pid="$(head -n1 "$f")"
    # Only a live postgres whose data directory is ours (pids are reused).
    if alive "$pid" && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q postgres; then
        echo "$pid"
    fi
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
    check_prereqs
    set_run "${LAB_RUN_ID:-$(new_run_id)}"
    [ ! -e "$RUN" ] || die "a lab with run id $RID exists ($RUN); run: LAB_RUN_ID=$RID scripts/lab.sh down"
    resolve_binaries
    MODE="${LAB_VIP_MANAGER:-hook}"
    [ "$MODE" = hook ] || [ "$MODE" = vip-manager ] || die "LAB_VIP_MANAGER must be hook or vip-manager"
    say "lab $RID in $RUN (VIP managed by $MODE)"
    mkdir -p "$RUN"/{bin,pids,logs,events}
    chmod 0755 "$LAB_ROOT" "$RUN" "$RUN/bin" "$RUN/logs"
    echo "$MODE" >"$RUN/mode"
    echo "$RID" >"$LAB_ROOT/current"
    # postgres must traverse to its files and run the hook: copies under the run dir.
    install -m 0755 "$HOOK_BIN" "$RUN/bin/patroni-hook"
    setcap cap_net_admin,cap_net_raw+ep "$RUN/bin/patroni-hook"
    install -m 0755 "$DOUBLE_BIN" "$RUN/bin/consul-double"
    install -m 0644 "$REPO/scripts/lab/labtool.py" "$RUN/bin/labtool.py"
    install -m 0755 "$REPO/scripts/lab/safety-net.sh" "$RUN/bin/safety-net.sh"
    chown postgres:postgres "$RUN/logs"

    say "network namespaces and the bridge"
    ip netns add "$NS_SW"
    ip -n "$NS_SW" link set lo up
    ip -n "$NS_SW" link add br0 type bridge
    ip -n "$NS_SW" link set br0 up
    local host ns addr
    for host in consul:$CONSUL_ADDR db1:${NODE_ADDR[db1]} db2:${NODE_ADDR[db2]} db3:${NODE_ADDR[db3]} \
        pgb:$PGB_ADDR client:$CLIENT_ADDR; do
        ns="$(ns_of "${host%%:*}")"
        addr="${host#*:}"
        ip netns add "$ns"
        ip -n "$ns" link set lo up
        # Created inside the switch namespace: the host never sees either end.
        ip -n "$NS_SW" link add "v-${host%%:*}" type veth peer name eth1 netns "$ns"
        ip -n "$NS_SW" link set "v-${host%%:*}" master br0 up
        ip -n "$ns" addr add "$addr/24" dev eth1
        ip -n "$ns" link set eth1 up
    done

    say "Consul double on $CONSUL_ADDR:8500 (watch on service/$SCOPE/leader runs PgBouncer's reconcile)"
    pgbouncer_files
    # The double runs in the Consul namespace, the watch handler must act in the
    # PgBouncer one: the handler is `ip netns exec <pgb-ns> setpriv ... patroni-hook reconcile`
    # (split on whitespace, no shell). Its log lines land in logs/consul.log.
    PATRONI_HOOK_LOG_STDERR=1 spawn consul "$NS_CONSUL" "$RUN/bin/consul-double" --listen "$CONSUL_ADDR:8500" \
        --watch "service/$SCOPE/leader=ip netns exec $NS_PGB setpriv --reuid=postgres --regid=postgres --init-groups $RUN/bin/patroni-hook --config $RUN/pgbouncer/hook.yml reconcile"
    local end=$((SECONDS + 20))
    until in_client curl -sf --max-time 1 "http://$CONSUL_ADDR:8500/v1/status/leader" >/dev/null; do
        [ "$SECONDS" -lt "$end" ] || die "timed out waiting for the Consul double on $CONSUL_ADDR:8500 (logs/consul.log)"
        sleep 0.05
    done

    # Fault injection for tests/e2e.rs: `down` must clean up after a partial `up`.
    [ "${LAB_FAIL_AFTER:-}" != consul ] || die "stopping after the Consul double (LAB_FAIL_AFTER=consul)"

    say "PgBouncer on $PGB_ADDR:6432"
    ip netns exec "$NS_PGB" setpriv --reuid=postgres --regid=postgres --init-groups -- \
        "$(command -v pgbouncer)" "$RUN/pgbouncer/pgbouncer.ini" >>"$RUN/logs/pgbouncer.out" 2>&1 </dev/null &
    echo $! >"$(pidfile pgbouncer)"
    disown $!
    ip netns exec "$NS_PGB" setpriv --reuid=postgres --regid=postgres --init-groups -- \
        env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin PATRONI_HOOK_LOG_STDERR=1 \
        /bin/bash "$RUN/bin/safety-net.sh" "$RUN/bin/patroni-hook" "$RUN/pgbouncer/hook.yml" "$PGB_SAFETY_NET_INTERVAL" \
        >>"$RUN/logs/pgbouncer-safety-net.log" 2>&1 </dev/null &
    echo $! >"$(pidfile pgbouncer-safety-net)"
    disown $!

    say "three Patroni nodes (${NODES[*]})"
    local n
    for n in "${NODES[@]}"; do
        mkdir -p "$RUN/$n/lock"
        patroni_yaml "$n" >"$RUN/$n/patroni.yml"
        if [ "$MODE" = hook ]; then hook_yaml "$n" yes; else hook_yaml "$n" no; fi >"$RUN/$n/hook.yml"
        chown -R postgres:postgres "$RUN/$n"
        chmod 0700 "$RUN/$n"
        chmod 0755 "$RUN/$n"
    done
    for n in "${NODES[@]}"; do start_patroni "$n"; done
    local lead
    lead="$(labtool wait-healthy "${API_ARGS[@]}" --sync --timeout 180)" ||
        die "the cluster did not come up; see $RUN/logs/db*-patroni.log"
    say "leader: $lead"

    # The client's role: statement_timeout bounds a commit that waits for a
    # synchronous standby that is gone (the PostgreSQL of a killed Patroni).
    in_client psql "host=${NODE_ADDR[$lead]} user=postgres dbname=postgres connect_timeout=2" -qAt -v ON_ERROR_STOP=1 <<'SQL' >/dev/null
CREATE ROLE lab LOGIN;
GRANT pg_read_all_settings TO lab;
ALTER ROLE lab SET statement_timeout = '2s';
CREATE TABLE lab_writes (event text, path text, seq bigint, client_ts double precision,
                         server_ts timestamptz DEFAULT clock_timestamp(), PRIMARY KEY (event, path, seq));
GRANT SELECT, INSERT ON lab_writes TO lab;
SQL

    for n in "${NODES[@]}"; do
        if [ "$MODE" = hook ]; then start_safety_net "$n"; else start_vip_manager "$n"; fi
    done
    wait_sql "writes through PgBouncer" "host=$PGB_ADDR port=6432 dbname=appdb user=lab" 60
    wait_sql "writes through the VIP" "host=$VIP port=5432 dbname=postgres user=lab" 60
    say "lab $RID is up: LAB_RUN_ID=$RID scripts/lab.sh status"
}

# ---- status ---------------------------------------------------------------

cmd_status() {
    need_root
    load_run
    echo "lab $RID in $RUN, VIP managed by $MODE"
    local name pid
    for f in "$RUN"/pids/*.pid; do
        [ -e "$f" ] || continue
        name="$(basename "$f" .pid)"
        pid="$(cat "$f")"
        if alive "$pid"; then echo "  $name: pid $pid running"; else echo "  $name: pid $pid gone"; fi
    done
    in_client env LC_ALL=C.UTF-8 "$PATRONI_VENV/bin/patronictl" -c "$RUN/db1/patroni.yml" list 2>&1 || true
    echo "leader key:        $(leader)"
    echo "vip-holder record: $(in_client curl -s --max-time 2 "http://$CONSUL_ADDR:8500/v1/kv/service/$SCOPE/vip-holder?raw" || true)"
    echo "VIP $VIP on:       $(labtool vip-holders "${DB_ARGS[@]}" --vip "$VIP")"
    echo "pgbouncer.ini:     $(grep '^appdb' "$RUN/pgbouncer/pgbouncer.ini")"
}

# ---- events ---------------------------------------------------------------

next_event_dir() {
    local n
    n=$(find "$RUN/events" -mindepth 1 -maxdepth 1 -type d | wc -l)
    printf '%s/events/%02d-%s' "$RUN" $((n + 1)) "$1"
}

# One event: sampler and load on; act; wait until the new primary serves both
# paths; bring the old node back; timeline. Exit status non-zero if any check fails.
cmd_event() {
    local kind="$1"
    need_root
    load_run
    local old ev t0 new pid t_end rc=0 load_rc=0
    old="$(leader)"
    if [ -z "$old" ] || [ -z "${NODE_ADDR[$old]:-}" ]; then
        die "no leader in service/$SCOPE/leader (got '$old')"
    fi
    ev="$(next_event_dir "$kind")"
    mkdir -p "$ev"
    # Started directly, not through the labtool function: a function run with
    # `&` is a subshell, and $! would be that shell, not the Python process.
    ip netns exec "$NS_CLIENT" "$PY" "$RUN/bin/labtool.py" sample --out "$ev/sampler.log" "${DB_ARGS[@]}" \
        --consul-ns "$NS_CONSUL" --consul "$CONSUL_ADDR:8500" --key "service/$SCOPE/leader" --vip "$VIP" \
        --interval 0.02 >>"$ev/sampler.err" 2>&1 </dev/null &
    echo $! >"$(pidfile ev-sampler)"
    local targets=(--target "pgbouncer=host=$PGB_ADDR port=6432 dbname=appdb user=lab"
        --target "vip=host=$VIP port=5432 dbname=postgres user=lab")
    local n
    for n in "${NODES[@]}"; do
        targets+=(--target "direct-$n=host=${NODE_ADDR[$n]} port=5432 dbname=postgres user=lab"
            --direct-check "$n=host=${NODE_ADDR[$n]} port=5432 dbname=postgres user=lab")
    done
    # Bounded: the load stops by itself after 240 s even if nobody stops it.
    ip netns exec "$NS_CLIENT" "$PY" "$RUN/bin/labtool.py" load --out "$ev/load.log" \
        --result "$ev/load-result.json" --event "$(basename "$ev")-$RID" \
        --duration 240 --interval 0.02 "${targets[@]}" >>"$ev/load.err" 2>&1 </dev/null &
    echo $! >"$(pidfile ev-load)"
    labtool wait-writes --log "$ev/load.log" --paths pgbouncer vip direct --node "$old" --timeout 30

    say "$kind: primary is $old"
    t0="$(now)"
    case "$kind" in
    switchover)
        in_client env LC_ALL=C.UTF-8 "$PATRONI_VENV/bin/patronictl" -c "$RUN/$old/patroni.yml" \
            switchover --leader "$old" --force "$SCOPE" >"$ev/patronictl.out" 2>&1 ||
            { cat "$ev/patronictl.out" >&2; die "patronictl switchover failed"; }
        ;;
    failover)
        # The primary's Patroni and PostgreSQL die at once, as if the machine froze.
        pid="$(postmaster_pid "$old")"
        kill -KILL "$(pid_of "$old-patroni")"
        [ -z "$pid" ] || kill -KILL "$pid"
        ;;
    kill-patroni)
        kill -KILL "$(pid_of "$old-patroni")"
        ;;
    stop-primary)
        kill -TERM "$(pid_of "$old-patroni")"
        ;;
    *) die "unknown event $kind" ;;
    esac
    local holder=()
    [ "$MODE" = hook ] && holder=(--holder "service/$SCOPE/vip-holder")
    new="$(labtool wait-converged --old "$old" "${DB_ARGS[@]}" "${ADDR_ARGS[@]}" --client-ns "$NS_CLIENT" \
        --consul "$CONSUL_ADDR:8500" --key "service/$SCOPE/leader" --vip "$VIP" \
        --ini "$RUN/pgbouncer/pgbouncer.ini" --log "$ev/load.log" --since "$t0" "${holder[@]}" --timeout 120)" || rc=1
    if [ "$kind" != switchover ]; then
        # Bring the old node back, as an operator would; Patroni rejoins it
        # (pg_rewind where its timeline diverged).
        pid="$(pid_of "$old-patroni")"
        wait_gone "$pid" 60 || die "Patroni of $old (pid $pid) did not stop"
        if [ "$kind" = failover ]; then
            # Backends of the killed postmaster exit by themselves; wait for them.
            local end=$((SECONDS + 30))
            while [ -n "$(postmaster_pid "$old")" ]; do
                [ "$SECONDS" -lt "$end" ] || break
                sleep 0.1
            done
        fi
        start_patroni "$old"
    fi
    labtool wait-healthy "${API_ARGS[@]}" --sync --timeout 180 >/dev/null || rc=1
    t_end="$(now)"
    stop_named ev-load TERM 60
    stop_named ev-sampler TERM 10
    load_rc=0
    python3 - "$ev/load-result.json" <<'PY' || load_rc=$?
import json, sys
r = json.load(open(sys.argv[1]))
sys.exit(0 if r.get("checked_on") and not r.get("missing") else 3)
PY
    local nodes_json
    nodes_json="$(printf '"%s",' "${NODES[@]}")"
    cat >"$ev/event.json" <<EOF
{"kind": "$kind", "mode": "$MODE", "old": "$old", "new": "${new:-}", "t0": $t0, "t_end": $t_end,
 "nodes": [${nodes_json%,}], "run": "$RUN", "converged": $([ "$rc" = 0 ] && echo true || echo false)}
EOF
    labtool analyze "$ev"
    [ "$load_rc" = 0 ] || { echo "acknowledged rows missing or not checked: $ev/load-result.json" >&2; rc=1; }
    return "$rc"
}

# ---- VIP manager switch (bench) -------------------------------------------

# Same cluster, VIP moved by vip-manager instead of the hook: the hook stays
# registered but its configuration has no vip section (it only logs the
# callback), its reconcile timer stops, and vip-manager runs on every node.
cmd_use_vip_manager() {
    need_root
    load_run
    local n
    for n in "${NODES[@]}"; do
        stop_named "$n-safety-net" TERM 10
        hook_yaml "$n" no >"$RUN/$n/hook.yml.new"
        chown postgres:postgres "$RUN/$n/hook.yml.new"
        mv "$RUN/$n/hook.yml.new" "$RUN/$n/hook.yml"
    done
    for n in "${NODES[@]}"; do start_vip_manager "$n"; done
    echo vip-manager >"$RUN/mode"
    say "VIP now managed by vip-manager (consul mode, interval 1000 ms)"
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
    local n pid problems=0
    # Measuring helpers, timers and vip-managers first, so nothing reacts to the shutdown.
    for n in ev-load ev-sampler pgbouncer-safety-net "${NODES[@]/%/-safety-net}" "${NODES[@]/%/-vip-manager}"; do
        stop_named "$n" TERM 10
    done
    # Patroni stops its PostgreSQL on SIGTERM; in parallel, bounded.
    for n in "${NODES[@]}"; do
        pid="$(pid_of "$n-patroni" 2>/dev/null || true)"
        alive "$pid" && kill -TERM "$pid"
    done
    for n in "${NODES[@]}"; do
        stop_named "$n-patroni" TERM 30
        pid="$(postmaster_pid "$n" || true)"
        if alive "$pid"; then
            kill -INT "$pid" 2>/dev/null || true # fast shutdown
            wait_gone "$pid" 15 || { kill -KILL "$pid" 2>/dev/null || true; }
        fi
    done
    stop_named pgbouncer TERM 10
    stop_named consul TERM 10
    # Anything still running inside the lab's namespaces was started by the lab
    # (a backend, a callback, a sleep of a timer): by pid, then the namespaces.
    for ns in "$(ns_of client)" "$NS_PGB" "$(ns_of db1)" "$(ns_of db2)" "$(ns_of db3)" "$NS_CONSUL" "$NS_SW"; do
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

# ---- demo and bench -------------------------------------------------------

cmd_demo() {
    need_root
    install_prereqs
    export LAB_RUN_ID="${LAB_RUN_ID:-$(new_run_id)}"
    local started=$SECONDS
    trap 'cmd_down' EXIT
    cmd_up
    cmd_status
    cmd_event switchover
    cmd_event failover
    cmd_event kill-patroni
    say "summary"
    labtool table --out "$RUN/demo.md" "$RUN"/events/*/result.json
    say "demo finished in $((SECONDS - started)) s; taking the lab down"
}

# Whether this vip-manager can watch Consul at all: builds without Consul
# support refuse --dcs-type consul at start-up, before touching any address.
vip_manager_has_consul() {
    local out
    # In a fresh, empty network namespace (unshare -n): a build with Consul
    # support would act on that namespace's lo, never on the host's.
    out="$(unshare --net timeout 5 vip-manager --ip 198.51.100.100 --netmask 24 --interface lo --trigger-key probe \
        --trigger-value probe --dcs-type consul --dcs-endpoints http://127.0.0.1:9 --interval 1000 2>&1 || true)"
    ! grep -q "given endpoint type not supported" <<<"$out"
}

cmd_bench() {
    need_root
    NEED_VIP_MANAGER=1 check_prereqs
    export LAB_RUN_ID="${LAB_RUN_ID:-$(new_run_id)}"
    local out="${LAB_BENCH_OUT:-$REPO/target/lab-bench.md}" i
    trap 'cmd_down' EXIT
    cmd_up
    local rounds=(hook) skipped=""
    if vip_manager_has_consul; then
        rounds+=(vip-manager)
    else
        skipped="vip-manager: not run. $(command -v vip-manager) has no Consul support (it answers
\"given endpoint type not supported\" to --dcs-type consul; Debian bookworm's 1.0.2 is built without
it, see its changelog, 1.0.2-3), so it cannot be compared against the Consul double here."
        echo "$skipped" >&2
    fi
    for round in "${rounds[@]}"; do
        [ "$round" = hook ] || cmd_use_vip_manager
        for ((i = 0; i < ${LAB_BENCH_SWITCHOVERS:-5}; i++)); do cmd_event switchover; done
        for ((i = 0; i < ${LAB_BENCH_FAILOVERS:-1}; i++)); do cmd_event failover; done
        for ((i = 0; i < ${LAB_BENCH_KILLS:-1}; i++)); do cmd_event kill-patroni; done
    done
    mkdir -p "$(dirname "$out")"
    labtool table --out "$RUN/bench.md" "$RUN"/events/*/result.json
    [ -z "$skipped" ] || printf '\n%s\n' "$skipped" | tee -a "$RUN/bench.md"
    cp "$RUN/bench.md" "$out"
    say "bench table written to $out"
}

usage() {
    sed -n '2,/^set -euo pipefail/{/^#/s/^# \{0,1\}//p}' "$0"
    exit 2
}

main() {
    [ $# -ge 1 ] || usage
    case "$1" in -h | --help | help) usage ;; esac
    as_root "$0" "$@"
    local cmd="$1"
    shift
    case "$cmd" in
    up)
        # A failed `up` takes its partial lab down (LAB.md: clean up on
        # failure), except when a test stops it on purpose to exercise `down`.
        if [ -z "${LAB_FAIL_AFTER:-}" ]; then
            trap 'rc=$?; if [ "$rc" -ne 0 ]; then say "up failed; taking the partial lab down"; cmd_down || true; fi' EXIT
        fi
        cmd_up
        trap - EXIT
        ;;
    status) cmd_status ;;
    switchover | failover | kill-patroni | stop-primary) cmd_event "$cmd" ;;
    use-vip-manager) cmd_use_vip_manager ;;
    down) cmd_down ;;
    demo) cmd_demo ;;
    bench) cmd_bench ;;
    -h | --help | help) usage ;;
    *) usage ;;
    esac
}

main "$@"
