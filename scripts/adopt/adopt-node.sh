#!/usr/bin/env bash
# Brings one database node of an existing PostgreSQL 15 setup under Patroni,
# in place: the data directory Patroni runs is the one PostgreSQL runs now (no
# dump, no restore, no re-clone), and the floating IP already on the primary
# is taken over by patroni-hook where it is. One step of the runbooks in
# docs/operations.md ("Adopting an existing PostgreSQL"); the lab's adopt
# scenarios run this very script on their nodes (scripts/lab/labkit/adopt.py).
#
#   adopt-node.sh --role primary|replica|new [options]
#
#   primary  the running primary: checks it, creates the replication role when
#            missing, stops the old VIP glue (the VIP must stay), starts
#            Patroni, waits until Patroni leads on the same system identifier,
#            installs the hook's watch and timer, waits until the hook holds
#            the VIP. (Patroni runs on_start on a running primary before it
#            takes the leader key: the hook, fenced, leaves the VIP where it
#            is, and the watch on the leader key takes it over.)
#   replica  a running streaming replica of that primary (after the primary):
#            checks it, stops the old glue, starts Patroni, waits until it
#            streams again on the same system identifier, installs the rest.
#   new      a node with an empty data directory: starts Patroni, which clones
#            it from the leader, waits until it streams, installs the rest.
#
# Run it as root on the node, with Patroni's and the hook's configuration in
# place (the data_dir in patroni.yml is --pgdata). Options, with the defaults
# of the layout in patroni-conf/:
#   --pgdata DIR            data directory (/var/lib/postgresql/15/patroni)
#   --pg-socket DIR         where psql reaches the local PostgreSQL (/var/run/postgresql)
#   --pg-port PORT          (5432)
#   --pg-user USER          the user PostgreSQL and Patroni run as (postgres)
#   --api URL               this node's Patroni REST API (http://127.0.0.1:8008)
#   --replication-user NAME patroni.yml's authentication.replication.username (replicator)
#   --replication-password-file FILE  its password, when the role is created here
#   --hook BIN              (patroni-hook on PATH)
#   --hook-config FILE      (/etc/patroni-hook/config.yml)
#   --stop-glue CMD         stops the old VIP glue (default: none), e.g.
#                           'systemctl disable --now consul-template-vip'
#   --start-patroni CMD     ('systemctl enable --now patroni')
#   --start-reconcile CMD   ('systemctl enable --now patroni-hook-reconcile.timer';
#                           install the Consul watch and `consul reload` before)
#   --timeout SECONDS       the longest each wait lasts (180)
set -euo pipefail

role="" pgdata=/var/lib/postgresql/15/patroni sock=/var/run/postgresql port=5432 pg_user=postgres
api=http://127.0.0.1:8008 repl_user=replicator repl_password_file="" hook=patroni-hook
hook_config=/etc/patroni-hook/config.yml stop_glue="" start_patroni="systemctl enable --now patroni"
start_reconcile="systemctl enable --now patroni-hook-reconcile.timer" timeout=180

say() { printf 'adopt-node: %s\n' "$*"; }
die() { printf 'adopt-node: error: %s\n' "$*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    [ $# -ge 2 ] || die "option $1 needs a value"
    case "$1" in
    --role) role="$2" ;;
    --pgdata) pgdata="$2" ;;
    --pg-socket) sock="$2" ;;
    --pg-port) port="$2" ;;
    --pg-user) pg_user="$2" ;;
    --api) api="${2%/}" ;;
    --replication-user) repl_user="$2" ;;
    --replication-password-file) repl_password_file="$2" ;;
    --hook) hook="$2" ;;
    --hook-config) hook_config="$2" ;;
    --stop-glue) stop_glue="$2" ;;
    --start-patroni) start_patroni="$2" ;;
    --start-reconcile) start_reconcile="$2" ;;
    --timeout) timeout="$2" ;;
    *) die "unknown option $1 (see the comment at the top of $0)" ;;
    esac
    shift 2
done
case "$role" in primary | replica | new) ;; *) die "--role must be primary, replica or new, not '$role'" ;; esac
[[ "$timeout" =~ ^[1-9][0-9]*$ ]] || die "--timeout must be whole seconds, not '$timeout'"
[[ "$repl_user" =~ ^[a-z_][a-z0-9_]*$ ]] || die "--replication-user '$repl_user' is not a plain role name"
[ "$(id -u)" -eq 0 ] || die "run as root: it runs psql and the hook as $pg_user and starts services"
command -v curl >/dev/null 2>&1 || die "curl is not installed"
command -v python3 >/dev/null 2>&1 || die "python3 is not installed (it reads Patroni's JSON)"

# psql as the PostgreSQL user on the local socket; one value per line.
q() { runuser -u "$pg_user" -- psql -X -At -v ON_ERROR_STOP=1 -h "$sock" -p "$port" -d postgres -c "$1"; }
# The hook as the PostgreSQL user (the user Patroni runs it as).
hook_status() { runuser -u "$pg_user" -- "$hook" --config "$hook_config" status --json 2>/dev/null || true; }
# Reads a dotted path out of a JSON document on stdin ('' when absent).
json() {
    python3 -c 'import json,sys
v = json.load(sys.stdin)
for k in sys.argv[1].split("."):
    v = v.get(k) if isinstance(v, dict) else None
print("" if v is None else str(v).lower() if isinstance(v, bool) else v)' "$1" 2>/dev/null || true
}
# Polls "$@" until it succeeds, at most $timeout seconds; dies naming $1.
wait_until() {
    local what="$1" end=$((SECONDS + timeout))
    shift
    until "$@"; do
        [ "$SECONDS" -lt "$end" ] || die "timed out after ${timeout}s waiting for $what"
        sleep 0.5
    done
}
run() {
    say "running: $1"
    bash -c "$1" || die "'$1' failed"
}
inode() { stat -c %i "$pgdata/PG_VERSION" 2>/dev/null || true; }

# ---- 1. what runs now ------------------------------------------------------
sysid="" kept=""
if [ "$role" = new ]; then
    if [ -d "$pgdata" ] && [ -n "$(ls -A "$pgdata")" ]; then
        die "--role new, but $pgdata is not empty (Patroni would not clone into it)"
    fi
    say "new node: $pgdata is empty; Patroni will clone it from the leader"
else
    [ -f "$pgdata/PG_VERSION" ] || die "$pgdata has no PG_VERSION: not the data directory of a PostgreSQL cluster"
    recovery="$(q 'select pg_is_in_recovery()')" ||
        die "no PostgreSQL answers psql on $sock port $port as $pg_user"
    sysid="$(q 'select system_identifier from pg_control_system()')"
    kept="$(inode)"
    if [ "$role" = primary ]; then
        [ "$recovery" = f ] || die "--role primary, but the PostgreSQL on $sock:$port is in recovery (a replica)"
    else
        [ "$recovery" = t ] || die "--role replica, but the PostgreSQL on $sock:$port is a primary"
        receiver="$(q 'select status from pg_stat_wal_receiver')"
        [ "$receiver" = streaming ] || die "--role replica, but its WAL receiver is '${receiver:-absent}', not streaming"
    fi
    say "$role running on $pgdata, system identifier $sysid"
    # What Patroni needs from the running server; it changes none of these
    # without a restart, which adopting does not do.
    while IFS='|' read -r name setting; do
        case "$name" in
        wal_level) [ "$setting" != minimal ] || die "wal_level is minimal: replicas need replica (a restart)" ;;
        max_wal_senders) [ "$setting" -ge 3 ] || die "max_wal_senders is $setting: two replicas and a rewind need 3 or more (a restart)" ;;
        hot_standby) [ "$setting" = on ] || say "warning: hot_standby is off: the replicas will not serve reads" ;;
        wal_log_hints | data_checksums) if [ "$setting" = on ]; then rewind_ok=1; fi ;;
        esac
    done < <(q "select name, setting from pg_settings where name in ('wal_level','max_wal_senders','hot_standby','wal_log_hints','data_checksums')")
    [ "${rewind_ok:-0}" = 1 ] || say "warning: neither wal_log_hints nor data checksums: pg_rewind cannot run until a restart with wal_log_hints = on (Patroni sets it; patronictl list shows the pending restart)"
fi

# ---- 2. the replication role (primary) -------------------------------------
if [ "$role" = primary ]; then
    has="$(q "select rolreplication from pg_roles where rolname = '$repl_user'")"
    case "$has" in
    t) say "replication role $repl_user exists" ;;
    f) die "role $repl_user exists without REPLICATION: ALTER ROLE $repl_user REPLICATION, then run this again" ;;
    *)
        if [ -n "$repl_password_file" ]; then
            [ -r "$repl_password_file" ] || die "cannot read --replication-password-file $repl_password_file"
            # psql interpolates :'pw' (quoted as a literal) in what it reads,
            # not in -c; the file is read here, as root.
            printf "create role %s with replication login password :'pw';\n" "$repl_user" |
                runuser -u "$pg_user" -- psql -X -q -v ON_ERROR_STOP=1 -h "$sock" -p "$port" -d postgres \
                    -v "pw=$(head -n1 "$repl_password_file")" -f - >/dev/null ||
                die "creating the replication role $repl_user failed"
        else
            q "create role $repl_user with replication login" >/dev/null
        fi
        say "created the replication role $repl_user${repl_password_file:+ with the password in $repl_password_file}"
        ;;
    esac
fi

# ---- 3. the old glue stops; the VIP stays where it is ----------------------
[ -z "$stop_glue" ] || run "$stop_glue"
status="$(hook_status)"
vip="$(json vip.address <<<"$status")"
if [ -n "$vip" ]; then
    present="$(json vip.present <<<"$status")"
    if [ "$role" = primary ]; then
        [ "$present" = true ] || die "the VIP $vip is not on $(json vip.interface <<<"$status") of this primary (did stopping the old glue remove it?); add it back (ip addr add $vip dev $(json vip.interface <<<"$status")) before Patroni starts"
        say "the VIP $vip is on this primary; the hook takes it over there"
    elif [ "$present" = true ]; then
        die "the VIP $vip is on this $role: remove it (ip addr del $vip dev $(json vip.interface <<<"$status")) first"
    fi
fi

# ---- 4. Patroni --------------------------------------------------------------
run "$start_patroni"
patroni_json() { curl -s --max-time 2 "$api/patroni" || true; }
leads() {
    local j
    j="$(patroni_json)"
    [ "$(json role <<<"$j")" = primary ] && [ "$(json state <<<"$j")" = running ]
}
streams() {
    local j
    j="$(patroni_json)"
    [ "$(json role <<<"$j")" = replica ] &&
        { [ "$(json state <<<"$j")" = streaming ] || [ "$(json replication_state <<<"$j")" = streaming ]; }
}
if [ "$role" = primary ]; then
    wait_until "Patroni ($api) to lead, running" leads
else
    wait_until "Patroni ($api) to run as a streaming replica" streams
fi
info="$(patroni_json)"
name="$(json patroni.name <<<"$info")"
now_sysid="$(json database_system_identifier <<<"$info")"
if [ -n "$sysid" ]; then
    [ "$now_sysid" = "$sysid" ] || die "Patroni runs system identifier $now_sysid, not $sysid"
    [ "$(inode)" = "$kept" ] || die "$pgdata was replaced (PG_VERSION is a new file): Patroni re-created the data directory"
fi
say "Patroni runs $name as ${role/new/replica} on system identifier $now_sysid (timeline $(json timeline <<<"$info"))"

# ---- 5. the hook's watch and timer -------------------------------------------
[ -z "$start_reconcile" ] || run "$start_reconcile"

# ---- 6. the hook holds the VIP (primary) -------------------------------------
if [ "$role" = primary ] && [ -n "$vip" ]; then
    held() {
        local s
        s="$(hook_status)"
        [ "$(json vip.present <<<"$s")" = true ] && [ "$(json vip_holder.member <<<"$s")" = "$name" ]
    }
    wait_until "the hook to record $name as the holder of $vip" held
    say "the hook holds $vip on $name (it was never removed)"
fi

if [ -n "$sysid" ]; then
    say "adopted $name as $role in place: same system identifier $sysid, same data directory"
else
    say "added $name as a replica of system identifier $now_sysid"
fi
