#!/usr/bin/env bash
# One `watches` entry of a host's Consul agent, as the legacy lab runs it (the
# adopt scenarios): the host's agent (real Consul) or the Consul double runs
# this for every change of the key, and it runs HANDLER only while the entry
# is installed, i.e. while the file ENTRY exists. Creating ENTRY is the lab's `consul reload` with the entry
# added; removing it is the old glue's consul-template stopped. A run without
# the entry leaves a line in ENTRY.skipped, so the lab can tell it happened.
#   agent-watch.sh ENTRY HANDLER [ARGS...]
set -euo pipefail
entry="$1"
shift
if [ ! -e "$entry" ]; then
    echo "$(date -u +%Y-%m-%dT%H:%M:%S.%6NZ) skipped: the watch entry is not installed" >>"$entry.skipped"
    exit 0
fi
exec "$@"
