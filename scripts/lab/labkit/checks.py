"""What the backup and adopt scenarios (backup.py, adopt.py) share: the
checks they print as they go and record, SQL from the client namespace, the
outage a phase cost, and the hook's end state."""

import json
import os
import subprocess
import time

from . import base, measure, netns, reports


class Checks:
    """Named checks, printed as they are made and written with the results.
    A scenario exits 0 only when every one held."""

    def __init__(self, scenario):
        self.scenario = scenario
        self.items = []
        self.started = time.time()

    def check(self, name, ok, detail=""):
        ok = bool(ok)
        self.items.append({"name": name, "ok": ok, "detail": detail})
        print(f"  [{'ok' if ok else 'FAIL'}] {name}" + (f": {detail}" if detail else ""), flush=True)
        return ok

    def must(self, name, ok, detail=""):
        """A check the rest of the scenario depends on: stops it when it fails."""
        if not self.check(name, ok, detail):
            raise base.LabError(f"{self.scenario}: {name}: {detail}")

    @property
    def failed(self):
        return [c for c in self.items if not c["ok"]]

    def finish(self, lab_id, extra):
        """Writes target/lab-<scenario>.json and .md; raises when a check failed."""
        data = {"scenario": self.scenario, "lab": lab_id, "started": self.started,
                "duration_s": round(time.time() - self.started, 1), "checks": self.items, **extra}
        md = [f"scripts/lab.sh {self.scenario}, lab {lab_id}, {time.strftime('%Y-%m-%d %H:%M')}, "
              f"{data['duration_s']:.0f} s\n", "| check | ok | detail |", "|---|---|---|"]
        md += [f"| {c['name']} | {'yes' if c['ok'] else 'NO'} | {c['detail']} |" for c in self.items]
        md.append("")
        for key in ("lost_rows", "outage_ms", "rows_before_target", "rows_after_target_found"):
            if key in extra:
                md.append(f"- {key}: {json.dumps(extra[key])}")
        paths = reports.write_results(self.scenario, data, "\n".join(md) + "\n")
        n = len(self.items)
        base.say(f"{self.scenario}: {n - len(self.failed)} of {n} checks held; results in {paths[0]}")
        if self.failed:
            raise base.LabError(f"{self.scenario}: {len(self.failed)} check(s) failed: "
                                + "; ".join(c["name"] for c in self.failed))


def sql(lab, target, query, params=None, user="postgres", timeout=10):
    """Runs one statement on `target` (a host of the topology, pgbouncer or
    vip) from the client namespace; its rows, or None for a statement
    without a result."""
    def run():
        import psycopg  # from the Patroni virtualenv
        with psycopg.connect(lab.conninfo(target, user=user), autocommit=True,
                             connect_timeout=timeout) as c:
            cur = c.execute(query, params)
            return cur.fetchall() if cur.description else None
    return netns.in_netns(lab.ns("client"), run)


def run_in(lab, host, argv, timeout=300, user=None, env=None, log=None):
    """Runs argv in the namespace of `host` (as `user` when given), bounded;
    returns (exit code, output). The output is also appended to `log`."""
    cmd = ["ip", "netns", "exec", lab.ns(host)]
    if user:
        cmd += ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--"]
    if env:
        cmd += ["env", *[f"{k}={v}" for k, v in env.items()]]
    cmd += list(argv)
    try:
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise base.LabError(f"timed out after {timeout} s waiting for {' '.join(argv[:4])} on {host}")
    if log:
        with open(log, "a") as f:
            f.write(f"$ {' '.join(argv)}\n{r.stdout}\n[exit {r.returncode}]\n")
    return r.returncode, r.stdout


def outage(load_log, t_from, t_to):
    """{"vip": ms, "pgbouncer": ms}: the longest time without an acknowledged
    write through each path within [t_from, t_to], the load writing every
    20 ms: between two acknowledgements, or from the last one to t_to. The
    caller starts the window once writes flow on every path."""
    lines = [p.split() for p in base.load_lines(load_log)]
    out = {}
    for path in ("vip", "pgbouncer"):
        pts = sorted(float(p[1]) for p in lines
                     if len(p) >= 7 and p[2] == "ok" and p[4] == path and t_from - 1.0 <= float(p[1]) <= t_to)
        if not pts:
            out[path] = base.ms(t_to - t_from)
            continue
        out[path] = base.ms(max([b - a for a, b in zip(pts, pts[1:])] + [t_to - pts[-1]]))
    return out


def acked_rows(load_log, event):
    """[(event, path, seq, t_start, t_acked)] of every write the client saw
    acknowledged (not the commits whose synchronous wait was cancelled)."""
    rows = []
    for p in (line.split() for line in base.load_lines(load_log)):
        if len(p) >= 7 and p[2] == "ok":
            rows.append((event, p[4], int(p[5]), float(p[0]), float(p[1])))
    return rows


def hook_follows(lab, checks, when):
    """The hook's end state, checked independently of the waits: the VIP on
    the leader alone, vip-holder naming it, pgbouncer.ini pointing at it, and
    a write through PgBouncer and one through the VIP landing on it."""
    t = lab.topo

    def observe():
        sampler = measure.Sampler(lab)
        leader = sampler.leader()
        raw = sampler.read(lab.holder_key)[0]
        try:
            holder = json.loads(raw).get("member") if raw else None
        except ValueError:
            holder = f"unparsable {raw!r}"
        return leader, sampler.holders(), holder
    deadline = time.time() + 30
    while True:
        leader, on, holder = netns.in_netns(lab.ns("client"), observe)
        ini = lab.ini_host()
        settled = leader and on == [leader] and holder == leader and ini == t.addr(leader)
        if settled or time.time() > deadline:
            break
        time.sleep(0.2)
    checks.check(f"{when}: the VIP on the leader {leader} alone", on == [leader], f"VIP on {','.join(on) or 'none'}")
    checks.check(f"{when}: vip-holder names the leader", holder == leader, f"vip-holder {holder}")
    checks.check(f"{when}: pgbouncer.ini points at the leader", ini == t.addr(leader or ""), f"{t.pgb_db} host={ini}")
    for target in ("pgbouncer", "vip"):
        try:
            got = sql(lab, target, "SELECT split_part(current_setting('data_directory'), '/', -2)", user="lab")[0][0]
        except Exception as e:  # a failed write is the check's answer
            got = f"error: {str(e).strip().splitlines()[0][:120]}"
        checks.check(f"{when}: a query through {target} lands on the leader", got == leader, f"answered by {got}")
    return leader


def patroni_log_since(lab, node, offset):
    """The part of the node's Patroni log written after byte `offset`."""
    path = lab.path("logs", f"{node}-patroni.log")
    try:
        with open(path, errors="replace") as f:
            f.seek(offset)
            return f.read()
    except OSError:
        return ""


def log_size(lab, node):
    try:
        return os.path.getsize(lab.path("logs", f"{node}-patroni.log"))
    except OSError:
        return 0
