"""The scenarios, each on a lab (or labs) of its own (SCENARIOS): demo and
bench here; the fault matrix (faults.py), backup (backup.py) and the two
adopt scenarios (adopt.py) in modules of their own, imported when run."""

import argparse
import json
import os
import re
import sys
import time

from .base import LabError, say
from .events import EVENTS, run_event
from .reports import markdown, out_dir, summarize, with_consul, write_results
from .runlab import lab_session, lab_sh, set_vip_manager_interval, show_status


def scenario_demo(topo, argv):
    """Up (hook variant, on the DCS LAB_DCS names: --dcs consul|etcd3), a
    switchover, a failover and a Patroni-only kill with their timelines, a
    summary table (target/lab-demo.{md,json}), down."""
    if argv:
        raise LabError(f"demo takes no arguments (got {' '.join(argv)})")
    started = time.time()
    results = []
    with lab_session(topo, "hook", rid=os.environ.get("LAB_RUN_ID")) as lab:
        show_status(lab)
        for kind in ("switchover", "failover", "kill-patroni"):
            results.append(run_event(lab, kind))
        rows = summarize(results)
        md = markdown(rows, f"scripts/lab.sh demo, lab {lab.rid} on {lab.consul_label}, {time.strftime('%Y-%m-%d %H:%M')}")
        print(md)
        paths = write_results("demo", rows, md)
        say(f"summary written to {paths[1]} and {paths[0]}; taking the lab down")
    say(f"demo finished in {time.time() - started:.0f} s")


def scenario_bench(topo, argv):
    """Every event n times per VIP manager, each variant on its own lab;
    target/lab-bench.{md,json} (and lab-bench-events.json, every event's result)."""
    ap = argparse.ArgumentParser(prog="scripts/lab.sh bench")
    ap.add_argument("--n", type=int, default=5, help="events of each kind per manager (default 5)")
    ap.add_argument("--events", default="switchover,failover,kill-patroni,stop-primary")
    ap.add_argument("--managers", default="hook,vip-manager",
                    help="hook, vip-manager (both intervals), vip-manager-1000ms, vip-manager-100ms")
    ap.add_argument("--dcs", default=os.environ.get("LAB_DCS") or "consul",
                    help="consul, etcd3 or both (consul,etcd3): the hook runs on each; vip-manager on "
                         "the etcd members (their v2 API) whatever this says, once")
    ap.add_argument("--pause-on", default=os.environ.get("LAB_PAUSE_ON") or "switchover",
                    help="the hook's pgbouncer.pause_on, a comma list: one hook lab each (default switchover)")
    a = ap.parse_args(argv)
    pause_ons = [p for p in a.pause_on.split(",") if p]
    for p in pause_ons:
        if p not in ("switchover", "always", "never"):
            raise LabError(f"--pause-on: {p!r} is not switchover, always or never")
    events = [e for e in a.events.split(",") if e]
    for e in events:
        if e not in EVENTS:
            raise LabError(f"--events: unknown event {e!r} (known: {', '.join(EVENTS)})")
    if a.n < 1:
        raise LabError(f"--n must be at least 1, not {a.n}")
    plan = {}  # variant -> intervals (None for the hook)
    for m in (m for m in a.managers.split(",") if m):
        if m == "hook":
            plan["hook"] = [None]
        elif m == "vip-manager":
            plan.setdefault("vip-manager", [])
            plan["vip-manager"] += [i for i in (1000, 100) if i not in plan["vip-manager"]]
        elif re.fullmatch(r"vip-manager-([1-9][0-9]*)ms", m):
            i = int(m[len("vip-manager-"):-2])
            plan.setdefault("vip-manager", [])
            if i not in plan["vip-manager"]:
                plan["vip-manager"].append(i)
        else:
            raise LabError(f"--managers: unknown manager {m!r} (hook, vip-manager, vip-manager-<ms>ms)")
    if not plan:
        raise LabError("--managers: empty")
    dcss = [d for d in a.dcs.split(",") if d]
    for d in dcss:
        if d not in ("consul", "etcd3"):
            raise LabError(f"--dcs: {d!r} is not consul or etcd3")
    if not dcss:
        raise LabError("--dcs: empty")
    for variant in plan:
        for d in (dcss if variant == "hook" else ["etcd3"]):
            lab_sh("check-prereqs", variant, env={"LAB_DCS": d}, timeout=60)
    started = time.time()
    results, failures = [], []
    title = (f"scripts/lab.sh bench --n {a.n} --events {','.join(events)} --managers {a.managers} --dcs {','.join(dcss)} "
             f"--pause-on {','.join(pause_ons)}, "
             f"{time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs")

    def save():
        rows = summarize(results, failures)
        md = markdown(rows, title)
        if failures:
            md += "\nEvents that did not complete:\n\n" + "".join(f"- {d} {m} {k}: {w}\n" for d, m, k, w in failures)
        paths = write_results("bench", rows, md)
        with open(os.path.join(out_dir(), "lab-bench-events.json"), "w") as f:
            json.dump(with_consul(results), f, indent=1)
        return md, paths

    labs = []  # (dcs, variant, intervals, pause_on): one lab each
    for variant, intervals in plan.items():
        for d in (dcss if variant == "hook" else ["etcd3"]):
            for p in (pause_ons if variant == "hook" else [None]):
                labs.append((d, variant, intervals, p))
    try:
        for dcs, variant, intervals, pause_on in labs:
            with lab_session(topo, variant, interval_ms=intervals[0], pause_on=pause_on, dcs=dcs) as lab:
                kind = "vip-manager-interval"
                try:
                    for interval in intervals:
                        if interval and interval != lab.interval_ms:
                            kind = "vip-manager-interval"
                            set_vip_manager_interval(lab, interval)
                        for i in range(a.n):
                            for kind in events:
                                say(f"bench: {dcs} {lab.label} {kind} {i + 1}/{a.n}")
                                results.append(run_event(lab, kind))
                                save()
                except LabError as e:
                    # The lab may be in any state now: no more events on it.
                    print(f"labtool: {e}; no more events on lab {lab.rid}", file=sys.stderr)
                    failures.append((dcs, lab.label, kind, str(e)))
    finally:
        md, paths = save()
    print(md)
    say(f"bench written to {paths[1]} and {paths[0]} in {time.time() - started:.0f} s")
    if failures:
        raise LabError(f"{len(failures)} event(s) did not complete (listed in {paths[1]})")


def scenario_module(name):
    """labkit.<name>, a module of scenarios (imported when its command runs)."""
    import importlib
    return importlib.import_module(f"labkit.{name}")


SCENARIOS = {
    "demo": scenario_demo,
    "bench": scenario_bench,
    "backup": lambda topo, argv: scenario_module("backup").scenario_backup(topo, argv),
    "adopt-single": lambda topo, argv: scenario_module("adopt").scenario_adopt_single(topo, argv),
    "adopt-cluster": lambda topo, argv: scenario_module("adopt").scenario_adopt_cluster(topo, argv),
    "faults": lambda topo, argv: scenario_module("faults").scenario(topo, argv),
}
