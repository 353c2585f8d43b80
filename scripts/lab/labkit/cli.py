"""The lab's commands: scripts/lab.sh brings a lab up and takes it down (its
`ip netns` commands are the topology's specification) and runs
scripts/lab/labtool.py, which runs main() here, for everything else, as root
with the Patroni virtualenv's Python (it has psycopg):

    labtool.py status | switchover | failover | kill-patroni | stop-primary
    labtool.py demo | bench [--n N] [--events LIST] [--managers LIST]
    labtool.py faults ARGS | backup | adopt-single | adopt-cluster

Internal commands (INTERNAL), run by lab.sh or by a measurement inside the
lab's client namespace: sample, load, reads (the probes), wait-healthy,
prepare-db, consul-configs, kv, run-unit (a systemd unit's command lines, the
etcd3 lab's watch unit), backup-setup, backup-stanza-create.
"""

import argparse
import json
import os
import signal
import sys

from .base import LabError
from .events import EVENTS, run_event
from .measure import cmd_load, cmd_prepare_db, cmd_reads, cmd_sample
from .netns import in_netns
from .runlab import Lab, kit_consul_config, show_status, wait_healthy
from .scenarios import SCENARIOS, scenario_module
from .topology import Topology
from .unit import cmd_run_unit


def cmd_event(topo, kind, argv):
    if argv:
        raise LabError(f"{kind} takes no arguments (got {' '.join(argv)})")
    run_event(Lab.current(topo), kind)


def cmd_status(topo, argv):
    if argv:
        raise LabError(f"status takes no arguments (got {' '.join(argv)})")
    show_status(Lab.current(topo))


def cmd_wait_healthy(lab, argv):
    ap = argparse.ArgumentParser(prog="labtool wait-healthy")
    ap.add_argument("--timeout", type=float, default=180)
    print(wait_healthy(lab, ap.parse_args(argv).timeout))


def cmd_consul_configs(lab, argv):
    """Writes $RUN/consul/<host>/consul.json for every Consul agent of a
    real-Consul lab (scripts/lab.sh up)."""
    if argv:
        raise LabError(f"consul-configs takes no arguments (got {' '.join(argv)})")
    t = lab.topo
    clients = t.get("LAB_CONSUL_CLIENTS").split() + (["pitr"] if lab.backup else [])
    for host in t.get("LAB_CONSUL_SERVERS").split() + clients:
        d = lab.path("consul", host)
        os.makedirs(os.path.join(d, "data"), mode=0o700, exist_ok=True)
        path = os.path.join(d, "consul.json")  # Consul reads only *.json and *.hcl
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            json.dump(kit_consul_config(lab, host), f, indent=2)
            f.write("\n")


def cmd_kv(lab, argv):
    """kv KEY: prints KEY's value in the lab's DCS (nothing when absent), read
    from the client namespace (tests/e2e.rs)."""
    if len(argv) != 1:
        raise LabError("kv takes one key")
    value = in_netns(lab.ns("client"), lambda: lab.dcs().read(argv[0])[0])
    sys.stdout.write(value or "")


# Internal commands: run by lab.sh or by this program inside the client namespace.
INTERNAL = {
    "consul-configs": cmd_consul_configs,
    "kv": cmd_kv,
    "run-unit": cmd_run_unit,
    "sample": cmd_sample,
    "load": cmd_load,
    "prepare-db": cmd_prepare_db,
    "wait-healthy": cmd_wait_healthy,
    "reads": cmd_reads,
    "backup-setup": lambda lab, argv: scenario_module("backup").cmd_setup(lab),
    "backup-stanza-create": lambda lab, argv: scenario_module("backup").cmd_stanza_create(lab),
}


def main():
    if len(sys.argv) < 2:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        sys.exit(2)
    cmd, argv = sys.argv[1], sys.argv[2:]

    def on_term(*_):
        raise SystemExit(143)
    try:
        topo = Topology()
        if cmd in INTERNAL:
            INTERNAL[cmd](Lab.current(topo), argv)
            return
        signal.signal(signal.SIGTERM, on_term)  # finally-blocks (lab down) run on SIGTERM too
        if cmd in EVENTS:
            cmd_event(topo, cmd, argv)
        elif cmd == "status":
            cmd_status(topo, argv)
        elif cmd in SCENARIOS:
            SCENARIOS[cmd](topo, argv)
        else:
            known = ", ".join(["status", *EVENTS, *SCENARIOS])
            raise LabError(f"unknown command {cmd!r} (known: {known})")
    except LabError as e:
        print(f"labtool: error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("labtool: interrupted", file=sys.stderr)
        sys.exit(130)
