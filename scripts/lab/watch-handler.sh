#!/usr/bin/env bash
# A Consul watch handler as the lab runs it: the Consul double lives in its own
# namespace and runs this on every change of the leader key; the host the
# watch belongs to is another namespace. Runs `patroni-hook reconcile` there,
# as postgres, its log lines appended to LOG (one file per host, so the
# timelines can tell which host's watch acted).
#   watch-handler.sh NETNS LOG HOOK_BINARY CONFIG
set -euo pipefail
ns="$1" log="$2" hook="$3" config="$4"
exec >>"$log" 2>&1
export PATH=/usr/sbin:/usr/bin:/sbin:/bin PATRONI_HOOK_LOG_STDERR=1
# setpriv execs: the hook's file capabilities apply, no shell stays behind.
exec ip netns exec "$ns" setpriv --reuid=postgres --regid=postgres --init-groups -- \
    "$hook" --config "$config" reconcile
