#!/bin/sh
# etcd-rbac.sh: the etcd users and roles of one Patroni cluster (scope), each
# limited to its keys, then `etcdctl auth enable`. Run it once per scope, on
# any host that reaches etcd, with etcdctl (Debian: etcd-client) and the
# ETCDCTL_* environment of etcd's root user. Running it again changes
# nothing that is already there, so a second scope or a new PgBouncer host is
# one more run.
#
#   etcd-rbac.sh [-n NAMESPACE] [-p DIR] SCOPE PGBOUNCER_HOST...
#   etcd-rbac.sh [--namespace NAMESPACE] [--passwords DIR] --scope SCOPE --pgbouncer HOST...
#
#   NAMESPACE       Patroni's etcd3 namespace (default $PATRONI_NAMESPACE,
#                   then /service); a trailing slash is dropped
#   DIR             where each new user's password is kept, DIR/<user>: read
#                   if there, else made (random) and written there, mode 0600
#   SCOPE           Patroni's scope
#   PGBOUNCER_HOST  the `name` of each PgBouncer host (patroni-hook's `name`,
#                   default its host name); --pgbouncer once per host
#
# For example, with root's client certificate (CN=root), before and after
# auth is enabled alike:
#   export ETCDCTL_API=3 ETCDCTL_ENDPOINTS=https://198.51.100.21:2379 \
#       ETCDCTL_CACERT=/etc/etcd/tls/ca.pem ETCDCTL_CERT=/etc/etcd/tls/root.pem \
#       ETCDCTL_KEY=/etc/etcd/tls/root-key.pem
#   sh etcd-rbac.sh -p /root/etcd-passwords postgres pgbouncer
# or with a root password instead: ETCDCTL_USER=root and ETCDCTL_PASSWORD.
#
# Why passwords, with client certificates: Patroni's etcd3 backend and
# patroni-hook speak etcd's v3 JSON gateway, and etcd (3.4 and later)
# answers 400 "CommonName of client sending a request against gateway will be
# ignored" to every gateway request whose client certificate has a CN, when
# it runs with --client-cert-auth (etcd pull request 10366, CVE-2018-16886).
# So their certificates carry no CN (they only open the TLS connection), and
# each authenticates as its user with a password (etcd3.username,
# etcd3.password_file). etcdctl speaks gRPC, where a certificate's CN is its
# user: root needs no password. A user added without -p gets none either,
# and can be used by etcdctl alone.
#
# What it makes (NS/SCOPE/ below stands for NAMESPACE/SCOPE/, for example
# /service/postgres/):
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
# ran for: a cluster's users then reach the other clusters' keys on the same
# etcd; give each cluster its own etcd where that matters. A user that
# exists is left as it is (change a password with `etcdctl user passwd`).
set -eu

usage() {
    echo "usage: $0 [-n NAMESPACE] [-p DIR] SCOPE PGBOUNCER_HOST..." >&2
    echo "       $0 [--namespace NAMESPACE] [--passwords DIR] --scope SCOPE --pgbouncer HOST..." >&2
    exit 2
}

ns="${PATRONI_NAMESPACE:-/service}"
scope=""
hosts=""
passwords=""
while [ $# -gt 0 ]; do
    case "$1" in
        -n | --namespace) [ $# -ge 2 ] || usage; ns="$2"; shift 2 ;;
        -p | --passwords) [ $# -ge 2 ] || usage; passwords="$2"; shift 2 ;;
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
    "" | */* | *[[:space:]]*) echo "error: scope '$scope': must be a name without / or blanks" >&2; exit 2 ;;
esac
for host in "$@"; do
    case "$host" in
        "" | */* | *[[:space:]]*) echo "error: PgBouncer host '$host': must be a name without / or blanks" >&2; exit 2 ;;
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

# user NAME: adds NAME unless it exists: with the password in
# $passwords/NAME (made first if missing), or without -p none.
user() {
    if etcdctl user get "$1" >/dev/null 2>&1; then
        echo "user $1: exists"
    elif [ -n "$passwords" ]; then
        file="$passwords/$1"
        if [ ! -s "$file" ]; then
            (umask 077 && mkdir -p "$passwords" &&
                head -c 24 /dev/urandom | base64 | tr -d '/+=\n' >"$file")
        fi
        # On stdin, not on the command line (ps shows arguments).
        head -n 1 "$file" | ctl user add "$1" --interactive=false
        echo "user $1: added, password in $file"
    else
        ctl user add "$1" --no-password
        echo "user $1: added, no password (etcdctl with a CN=$1 certificate only)"
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
