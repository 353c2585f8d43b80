"""Results: the demo's and the bench's rows (summarize), their markdown
table, and writing target/lab-<name>.json and .md (LAB_OUT_DIR overrides
target/), each JSON saying which Consul the lab ran on (with_consul)."""

import json
import os
import statistics

from .base import REPO


FIGURES = ["patroni_outage_ms", "pgbouncer_outage_ms", "vip_outage_ms", "pgbouncer_failed_attempts",
           "vip_failed_attempts", "vip_two_nodes_ms", "vip_after_leader_key_ms", "ini_after_leader_key_ms"]


def pgb_minus_patroni(r):
    a, b = r.get("pgbouncer_outage_ms"), r.get("patroni_outage_ms")
    return None if a is None or b is None else round(a - b, 1)


def _failure(f):
    """(dcs, manager, kind, why) of a failure: (dcs, manager, kind, why) or (manager, kind, why)."""
    return tuple(f) if len(f) == 4 else (None, *f)


def summarize(results, failures=()):
    """One row per (dcs, manager, event), in order of first appearance: each figure
    as {"median", "max"} over the events (null when none had it), lost_rows a
    total; `failed` counts the events of that kind that did not complete."""
    groups = {}
    for r in results:
        groups.setdefault((r.get("dcs"), r["manager"], r.get("pause_on"), r["kind"]), []).append(r)
    failures = [_failure(f) for f in failures]
    for dcs, manager, kind, _why in failures:
        if not any(d == dcs and m == manager and k == kind for d, m, _p, k in groups):
            groups.setdefault((dcs, manager, None, kind), [])
    rows = []
    for (dcs, manager, pause_on, kind), rs in groups.items():
        row = {"manager": manager, "event": kind, "pause_on": pause_on, "n": len(rs)}
        if dcs is not None:
            row["dcs"] = dcs
        if rs and "consul" in rs[0]:
            row["consul"] = rs[0]["consul"]
        if dcs is not None:
            row["etcd_api"] = rs[0].get("etcd_api") if rs else None
        for key in FIGURES + ["pgbouncer_minus_patroni_ms"]:
            vs = [v for v in ((pgb_minus_patroni(r) if key == "pgbouncer_minus_patroni_ms" else r.get(key)) for r in rs)
                  if v is not None]
            row[key] = {"median": round(statistics.median(vs), 1), "max": max(vs)} if vs else {"median": None, "max": None}
        row["lost_rows"] = sum(r.get("lost_rows") or 0 for r in rs)
        row["failed"] = sum(1 for d, m, k, _ in failures if (m, k) == (manager, kind) and d in (dcs, None))
        rows.append(row)
    return rows


COLUMNS = [("Patroni's own outage", "patroni_outage_ms"), ("through PgBouncer", "pgbouncer_outage_ms"),
           ("PgBouncer − Patroni", "pgbouncer_minus_patroni_ms"), ("through the VIP", "vip_outage_ms"),
           ("failed attempts PgBouncer", "pgbouncer_failed_attempts"), ("failed attempts VIP", "vip_failed_attempts"),
           ("VIP on two nodes", "vip_two_nodes_ms"), ("VIP after leader key", "vip_after_leader_key_ms"),
           ("ini after leader key", "ini_after_leader_key_ms")]


TABLE_NOTES = """\
Milliseconds (attempts for the failed-attempts columns), median / max over n events. Outage = the
longest gap between two acknowledged writes (one attempt every 20 ms per path). Patroni's own = from
the last write the old primary accepted on a direct connection to the first the new one accepted.
"VIP on two nodes" and "VIP after leader key" come from sampling the three nodes' addresses every
20 ms. dcs consul, hook: Patroni on Consul (Consul 1.8.7, three servers and an agent per host, or the
Consul double: the JSON's "consul" says which); the hook as Patroni's callbacks, reconcile from
Consul watches on every node and on the PgBouncer host, and every 2 s (nodes) / 5 s (PgBouncer host)
from a timer. dcs etcd3, hook: Patroni and the hook on etcd 3.4's v3 API (three members, TLS with
client certificates, auth and the kit's RBAC on); reconcile from the kit's
patroni-hook-etcd-watch@.service (etcdctl watch on the scope's prefix) on every node and on the
PgBouncer host, and from the same timers. vip-manager-<interval>: Debian's vip-manager 1.0.2 at
that --interval, on the same three etcd members with both APIs enabled, its Patroni on their v2
API (the only one vip-manager 1.0.2 reads; etcd 3.4 keeps the v2 and v3 keyspaces apart, so each
tool watches the Patroni of its own API); its PgBouncer points at the VIP (what vip-manager's
users run: nothing rewrites pgbouncer.ini), so "through PgBouncer" there goes through the VIP and
"ini after leader key" does not apply. pause_on: the PgBouncer host's
pgbouncer.pause_on (the old primary's before-stop asks for the pause; the hook resumes on the new
writable primary); PgBouncer's server_login_retry is 0.1.
"""


def cell(v, n):
    if v["median"] is None:
        return "n/a"
    if n == 1:
        return f"{v['median']:.0f}"
    return f"{v['median']:.0f} / {v['max']:.0f}"


def markdown(rows, title):
    head = "| dcs | manager | pause_on | event | n | " + " | ".join(c for c, _ in COLUMNS) + " | lost rows |"
    lines = [f"{title}\n", TABLE_NOTES, head, "|---|---|---|---|---|" + "---|" * (len(COLUMNS) + 1)]
    for row in rows:
        cells = [cell(row[key], row["n"]) for _, key in COLUMNS]
        n = f"{row['n']}" + (f" ({row['failed']} failed)" if row.get("failed") else "")
        dcs = row.get("dcs") or "-"
        if row.get("etcd_api") == "v2":
            dcs += " (v2 API)"
        lines.append(f"| {dcs} | {row['manager']} | {row.get('pause_on') or '-'} | {row['event']} | {n} | "
                     + " | ".join(cells) + f" | {row['lost_rows']} |")
    return "\n".join(lines) + "\n"


def out_dir():
    d = os.environ.get("LAB_OUT_DIR") or os.path.join(REPO, "target")
    os.makedirs(d, exist_ok=True)
    return d


# Which Consul the last lab this process opened runs on (Lab sets it; None:
# the vip-manager variant, on etcd): every JSON the lab writes records it.
NO_LAB = object()
CONSUL_RAN_ON = NO_LAB
# Which DCS ("consul" or "etcd3"; the vip-manager variant runs on etcd3's
# members, its Patroni on their v2 API): "dcs" in every JSON the lab writes.
DCS_RAN_ON = NO_LAB
ETCD_API = None  # "v3" (hook) or "v2" (vip-manager) on etcd3


def with_consul(data):
    """`data` with "consul" (which Consul the lab ran on: {"kind": "real",
    "version"}, {"kind": "double"}, or null on etcd) and "dcs" ("consul" or
    "etcd3") on it, or on each of its rows that does not say already."""
    if CONSUL_RAN_ON is NO_LAB:
        return data
    rows = [data] if isinstance(data, dict) else data if isinstance(data, list) else []
    for row in rows:
        if isinstance(row, dict):
            row.setdefault("consul", CONSUL_RAN_ON)
            # Stamped together: a row that says its DCS keeps its etcd_api
            # (null on Consul), whichever lab this process opened last.
            if DCS_RAN_ON is not NO_LAB and "dcs" not in row:
                row["dcs"] = DCS_RAN_ON
                row["etcd_api"] = ETCD_API
    return data


def write_results(name, data, md):
    """target/lab-<name>.json and target/lab-<name>.md (LAB_OUT_DIR overrides target/)."""
    data = with_consul(data)
    base = os.path.join(out_dir(), f"lab-{name}")
    with open(base + ".json", "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
    with open(base + ".md", "w") as f:
        f.write(md)
    return base + ".json", base + ".md"
