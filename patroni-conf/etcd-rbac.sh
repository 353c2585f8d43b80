#!/bin/sh
# etcd-rbac.sh: the etcd users and roles of one Patroni cluster (scope), each
# limited to its keys, then `etcdctl auth enable`. Run it once per scope, on
# any host that reaches etcd, with etcdctl (Debian: etcd-client) and the
# ETCDCTL_* environment of etcd's root user. Running it again changes
# nothing that is already there, so a second scope or a new PgBouncer host is
# one more run.
#
#   etcd-rbac.sh [-n NAMESPACE] SCOPE PGBOUNCER_HOST...
#   etcd-rbac.sh [--namespace NAMESPACE] --scope SCOPE --pgbouncer HOST...
#
#   NAMESPACE       Patroni's etcd3 namespace (default $PATRONI_NAMESPACE,
#                   then /service); a trailing slash is dropped
#   SCOPE           Patroni's scope
#   PGBOUNCER_HOST  the `name` of each PgBouncer host (patroni-hook's `name`,
#                   default its host name); --pgbouncer once per host
#
# For example, with root's client certificate (CN=root), before and after
# auth is enabled alike:
#   export ETCDCTL_API=3 ETCDCTL_ENDPOINTS=https://198.51.100.11:2379 \
#       ETCDCTL_CACERT=/etc/etcd/ca.pem ETCDCTL_CERT=/etc/etcd/root.pem \
#       ETCDCTL_KEY=/etc/etcd/root-key.pem
#   sh etcd-rbac.sh postgres pgbouncer
# or with a root password instead: ETCDCTL_USER=root and ETCDCTL_PASSWORD.
#
# What it makes (src/dcs names the hook's keys; NS/SCOPE/ below stands for
# NAMESPACE/SCOPE/, for example /service/postgres/). Each user is named after
# its role and authenticates by the CN of its client certificate (etcd
# started with --client-cert-auth, etcd-server.conf.example), so it has no
# password (`user add --no-password`); give one later with
# `etcdctl user passwd NAME` if a host must use username and password_file.
#   root                    root: the one user etcd requires before auth
#                           enable. With ETCDCTL_PASSWORD set it gets that
#                           password, else none (CN=root certificate).
#   patroni                 role patroni: readwrite prefix NS/SCOPE/, every key
#                           Patroni's etcd3 backend reads and writes (leader,
#                           members/, config, failover, sync, status, history,
#                           initialize, failsafe). Its leases need no grant.
#   patroni-hook-db         role patroni-hook-db: read prefix NS/SCOPE/;
#                           readwrite NS/SCOPE/vip-holder (the VIP's holder,
#                           check-and-set) and NS/SCOPE/pause-request
#                           (before-stop asks the PgBouncer hosts to pause).
#   patroni-hook-pgbouncer-HOST, one per PgBouncer host:
#                           role patroni-hook-pgbouncer: read prefix
#                           NS/SCOPE/; readwrite NS/SCOPE/pause-request (it
#                           deletes one that outlived its pause);
#                           role patroni-hook-pgbouncer-HOST: readwrite
#                           NS/SCOPE/pause-ack/HOST, its own confirmation only.
# Nothing else: the hooks never write Patroni's keys, and no role reaches
# outside NS/SCOPE/. The roles gather the grants of every scope the script
# ran for: a cluster's certificates then reach the other clusters' keys on
# the same etcd; give each cluster its own etcd where that matters.
set -eu

usage() {
    echo "usage: $0 [-n NAMESPACE] SCOPE PGBOUNCER_HOST..." >&2
    echo "       $0 [--namespace NAMESPACE] --scope SCOPE --pgbouncer HOST..." >&2
    exit 2
}

ns="${PATRONI_NAMESPACE:-/service}"
scope=""
hosts=""
while [ $# -gt 0 ]; do
    case "$1" in
        -n | --namespace) [ $# -ge 2 ] || usage; ns="$2"; shift 2 ;;
        --scope) [ $# -ge 2 ] || usage; scope="$2"; shift 2 ;;
        --pgbouncer)
            [ $# -ge 2 ] || usage
            case "$2" in
                *[[:space:]]*) echo "error: PgBouncer host '$2': must be a name without blanks" >&2; exit 2 ;;
            esac
            hosts="$hosts $2"
            shift 2
            ;;
        --) shift; break ;;
        -*) usage ;;
        *) break ;;
    esac
done
if [ -z "$scope" ]; then
    [ $# -ge 1 ] || usage
    scope="$1"
    shift
fi
# Host names hold no blanks (checked below), so a word list is safe.
# shellcheck disable=SC2086
set -- $hosts "$@"
[ $# -ge 1 ] || usage
ns="${ns%/}"
case "$ns" in
    /*) ;;
    *) echo "error: namespace $ns: must start with /" >&2; exit 2 ;;
esac
case "$scope" in
    "" | */* | *[[:space:]]*) echo "error: scope '$scope': must be a name without /" >&2; exit 2 ;;
esac
for host in "$@"; do
    case "$host" in
        "" | */* | *[[:space:]]*) echo "error: PgBouncer host '$host': must be a name without /" >&2; exit 2 ;;
    esac
done
prefix="$ns/$scope/"
export ETCDCTL_API=3

# ctl ARGS...: etcdctl ARGS, quiet unless it fails. Before `auth enable`
# etcdctl given a user logs a warning per call ("authentication is not
# enabled") and goes on: only a failure's output is worth showing.
ctl() {
    if ! out="$(etcdctl "$@" 2>&1)"; then
        printf '%s\n' "$out" >&2
        echo "error: etcdctl $1 $2 ${3:-}: failed" >&2
        exit 1
    fi
}

# user NAME: adds NAME without a password unless it exists.
user() {
    if etcdctl user get "$1" >/dev/null 2>&1; then
        echo "user $1: exists"
    else
        ctl user add "$1" --no-password
        echo "user $1: added"
    fi
}

# role NAME: adds NAME unless it exists.
role() {
    if ! etcdctl role get "$1" >/dev/null 2>&1; then
        ctl role add "$1"
        echo "role $1: added"
    fi
}

# grant ROLE read|readwrite KEY [--prefix]: granting what a role already
# has replaces it with the same, so a second run is harmless.
grant() {
    ctl role grant-permission "$@"
    echo "role $1: $2 $3${4:+ (prefix)}"
}

# Root first: `auth enable` refuses without a root user holding role root.
if ! etcdctl user get root >/dev/null 2>&1; then
    if [ -n "${ETCDCTL_PASSWORD:-}" ]; then
        # On stdin, not on the command line (ps shows arguments).
        printf '%s\n' "$ETCDCTL_PASSWORD" | ctl user add root --interactive=false
    else
        ctl user add root --no-password
    fi
    echo "user root: added"
fi
ctl user grant-role root root

role patroni
grant patroni readwrite "$prefix" --prefix
user patroni
ctl user grant-role patroni patroni

role patroni-hook-db
grant patroni-hook-db read "$prefix" --prefix
grant patroni-hook-db readwrite "${prefix}vip-holder"
grant patroni-hook-db readwrite "${prefix}pause-request"
user patroni-hook-db
ctl user grant-role patroni-hook-db patroni-hook-db

role patroni-hook-pgbouncer
grant patroni-hook-pgbouncer read "$prefix" --prefix
grant patroni-hook-pgbouncer readwrite "${prefix}pause-request"
for host in "$@"; do
    name="patroni-hook-pgbouncer-$host"
    role "$name"
    grant "$name" readwrite "${prefix}pause-ack/$host"
    user "$name"
    ctl user grant-role "$name" patroni-hook-pgbouncer
    ctl user grant-role "$name" "$name"
done

ctl auth enable
echo "auth: enabled"
