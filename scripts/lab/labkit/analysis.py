"""An event's timeline and figures, read off its files after it ran: the
sampler's log (VIP holders, leader key), the load's log (every attempt per
path), the load's final check and every hook log line of the run."""

import contextlib
import datetime
import json
import os
import re
import sys

from .base import load_lines, ms


HOOK_RE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z)\s+(\w+)\s+(.*?)\s+action=(\S+) role=(\S+) scope=(\S+)\s*$")


def rfc3339(ts):
    base, _, frac = ts[:-1].partition(".")
    t = datetime.datetime.strptime(base, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.timezone.utc).timestamp()
    return t + (float("0." + frac) if frac else 0.0)


def hook_lines(path, source):
    for line in load_lines(path):
        m = HOOK_RE.match(line)
        if m:
            yield {"t": rfc3339(m.group(1)), "level": m.group(2), "msg": m.group(3),
                   "action": m.group(4), "role": m.group(5), "source": source}


def hook_log(run, nodes):
    """Every hook line of the run, with where it ran: `db1` (a Patroni
    callback), `db1/watch`, `db1/safety-net`, `pgbouncer/watch`, `pgbouncer/safety-net`."""
    files = []
    for n in nodes:
        files += [(f"{n}-patroni.log", n), (f"{n}-watch.log", f"{n}/watch"), (f"{n}-safety-net.log", f"{n}/safety-net")]
    files += [("pgbouncer-watch.log", "pgbouncer/watch"), ("pgbouncer-safety-net.log", "pgbouncer/safety-net")]
    lines = []
    for name, source in files:
        lines += hook_lines(os.path.join(run, "logs", name), source)
    return sorted(lines, key=lambda h: h["t"])


def gaps(oks, t0, t_end):
    """The longest interval without an acknowledged write, between the last
    success before the event's effect and the first after it, within
    [t0 - 1 s, t_end]; returns (outage, last_before, first_after)."""
    best = (0.0, None, None)
    prev = None
    for t in sorted(oks):
        if prev is not None and t >= t0 - 1.0 and prev <= t_end:
            if t - prev > best[0]:
                best = (t - prev, prev, t)
        prev = t
    return best


def analyze(ev_dir):
    ev = json.load(open(os.path.join(ev_dir, "event.json")))
    t0 = ev["t0"]
    old, new = ev["old"], ev.get("new")
    samples = load_lines(os.path.join(ev_dir, "sampler.log"))
    vip_changes, leader_changes, sample_stats = [], [], ""
    for line in samples:
        p = line.split(None, 2)
        if len(p) < 3:
            continue
        t = float(p[0])
        if p[1] == "vip":
            vip_changes.append((t, [] if p[2] == "-" else p[2].split(",")))
        elif p[1] == "leader":
            leader_changes.append((t, p[2]))
        elif p[1] == "end":
            sample_stats = p[2]
    t_end = ev.get("t_end") or t0 + 60

    # Leader key.
    leader_gone = next((t for t, v in leader_changes if t >= t0 - 0.5 and v != old), None)
    leader_new = next((t for t, v in leader_changes if t >= t0 - 0.5 and v == new), None)

    # VIP: time with two holders; when the old node lost it; when the new got it.
    two = 0.0
    two_spans = []
    for i, (t, h) in enumerate(vip_changes):
        nxt = vip_changes[i + 1][0] if i + 1 < len(vip_changes) else t_end
        if len(h) >= 2:
            two += nxt - t
            two_spans.append((t, nxt, h))
    vip_off_old = next((t for t, h in vip_changes if t >= t0 - 0.5 and old not in h), None)
    vip_on_new = next((t for t, h in vip_changes if t >= t0 - 0.5 and new in h), None)

    # The hook's own lines (none in the vip-manager variant).
    after = [h for h in hook_log(ev["run"], ev["nodes"]) if h["t"] >= t0 - 0.5]
    host = lambda h: h["source"].split("/")[0]  # noqa: E731
    cb_new = next((h for h in after if h["source"] == new and h["action"] in ("on_role_change", "on_start")
                   and h["role"] in ("primary", "master", "promoted")), None)
    cb_old = next((h for h in after if h["source"] == old and h["action"] in ("on_role_change", "on_stop", "on_start")), None)
    vip_added = next((h for h in after if host(h) == new and h["msg"].startswith("added ")), None)
    vip_removed = next((h for h in after if host(h) == old and h["msg"].startswith("removed ")), None)
    rewrote = next((h for h in after if host(h) == "pgbouncer" and h["msg"].startswith("rewrote ")), None)
    asked = next((h for h in after if h["source"] == old and h["action"] == "before-stop"), None)
    paused = next((h for h in after if host(h) == "pgbouncer" and h["msg"].startswith("paused ")), None)
    resumed = next((h for h in after if host(h) == "pgbouncer" and h["msg"].startswith("resumed ")), None)
    reloaded = next((h for h in after if host(h) == "pgbouncer" and h["msg"].startswith("reloaded pgbouncer")), None)

    # Client writes.
    load = [line.split() for line in load_lines(os.path.join(ev_dir, "load.log"))]
    ok = [p for p in load if len(p) >= 7 and p[2] == "ok"]
    fails = [p for p in load if len(p) >= 6 and p[2] in ("fail", "unsafe") and float(p[0]) >= t0 - 1]
    per = {}
    for path in ("pgbouncer", "vip", "direct"):
        oks = [float(p[1]) for p in ok if p[4] == path]
        outage, last_before, first_after = gaps(oks, t0, t_end)
        first_new = next((float(p[1]) for p in ok if p[4] == path and p[6] == new and float(p[1]) >= t0), None)
        per[path] = {"outage_ms": ms(outage), "last_ok_before": last_before, "first_ok_after": first_after,
                     "first_on_new": first_new,
                     "failed_attempts": sum(1 for p in fails if p[4] == path and p[2] == "fail"),
                     "unsafe_commits": sum(1 for p in fails if p[4] == path and p[2] == "unsafe")}
    # Patroni's own outage: last write the old primary accepted directly,
    # first write the new primary accepted directly.
    first_new = per["direct"]["first_on_new"]
    last_old = max((float(p[1]) for p in ok if p[3] == f"direct-{old}" and p[6] == old
                    and float(p[1]) <= (first_new or t_end)), default=None)
    patroni_outage = (first_new - last_old) if (first_new and last_old) else None

    check = {}
    with contextlib.suppress(OSError, ValueError):
        check = json.load(open(os.path.join(ev_dir, "load-result.json")))

    def rel(t):
        return None if t is None else round((t - t0) * 1000.0, 1)

    def detail(h, text):
        return h and f"{h['source']}: {text(h)}"

    # (what, when, detail, whether only the hook's variant has it)
    timeline = [
        ("event issued", t0, ev["kind"] + " of " + old, False),
        ("last direct write accepted by old primary", last_old, old, False),
        ("leader key no longer names old primary", leader_gone, "", False),
        ("leader key names new primary", leader_new, new, False),
        ("before-stop on old node asks PgBouncer to pause", asked and asked["t"], detail(asked, lambda h: h["msg"]), True),
        ("PgBouncer paused", paused and paused["t"], detail(paused, lambda h: h["msg"]), True),
        ("callback on old node", cb_old and cb_old["t"], detail(cb_old, lambda h: f"{h['action']} {h['role']}: {h['msg']}"), True),
        ("VIP removed from old node (hook log)", vip_removed and vip_removed["t"], detail(vip_removed, lambda h: h["msg"]), True),
        ("VIP gone from old node (sampler)", vip_off_old, old, False),
        ("callback on new primary", cb_new and cb_new["t"], detail(cb_new, lambda h: f"{h['action']} {h['role']}: {h['msg']}"), True),
        ("VIP added on new primary (hook log)", vip_added and vip_added["t"], detail(vip_added, lambda h: h["msg"]), True),
        ("VIP seen on new primary (sampler)", vip_on_new, new, False),
        ("pgbouncer.ini rewritten", rewrote and rewrote["t"], detail(rewrote, lambda h: h["msg"]), True),
        ("PgBouncer reloaded", reloaded and reloaded["t"], detail(reloaded, lambda h: h["msg"]), True),
        ("PgBouncer resumed", resumed and resumed["t"], detail(resumed, lambda h: h["msg"]), True),
        ("first direct write on new primary", first_new, new, False),
        ("first write through PgBouncer on new primary", per["pgbouncer"]["first_on_new"], "", False),
        ("first write through the VIP on new primary", per["vip"]["first_on_new"], "", False),
    ]
    hook = ev["manager"].startswith("hook")
    cb_t = cb_new and cb_new["t"]
    lost = len(check["missing"]) if check.get("checked_on") else None
    return {
        "kind": ev["kind"], "manager": ev["manager"], "pause_on": ev.get("pause_on"),
        "old": old, "new": new, "t0": t0, "converged": ev.get("converged", False), "problems": ev.get("problems", []),
        "timeline_ms": [{"what": w, "t_ms": rel(t), "detail": d or ""} for w, t, d, only_hook in timeline
                        if hook or not only_hook],
        "patroni_outage_ms": ms(patroni_outage),
        "pgbouncer_outage_ms": per["pgbouncer"]["outage_ms"],
        "vip_outage_ms": per["vip"]["outage_ms"],
        "pgbouncer_failed_attempts": per["pgbouncer"]["failed_attempts"],
        "vip_failed_attempts": per["vip"]["failed_attempts"],
        "paths": per,
        "vip_after_callback_ms": ms(vip_on_new - cb_t) if (vip_on_new and cb_t) else None,
        "vip_after_leader_key_ms": ms(vip_on_new - leader_new) if (vip_on_new and leader_new) else None,
        "ini_after_leader_key_ms": ms(rewrote["t"] - leader_new) if (rewrote and leader_new) else None,
        "vip_two_nodes_ms": ms(two),
        "vip_two_node_spans": [{"from_ms": rel(a), "to_ms": rel(b), "holders": h} for a, b, h in two_spans],
        "old_kept_vip_after_new_got_it_ms": ms(vip_off_old - vip_on_new) if (vip_off_old and vip_on_new and vip_off_old > vip_on_new) else 0.0,
        "sampler": sample_stats,
        "acked": check.get("acked"), "lost_rows": lost, "checked_on": check.get("checked_on"),
    }


def print_timeline(r):
    print(f"--- {r['kind']} ({r['manager']}): {r['old']} -> {r['new']}")
    print("   t (ms)  what")
    rows = [x for x in r["timeline_ms"] if x["t_ms"] is not None]
    for x in sorted(rows, key=lambda x: x["t_ms"]):
        d = f"  [{x['detail']}]" if x["detail"] else ""
        print(f"  {x['t_ms']:8.1f}  {x['what']}{d}")
    for x in r["timeline_ms"]:
        if x["t_ms"] is None:
            print(f"       n/a  {x['what']}")
    print(f"  outage seen by clients: PgBouncer {r['pgbouncer_outage_ms']} ms, VIP {r['vip_outage_ms']} ms; "
          f"Patroni's own (direct) {r['patroni_outage_ms']} ms")
    def f(v):
        return "n/a" if v is None else f"{v:.1f} ms"
    if r["manager"].startswith("hook"):
        print(f"  VIP on new primary {f(r['vip_after_callback_ms'])} after its callback, "
              f"{f(r['vip_after_leader_key_ms'])} after the leader key; "
              f"ini rewritten {f(r['ini_after_leader_key_ms'])} after the leader key")
    else:
        print(f"  VIP on new primary {f(r['vip_after_leader_key_ms'])} after the leader key")
    print(f"  VIP on two nodes: {r['vip_two_nodes_ms']} ms in total"
          + (f" (old node kept it {r['old_kept_vip_after_new_got_it_ms']} ms after the new one got it)" if r['vip_two_nodes_ms'] else ""))
    p = r["paths"]
    print(f"  failed attempts: PgBouncer {p['pgbouncer']['failed_attempts']}, VIP {p['vip']['failed_attempts']}; "
          f"commits not acknowledged (sync wait cancelled): PgBouncer {p['pgbouncer']['unsafe_commits']}, "
          f"VIP {p['vip']['unsafe_commits']}, direct {p['direct']['unsafe_commits']}")
    print(f"  acknowledged rows: {r['acked']}, lost (missing on {r['checked_on']}): {r['lost_rows']}; sampler {r['sampler']}")
    for why in r["problems"]:
        print(f"  PROBLEM: {why}")
    sys.stdout.flush()
