#!/usr/bin/env bash
# Hands the PgBouncer host's [databases] entries to patroni-hook reconcile,
# once Patroni leads the adopted cluster: reconcile must find them already
# pointing at the leader (nothing to rewrite), the old glue that wrote them
# stops, the hook's watch and timer start, and the file stays byte for byte
# what it was. One step of the runbooks in docs/operations.md ("Adopting an
# existing PostgreSQL"); the lab's adopt scenarios run this very script.
#
#   adopt-pgbouncer.sh [options]
#
# Run it as root on the PgBouncer host, with the hook's configuration in place
# (its pgbouncer.clusters name the entries). Options:
#   --ini FILE            the managed pgbouncer.ini (/etc/pgbouncer/pgbouncer.ini)
#   --user USER           the user the hook and PgBouncer run as (postgres)
#   --hook BIN            (patroni-hook on PATH)
#   --hook-config FILE    (/etc/patroni-hook/config.yml)
#   --stop-glue CMD       stops what rendered the file before (default: none), e.g.
#                         'systemctl disable --now consul-template-pgbouncer'
#   --start-reconcile CMD ('systemctl enable --now patroni-hook-reconcile.timer';
#                         install the Consul watch and `consul reload` before)
set -euo pipefail

ini=/etc/pgbouncer/pgbouncer.ini user=postgres hook=patroni-hook hook_config=/etc/patroni-hook/config.yml
stop_glue="" start_reconcile="systemctl enable --now patroni-hook-reconcile.timer"

say() { printf 'adopt-pgbouncer: %s\n' "$*"; }
die() { printf 'adopt-pgbouncer: error: %s\n' "$*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    [ $# -ge 2 ] || die "option $1 needs a value"
    case "$1" in
    --ini) ini="$2" ;;
    --user) user="$2" ;;
    --hook) hook="$2" ;;
    --hook-config) hook_config="$2" ;;
    --stop-glue) stop_glue="$2" ;;
    --start-reconcile) start_reconcile="$2" ;;
    *) die "unknown option $1 (see the comment at the top of $0)" ;;
    esac
    shift 2
done
[ "$(id -u)" -eq 0 ] || die "run as root: it runs the hook as $user and starts services"
[ -f "$ini" ] || die "no pgbouncer.ini at $ini"

as_user() { runuser -u "$user" -- "$hook" --config "$hook_config" "$@"; }
run() {
    say "running: $1"
    bash -c "$1" || die "'$1' failed"
}

out="$(as_user check-config 2>&1)" || die "check-config of $hook_config failed: $out"
before="$(sha256sum <"$ini")"

# Reconcile must have nothing to change: the entries already point at the
# leader Patroni elected (the primary that was adopted).
set +e
plan="$(as_user reconcile --dry-run 2>&1)"
rc=$?
set -e
case "$rc" in
0) ;;
75) die "reconcile finds no leader in Consul yet: adopt the primary first ($plan)" ;;
*) die "reconcile --dry-run failed (exit $rc): $plan" ;;
esac
grep -qx 'pgbouncer.ini: nothing to do' <<<"$plan" ||
    die "reconcile would change $ini; point its entries at the leader first, or accept that it rewrites them: $plan"
say "reconcile --dry-run: $ini already points at the leader"

[ -z "$stop_glue" ] || run "$stop_glue"
[ -z "$start_reconcile" ] || run "$start_reconcile"
out="$(as_user reconcile 2>&1)" || die "reconcile failed: $out"
after="$(sha256sum <"$ini")"
[ "$after" = "$before" ] || die "$ini changed while it was handed over (the leader moved?): compare it with your copy"
say "reconcile manages the entries of $ini now; the file is unchanged byte for byte"
