#!/usr/bin/env bash
# Measures what PgBouncer's server_login_retry costs a client across a primary
# switch (docs/operations.md quotes its output). Two PostgreSQL 15 instances A
# and B and one PgBouncer on loopback, as the postgres user; A stops; 0.5 s
# later pgbouncer.ini points at B and PgBouncer gets SIGHUP (what
# `patroni-hook reconcile` does); a client runs SELECT 1 every 50 ms; prints
# the time from A's stop to the first answer, for each value given.
#
# Usage: sudo scripts/measure-login-retry.sh [RETRY...]   (default: 1 15)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/prereqs.sh
. scripts/prereqs.sh
need_root

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

cleanup() {
    local f
    for f in "$1"/a/postmaster.pid "$1"/b/postmaster.pid "$1"/pgb.pid; do
        if [ -s "$f" ]; then kill -9 "$(head -1 "$f")" 2>/dev/null || true; fi
    done
    rm -rf "$1"
}

measure() {
    local retry="$1" d pa pb pp t0 t1 fails=0
    d=$(mktemp -d /tmp/login-retry.XXXXXX)
    chmod 755 "$d"; chown postgres "$d"
    # Cleanup by pid whatever happens: both postmasters and PgBouncer.
    trap 'cleanup "$d"' RETURN
    pa=$((20000 + RANDOM % 10000)); pb=$((pa + 1)); pp=$((pa + 2))
    for n in a b; do
        runuser -u postgres -- "$PG_BIN/initdb" -D "$d/$n" --auth=trust -U postgres >/dev/null
    done
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$d/a" -o "-p $pa -k $d -c listen_addresses=127.0.0.1" -l "$d/a.log" -w start >/dev/null
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$d/b" -o "-p $pb -k $d -c listen_addresses=127.0.0.1" -l "$d/b.log" -w start >/dev/null
    echo '"postgres" ""' > "$d/users"; chown postgres "$d/users"
    cat > "$d/pgb.ini" <<INI
[databases]
appdb = host=127.0.0.1 port=$pa dbname=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $pp
unix_socket_dir =
auth_type = trust
auth_file = $d/users
pool_mode = transaction
server_login_retry = $retry
logfile = $d/pgb.log
pidfile = $d/pgb.pid
INI
    chown postgres "$d/pgb.ini"
    runuser -u postgres -- pgbouncer -d "$d/pgb.ini"
    q() { psql -h 127.0.0.1 -p "$pp" -U postgres -d appdb -Atqc 'select 1' >/dev/null 2>&1; }
    local i
    for i in $(seq 100); do q && break; [ "$i" = 100 ] && { echo "PgBouncer did not answer" >&2; return 1; }; sleep 0.05; done
    t0=$(now_ms)
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$d/a" -m fast -w stop >/dev/null
    ( sleep 0.5; sed -i "s/port=$pa/port=$pb/" "$d/pgb.ini"; kill -HUP "$(cat "$d/pgb.pid")" ) &
    while ! q; do
        fails=$((fails + 1))
        if [ $(( $(now_ms) - t0 )) -gt 40000 ]; then echo "no answer within 40 s" >&2; break; fi
        sleep 0.05
    done
    t1=$(now_ms)
    wait
    printf 'server_login_retry=%s  first answer after %d.%02d s  (%d failed attempts)\n' \
        "$retry" $(( (t1 - t0) / 1000 )) $(( (t1 - t0) % 1000 / 10 )) "$fails"
}

for r in "${@:-1 15}"; do
    # shellcheck disable=SC2086
    for v in $r; do measure "$v"; done
done
