#!/usr/bin/env bash
# The glue patroni-hook replaces, as the legacy lab runs it before an adoption
# (docs/operations.md, "Migrating from consul-template"): consul-template
# processes that watch one Consul key, the current primary's address, which
# the operator writes when the primary changes.
#
#   legacy-glue.sh vip NETNS LOG MY_ADDRESS VIP/PREFIX INTERFACE KEY_URL
#       on every database node: adds the VIP when the key names this node's
#       address (and announces it), removes it otherwise; as root, as the
#       original script ran.
#   legacy-glue.sh render NETNS LOG TEMPLATE INI PIDFILE KEY_URL
#       on the PgBouncer host: renders the template (consul-template syntax,
#       one function: {{ key "<the key>" }}) into pgbouncer.ini when the result
#       differs, then SIGHUP to PgBouncer; the file stays postgres's.
set -euo pipefail
mode="$1" ns="$2" log="$3"
shift 3
exec >>"$log" 2>&1
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
stamp() { date -u +%Y-%m-%dT%H:%M:%S.%6NZ; }

case "$mode" in
vip)
    me="$1" vip="$2" iface="$3" url="$4"
    primary="$(ip netns exec "$ns" curl -sf --max-time 2 "$url?raw" || true)"
    if [ "$primary" = "$me" ]; then
        if ip netns exec "$ns" ip addr add "$vip" dev "$iface" 2>/dev/null; then
            echo "$(stamp) legacy vip: added $vip to $iface (primary is $primary)"
            ip netns exec "$ns" arping -q -U -c 1 -I "$iface" "${vip%/*}" || true
        fi
    elif ip netns exec "$ns" ip addr del "$vip" dev "$iface" 2>/dev/null; then
        echo "$(stamp) legacy vip: removed $vip from $iface (primary is ${primary:-unknown})"
    fi
    ;;
render)
    template="$1" ini="$2" pidfile="$3" url="$4"
    primary="$(ip netns exec "$ns" curl -sf --max-time 2 "$url?raw" || true)"
    [ -n "$primary" ] || { echo "$(stamp) legacy render: no primary in $url; $ini left as it is"; exit 0; }
    key="${url##*/v1/kv/}"
    tmp="$ini.ctmpl-render"
    sed "s|{{ key \"$key\" }}|$primary|g" "$template" >"$tmp"
    chown postgres:postgres "$tmp"
    if cmp -s "$tmp" "$ini"; then
        rm -f "$tmp"
        exit 0
    fi
    mv "$tmp" "$ini"
    kill -HUP "$(cat "$pidfile")"
    echo "$(stamp) legacy render: $ini rendered with $primary, PgBouncer reloaded"
    ;;
*)
    echo "legacy-glue.sh: unknown mode '$mode'" >&2
    exit 2
    ;;
esac
