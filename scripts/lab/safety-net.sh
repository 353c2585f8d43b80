#!/usr/bin/env bash
# The hook's reconcile safety net, as the lab runs it (a systemd timer in
# production): `patroni-hook reconcile` every INTERVAL seconds, for ever; the
# lab stops it by pid. It catches what no callback reports: a Patroni killed
# with SIGKILL leaves its VIP behind until the leader key names someone else.
#   safety-net.sh HOOK_BINARY CONFIG INTERVAL
set -euo pipefail
hook="$1" config="$2" interval="$3"
while :; do
    # Exit 75 (no leader / Consul unreachable) and 1 are logged by the hook
    # itself; the timer just runs again.
    "$hook" --config "$config" reconcile || true
    sleep "$interval"
done
