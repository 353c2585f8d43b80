"""Load and sampling: what a scenario measures around an action.

- The load generator (`labtool.py load`): a numbered write every 20 ms
  through PgBouncer, the VIP and directly to each node, and at the end a
  check that every acknowledged row is on the primary; the fault matrix's
  read probe (`labtool.py reads`): a `SELECT 1` every 50 ms on the same paths.
- The sampler (`labtool.py sample`): which nodes hold the VIP every 20 ms and
  every change of the leader key; the fault matrix's end-state Observer and
  Tracer (the leader, the VIP's holders, pgbouncer.ini, PgBouncer's pause).
- Measurement and Reads: the probes as processes in the client namespace
  around an action, their pids recorded (lab.sh down stops them too).
"""

import argparse
import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time

from . import base, netns
from .base import LABTOOL, LabError, VENV_PYTHON, load_lines, signals_ignored, wait_for
from .netns import db_sockets, vip_holders


def pace(next_t, interval, stop):
    """Waits for the next tick of a fixed-rate loop (or until stopped); a loop
    that fell behind starts again from now instead of bursting to catch up."""
    next_t += interval
    delay = next_t - time.time()
    if delay > 0:
        stop.wait(delay)
        return next_t
    return time.time()


def stop_on_signals():
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    return stop


PG_COMMON = dict(connect_timeout=1, tcp_user_timeout=1500, keepalives=1, keepalives_idle=1,
                 keepalives_interval=1, keepalives_count=2, application_name="lab-load")


SCHEMA = """
CREATE ROLE lab LOGIN;
GRANT pg_read_all_settings TO lab;
ALTER ROLE lab SET statement_timeout = '2s';
CREATE TABLE lab_writes (event text, path text, seq bigint, client_ts double precision,
                         server_ts timestamptz DEFAULT clock_timestamp(), PRIMARY KEY (event, path, seq));
GRANT SELECT, INSERT ON lab_writes TO lab;
"""


def cmd_prepare_db(lab, argv):
    """The load generator's role and table, on the primary `--node`. The
    role's statement_timeout bounds a commit that waits for a synchronous
    standby that is gone (the PostgreSQL of a killed Patroni)."""
    import psycopg  # from the Patroni virtualenv

    ap = argparse.ArgumentParser(prog="labtool prepare-db")
    ap.add_argument("--node", required=True)
    a = ap.parse_args(argv)
    with psycopg.connect(lab.conninfo(a.node, user="postgres"), autocommit=True, connect_timeout=5) as c:
        for stmt in filter(None, (s.strip() for s in SCHEMA.split(";"))):
            c.execute(stmt)


def ok_lines(path, since=0.0):
    for line in load_lines(path):
        p = line.split()
        if len(p) >= 7 and p[2] == "ok" and float(p[1]) >= since:
            yield p  # t1 t2 ok label path seq node


def wait_writes(log, paths, node, timeout, since=0.0):
    """Waits until each path has an acknowledged write on `node` that ended after `since`."""
    def done():
        need = set(paths)
        for p in ok_lines(log, since):
            if p[6] == node:
                need.discard(p[4])
        return not need
    wait_for(f"acknowledged writes through {', '.join(paths)} on {node} ({log})", timeout, done, 0.05)


def cmd_load(lab, argv):
    """One numbered INSERT every `interval` through each path (PgBouncer, VIP,
    and directly to each node, the last to measure Patroni's own outage), each
    attempt logged with its start and end time; at the end, every
    acknowledged row is looked up on the primary."""
    import psycopg  # from the Patroni virtualenv

    ap = argparse.ArgumentParser(prog="labtool load")
    ap.add_argument("--out", required=True)
    ap.add_argument("--result", required=True)
    ap.add_argument("--event", required=True)
    ap.add_argument("--duration", type=float, default=300)
    ap.add_argument("--interval", type=float, default=0.02)
    a = ap.parse_args(argv)
    targets = [("pgbouncer", "pgbouncer", lab.conninfo("pgbouncer")), ("vip", "vip", lab.conninfo("vip"))]
    targets += [(f"direct-{n}", "direct", lab.conninfo(n)) for n in lab.topo.db_nodes]
    out = open(a.out, "a", buffering=1)
    lock = threading.Lock()
    stop = stop_on_signals()
    deadline = time.time() + a.duration
    seqs = {}
    acked = []

    def next_seq(path):
        with lock:
            seqs[path] = seqs.get(path, 0) + 1
            return seqs[path]

    def emit(line):
        with lock:
            out.write(line + "\n")

    def worker(label, path, conninfo):
        conn = None
        notices = []
        next_t = time.time()
        while not stop.is_set() and time.time() < deadline:
            seq = next_seq(path)
            t1 = time.time()
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(conninfo, autocommit=True, prepare_threshold=None, **PG_COMMON)
                    conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
                notices.clear()
                row = conn.execute(
                    "INSERT INTO lab_writes(event, path, seq, client_ts) VALUES (%s, %s, %s, %s) "
                    "RETURNING split_part(current_setting('data_directory'), '/', -2)",
                    (a.event, path, seq, t1)).fetchone()
                t2 = time.time()
                # A commit whose wait for the synchronous standby was cancelled
                # (statement_timeout) is committed locally only: PostgreSQL
                # returns success with this WARNING. A careful client does not
                # count it as acknowledged, and neither do we.
                if any("synchronous replication" in n for n in notices):
                    emit(f"{t1:.6f} {t2:.6f} unsafe {label} {path} {seq} {row[0]}")
                else:
                    emit(f"{t1:.6f} {t2:.6f} ok {label} {path} {seq} {row[0]}")
                    with lock:
                        acked.append((path, seq))
            except Exception as e:  # every failure is logged and the loop goes on
                t2 = time.time()
                msg = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
                emit(f"{t1:.6f} {t2:.6f} fail {label} {path} {seq} {type(e).__name__}: {msg}")
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()
                    conn = None
            next_t = pace(next_t, a.interval, stop)
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    threads = [threading.Thread(target=worker, args=t, daemon=True) for t in targets]
    for t in threads:
        t.start()
    while not stop.is_set() and time.time() < deadline:
        stop.wait(0.2)
    stop.set()
    for t in threads:
        t.join(timeout=10)
    emit(f"{time.time():.6f} {time.time():.6f} stopped")
    # Every acknowledged row must be on the primary.
    result = {"event": a.event, "acked": {}, "missing": [], "checked_on": None}
    for path, _ in acked:
        result["acked"][path] = result["acked"].get(path, 0) + 1
    end = time.time() + 30
    while result["checked_on"] is None and time.time() < end:
        for n in lab.topo.db_nodes:
            try:
                with psycopg.connect(lab.conninfo(n), autocommit=True, **PG_COMMON) as c:
                    if not c.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
                        present = set(c.execute(
                            "SELECT path, seq FROM lab_writes WHERE event = %s", (a.event,)).fetchall())
                        result["checked_on"] = n
                        result["missing"] = sorted(set(acked) - present)
                        result["rows_on_primary"] = len(present)
                        break
            except Exception:
                continue
        if result["checked_on"] is None:
            time.sleep(0.2)
    with open(a.result, "w") as f:
        json.dump(result, f, indent=1)
    if result["checked_on"] is None:
        raise LabError("no primary answered for the final check of acknowledged rows")
    if result["missing"]:
        raise LabError(f"{len(result['missing'])} acknowledged rows are missing on {result['checked_on']}: "
                       f"{result['missing'][:10]}")


def cmd_reads(lab, argv):
    """A read every `interval` through PgBouncer, the VIP and directly to each
    node, each attempt logged: `<t1> <t2> ok|fail <label>`."""
    import psycopg  # from the Patroni virtualenv

    ap = argparse.ArgumentParser(prog="faults.py reads")
    ap.add_argument("--out", required=True)
    ap.add_argument("--interval", type=float, default=0.05)
    ap.add_argument("--duration", type=float, default=600)
    a = ap.parse_args(argv)
    targets = [("pgbouncer", lab.conninfo("pgbouncer")), ("vip", lab.conninfo("vip"))]
    targets += [(n, lab.conninfo(n)) for n in lab.topo.db_nodes]
    out = open(a.out, "a", buffering=1)
    lock = threading.Lock()
    stop = stop_on_signals()
    deadline = time.time() + a.duration
    opts = dict(PG_COMMON, application_name="lab-reads")

    def worker(label, conninfo):
        conn = None
        next_t = time.time()
        while not stop.is_set() and time.time() < deadline:
            t1 = time.time()
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(conninfo, autocommit=True, prepare_threshold=None, **opts)
                conn.execute("SELECT 1").fetchone()
                line = f"{t1:.6f} {time.time():.6f} ok {label}"
            except Exception as e:  # every failure is logged and the loop goes on
                msg = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
                line = f"{t1:.6f} {time.time():.6f} fail {label} {type(e).__name__}: {msg}"
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()
                    conn = None
            with lock:
                out.write(line + "\n")
            next_t = pace(next_t, a.interval, stop)
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    threads = [threading.Thread(target=worker, args=t, daemon=True) for t in targets]
    for t in threads:
        t.start()
    while not stop.is_set() and time.time() < deadline:
        stop.wait(0.2)
    stop.set()
    for t in threads:
        t.join(timeout=10)


class Measurement:
    """Starts the sampler and the load generator in the client namespace
    (pids recorded, so lab.sh down stops them too) and stops them by pid."""

    def __init__(self, lab, ev_dir, event_name):
        self.lab, self.dir, self.event_name = lab, ev_dir, event_name
        self.load_log = os.path.join(ev_dir, "load.log")
        self.result_path = os.path.join(ev_dir, "load-result.json")
        self.procs = {}

    def _start(self, name, args, err):
        cmd = ["ip", "netns", "exec", self.lab.ns("client"), VENV_PYTHON, LABTOOL, *args]
        env = dict(os.environ, LAB_ROOT=self.lab.root, LAB_RUN_ID=self.lab.rid)
        p = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=open(err, "a"), stderr=subprocess.STDOUT)
        with open(self.lab.path("pids", f"{name}.pid"), "w") as f:
            f.write(f"{p.pid}\n")
        self.procs[name] = p

    def __enter__(self):
        self._start("ev-sampler", ["sample", "--out", os.path.join(self.dir, "sampler.log")],
                    os.path.join(self.dir, "sampler.err"))
        # Bounded: the load stops by itself after 300 s even if nobody stops it.
        self._start("ev-load", ["load", "--out", self.load_log, "--result", self.result_path,
                                "--event", self.event_name, "--duration", "300"],
                    os.path.join(self.dir, "load.err"))
        return self

    def stop(self, hurry=False):
        # Not interrupted by a second signal: both are stopped and reaped.
        with signals_ignored():
            self._stop(hurry)

    def _stop(self, hurry):
        # The load's final check of acknowledged rows takes up to 30 s; when
        # the event was abandoned (an error, a signal) nobody reads it.
        for name, grace in (("ev-load", 2 if hurry else 60), ("ev-sampler", 2 if hurry else 10)):
            p = self.procs.pop(name, None)
            if p is None:
                continue
            if hurry:
                print(f"  stopping {name} (pid {p.pid}) without waiting for its final check", file=sys.stderr)
            p.terminate()
            try:
                p.wait(grace)
            except subprocess.TimeoutExpired:
                print(f"  {name} (pid {p.pid}) did not stop on SIGTERM within {grace} s; SIGKILL", file=sys.stderr)
                p.kill()
                p.wait(5)
            with contextlib.suppress(OSError):
                os.unlink(self.lab.path("pids", f"{name}.pid"))

    def __exit__(self, exc_type, *_):
        self.stop(hurry=exc_type is not None)
        return False

    def lost_rows(self):
        """(number of acknowledged rows missing, or None when unchecked; why)."""
        try:
            r = json.load(open(self.result_path))
        except (OSError, ValueError):
            return None, f"no result of the final check ({self.result_path}; see load.err)"
        if not r.get("checked_on"):
            return None, "no primary answered for the final check of acknowledged rows"
        return len(r.get("missing", [])), None


class Reads:
    """The read probe around an episode, in the client namespace, its pid
    recorded as ev-reads (so lab.sh down stops it too), stopped by pid."""

    def __init__(self, lab, ev_dir):
        self.lab, self.log = lab, os.path.join(ev_dir, "reads.log")
        self.err = os.path.join(ev_dir, "reads.err")
        self.proc = None

    def __enter__(self):
        cmd = ["ip", "netns", "exec", self.lab.ns("client"), base.VENV_PYTHON, base.LABTOOL,
               "reads", "--out", self.log]
        env = dict(os.environ, LAB_ROOT=self.lab.root, LAB_RUN_ID=self.lab.rid)
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=open(self.err, "a"),
                                     stderr=subprocess.STDOUT)
        with open(self.lab.path("pids", "ev-reads.pid"), "w") as f:
            f.write(f"{self.proc.pid}\n")
        return self

    def __exit__(self, *_):
        with base.signals_ignored():
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            with contextlib.suppress(OSError):
                os.unlink(self.lab.path("pids", "ev-reads.pid"))
        return False

    def wait_ready(self, timeout=60):
        """Waits until a read through every path was answered."""
        want = {"pgbouncer", "vip", *self.lab.topo.db_nodes}

        def ready():
            seen = {p[3] for p in (line.split() for line in base.load_lines(self.log)) if len(p) >= 4 and p[2] == "ok"}
            return want <= seen
        base.wait_for(f"answered reads through {', '.join(sorted(want))} ({self.log})", timeout, ready, 0.05)

    def wait_ok(self, labels, since, timeout):
        """Waits until a read through each of `labels` was answered after `since`."""
        def done():
            seen = {p[3] for p in (line.split() for line in base.load_lines(self.log))
                    if len(p) >= 4 and p[2] == "ok" and float(p[1]) >= since}
            return set(labels) <= seen
        base.wait_for(f"answered reads through {', '.join(labels)} ({self.log})", timeout, done, 0.05)

    def stalls(self, t0, t_end, old):
        """The longest time without an answered read within the episode:
        through PgBouncer, through the VIP, and on the nodes that were
        replicas at the start (the worst of them)."""
        oks = {}
        for line in base.load_lines(self.log):
            p = line.split()
            if len(p) >= 4 and p[2] == "ok":
                oks.setdefault(p[3], []).append(float(p[1]))
        out = {label: base.ms(stall(oks.get(label, []), t0, t_end)) for label in ("pgbouncer", "vip")}
        replicas = [stall(oks.get(n, []), t0, t_end) for n in self.lab.topo.db_nodes if n != old]
        out["replicas"] = base.ms(max(replicas)) if replicas else None
        return out


def stall(oks, t0, t_end):
    """The longest interval within [t0, t_end] without a success (times of
    successes, any order), counted from the last success before t0 and up to
    t_end when the path never answered again."""
    before = [t for t in oks if t <= t0]
    points = [max(before) if before else t0] + sorted(t for t in oks if t0 < t <= t_end) + [t_end]
    return max(b - a for a, b in zip(points, points[1:]))


def write_stalls(load_log, t0, t_end):
    """stall() of the acknowledged writes through PgBouncer, the VIP and
    directly (any node: Patroni's own outage)."""
    oks = {}
    for p in (line.split() for line in base.load_lines(load_log)):
        if len(p) >= 7 and p[2] == "ok":
            oks.setdefault(p[4], []).append(float(p[1]))
    return {path: base.ms(stall(oks.get(path, []), t0, t_end)) for path in ("pgbouncer", "vip", "direct")}


def cmd_sample(lab, argv):
    """Every `interval`: which database namespaces hold the VIP; and, from a
    blocking read, every change of the leader key. Logs only changes (plus the
    sampling statistics at the end), one line each: `<t> vip db1,db2`,
    `<t> leader db2` (`-` for none)."""
    ap = argparse.ArgumentParser(prog="labtool sample")
    ap.add_argument("--out", required=True)
    ap.add_argument("--interval", type=float, default=0.02)
    a = ap.parse_args(argv)
    socks = db_sockets(lab)
    out = open(a.out, "a", buffering=1)
    lock = threading.Lock()
    stop = stop_on_signals()

    def emit(line):
        with lock:
            out.write(line + "\n")

    def leader_loop():
        dcs = lab.dcs()
        last = object()
        token = None
        while not stop.is_set():
            try:
                value, nxt = dcs.read(lab.leader_key, token)
            except (OSError, http.client.HTTPException, ValueError, KeyError) as e:
                emit(f"{time.time():.6f} note leader read failed: {e}")
                stop.wait(0.05)
                token = None
                continue
            now = time.time()
            if value != last:
                emit(f"{now:.6f} leader {value or '-'}")
                last = value
            token = nxt

    threading.Thread(target=leader_loop, daemon=True).start()
    prev = None
    samples, max_gap, last_t = 0, 0.0, None
    next_t = time.time()
    while not stop.is_set():
        now = time.time()
        try:
            holders = vip_holders(lab, socks)
        except OSError as e:  # socket.timeout included: note it and go on sampling
            emit(f"{now:.6f} note sampling failed: {e}")
            next_t = pace(next_t, a.interval, stop)
            continue
        samples += 1
        if last_t is not None:
            max_gap = max(max_gap, now - last_t)
        last_t = now
        if holders != prev:
            emit(f"{now:.6f} vip {','.join(holders) or '-'}")
            prev = holders
        next_t = pace(next_t, a.interval, stop)
    emit(f"{time.time():.6f} end samples={samples} max_gap_ms={max_gap * 1000:.1f}")


CONVERGED_KEYS = ("vip_on_leader_only", "ini_on_leader", "pgbouncer_not_paused")


class Admin:
    """PgBouncer's admin console over its unix socket (a path: reachable from
    any network namespace), one connection kept open."""

    def __init__(self, lab):
        self.conninfo = (f"host={lab.path('pgbouncer')} port={lab.topo.pgb_port} dbname=pgbouncer "
                         f"user=postgres connect_timeout=2")
        self.db = lab.topo.pgb_db
        self.conn = None

    def paused(self):
        """Whether PgBouncer holds the clients' database paused; None when the
        console does not answer."""
        import psycopg  # from the Patroni virtualenv
        try:
            if self.conn is None or self.conn.closed:
                self.conn = psycopg.connect(self.conninfo, autocommit=True)
            # The console speaks the simple query protocol only.
            res = self.conn.pgconn.exec_(b"SHOW DATABASES")
            if res.status != 2:  # PGRES_TUPLES_OK
                raise OSError(f"SHOW DATABASES: status {res.status}")
            names = [res.fname(i) for i in range(res.nfields)]
            name_col, paused_col = names.index(b"name"), names.index(b"paused")
            for row in range(res.ntuples):
                if res.get_value(row, name_col) == self.db.encode():
                    return res.get_value(row, paused_col) not in (b"0", None)
            return None
        except Exception:
            if self.conn is not None:
                with contextlib.suppress(Exception):
                    self.conn.close()
            self.conn = None
            return None

    def close(self):
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()


class Observer:
    """The end state the matrix checks: the leader key, which nodes hold the
    VIP, where pgbouncer.ini points, whether PgBouncer is paused. Made and
    used inside the client namespace. `ini_guard` (a lock) is held while
    pgbouncer.ini is read: the simulated operator's, so that a read never
    falls between its truncate and its write."""

    def __init__(self, lab, ini_guard=None):
        self.lab = lab
        self.socks = netns.db_sockets(lab)
        self.dcs = lab.dcs()
        self.admin = Admin(lab)
        self.ini_guard = ini_guard or contextlib.nullcontext()

    def state(self):
        lab, topo = self.lab, self.lab.topo
        try:
            leader = self.dcs.read(lab.leader_key)[0]
        except (OSError, http.client.HTTPException, ValueError, KeyError):
            leader = None
        # After the read: a slow Consul answers with the state of this moment.
        t = time.time()
        if leader not in topo.db_nodes:
            leader = None
        try:
            holders = netns.vip_holders(lab, self.socks)
        except OSError:
            holders = None
        with self.ini_guard:
            ini = lab.ini_host()
        paused = self.admin.paused()
        return {"t": t, "leader": leader, "holders": holders, "ini": ini, "paused": paused,
                "vip_on_leader_only": bool(leader) and holders == [leader],
                "ini_on_leader": bool(leader) and ini == topo.addr(leader),
                "pgbouncer_not_paused": paused is False}


def converged(s):
    return all(s[k] for k in CONVERGED_KEYS)


def wait_state(lab, since, timeout):
    """Polls the end state (every 50 ms) until it converged or `since +
    timeout` passes; returns (the first converged state, or None; the last
    state seen; when each condition first held). Runs in the client namespace."""
    obs = Observer(lab)
    first_each = {}
    try:
        while True:
            s = obs.state()
            for k in CONVERGED_KEYS:
                if s[k]:
                    first_each.setdefault(k, s["t"])
            if converged(s):
                return s, s, first_each
            if time.time() >= since + timeout:
                return None, s, first_each
            time.sleep(0.05)
    finally:
        obs.admin.close()


class Tracer:
    """The end state sampled every 50 ms on a thread in the client namespace,
    for a whole episode: when it converged after the fault, and whether it
    stayed so (pgbouncer.ini never again on a non-leader, the VIP nowhere
    else, no pause left). `ini_guard`: see Observer."""

    def __init__(self, lab, ini_guard=None):
        self.samples, self.error = [], None
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(lab, ini_guard), daemon=True)
        self.thread.start()

    def _run(self, lab, ini_guard):
        try:
            netns.setns(lab.ns("client"))
            obs = Observer(lab, ini_guard)
            try:
                while not self.stop.is_set():
                    s = obs.state()
                    with self.lock:
                        self.samples.append(s)
                    self.stop.wait(0.05)
            finally:
                obs.admin.close()
        except Exception as e:  # reported by the waits
            self.error = e

    def _since(self, since, other_than):
        with self.lock:
            return [s for s in self.samples if s["t"] >= since and (other_than is None or s["leader"] != other_than)]

    def wait_converged(self, since, timeout, other_than=None):
        """Waits until a sample taken after `since` (with a leader other than
        `other_than`, when given) is converged, at most until since + timeout;
        returns (that sample or None, the last sample, when each condition
        first held after `since`)."""
        while True:
            if self.error:
                raise LabError(f"sampling the end state: {self.error}")
            got = self._since(since, other_than)
            first = next((s for s in got if converged(s)), None)
            late = time.time() >= since + timeout
            if first or late:
                first_each = {}
                for s in got:
                    if first and s["t"] > first["t"]:
                        break
                    for k in CONVERGED_KEYS:
                        if s[k] and (first or s["t"] <= since + timeout):
                            first_each.setdefault(k, s["t"])
                with self.lock:
                    last = self.samples[-1] if self.samples else None
                return first, last, first_each
            time.sleep(0.02)

    def finish(self, after):
        """Stops sampling; the samples after `after` that were not converged."""
        self.stop.set()
        self.thread.join(30)
        if self.error:
            raise LabError(f"sampling the end state: {self.error}")
        with self.lock:
            return [s for s in self.samples if s["t"] > after and not converged(s)], len(self.samples)


def observe_once(lab, ini_guard=None):
    obs = Observer(lab, ini_guard)
    try:
        return obs.state()
    finally:
        obs.admin.close()
