#!/usr/bin/env bash
# A Consul watch handler as the lab runs it: runs `patroni-hook reconcile` on
# the watch's host, as postgres, its log lines appended to LOG (one file per
# host, so the timelines can tell which host's watch acted).
#   watch-handler.sh NETNS LOG HOOK_BINARY CONFIG
# NETNS: the host's namespace, entered first (the Consul double lives in its
# own namespace and runs every host's watches); `-` when the handler already
# runs there (real Consul: the host's own agent runs it, from the `watches`
# of the kit's consul-client.json, rendered for the lab).
set -euo pipefail
ns="$1" log="$2" hook="$3" config="$4"
exec >>"$log" 2>&1
export PATH=/usr/sbin:/usr/bin:/sbin:/bin PATRONI_HOOK_LOG_STDERR=1
# The agent's environment (its CONSUL_INDEX aside) is not the hook's.
unset CURL_CA_BUNDLE
# setpriv execs: the hook's file capabilities apply, no shell stays behind.
if [ "$ns" = - ]; then
    exec setpriv --reuid=postgres --regid=postgres --init-groups -- "$hook" --config "$config" reconcile
fi
exec ip netns exec "$ns" setpriv --reuid=postgres --regid=postgres --init-groups -- \
    "$hook" --config "$config" reconcile
