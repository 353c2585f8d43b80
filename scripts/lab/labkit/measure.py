"""Load and sampling: what a scenario measures around an action, one
implementation shared by the events (demo, bench), the fault matrix and the
backup and adopt scenarios.

- The load generator (`labtool.py load`, and the fault matrix's read probe
  `labtool.py reads`): per path (PgBouncer, the VIP, each node directly) one
  loop, client_loop(), an attempt every interval on a connection kept open,
  each attempt logged `<t1> <t2> ok|unsafe|fail <what> ...`; the writes
  number their rows and check at the end that every acknowledged row is on
  the primary.
- The sampler: Sampler reads the lab's observable state from the client
  namespace (which nodes hold the VIP, the leader key, where pgbouncer.ini
  points, whether PgBouncer is paused). `labtool.py sample` logs the VIP's
  holders every 20 ms and every change of the leader key (sampler.log);
  Tracer keeps the whole end state every 50 ms on a thread for the fault
  matrix; the waits (events.wait_converged, wait_state) poll it.
- Measurement: the sampler, the load and (for the fault matrix) the read
  probe started as processes in the client namespace around an action, their
  pids recorded (lab.sh down stops them too), stopped by pid; then the logs'
  readers (lost rows, stalls, the reads' waits).

Every loop here runs at a fixed rate (pace) until its stop event is set (a
signal, for the processes) or its deadline passes.
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

from . import netns
from .base import LABTOOL, LabError, VENV_PYTHON, load_lines, ms, signals_ignored, wait_for


# ---- fixed-rate loops ---------------------------------------------------------------------

def pace(next_t, interval, stop):
    """Waits for the next tick of a fixed-rate loop (or until stopped); a loop
    that fell behind starts again from now instead of bursting to catch up."""
    next_t += interval
    delay = next_t - time.time()
    if delay > 0:
        stop.wait(delay)
        return next_t
    return time.time()


def every(interval, stop, tick):
    """Calls tick() every `interval` (fixed rate, pace) until `stop` is set."""
    next_t = time.time()
    while not stop.is_set():
        tick()
        next_t = pace(next_t, interval, stop)


def stop_on_signals():
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    return stop


def line_log(path):
    """emit(line): appends a line to `path`, one writer at a time."""
    out = open(path, "a", buffering=1)
    lock = threading.Lock()

    def emit(line):
        with lock:
            out.write(line + "\n")
    return emit


# ---- the load generator and the read probe ------------------------------------------------

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


def client_loop(connect, begin, attempt, emit, interval, stop, deadline, width):
    """One path of the load generator: every `interval` until `stop` or
    `deadline`, begin() names the attempt (its fields: label, and for writes
    path and sequence number), then attempt(conn, t1, fields) -> (outcome,
    detail) runs it on a connection kept open (connect() makes it, again after
    a failure). Each attempt is logged `<t1> <t2> <outcome> <fields>
    [<detail>]`, a failure `<t1> <t2> fail <fields> <error>: <its first
    line, at most `width` characters>`, and the loop goes on."""
    conn = None
    next_t = time.time()
    while not stop.is_set() and time.time() < deadline:
        fields = begin()
        what = " ".join(str(f) for f in fields)
        t1 = time.time()
        try:
            if conn is None or conn.closed:
                conn = connect()
            outcome, detail = attempt(conn, t1, fields)
            t2 = time.time()
            emit(f"{t1:.6f} {t2:.6f} {outcome} {what}" + (f" {detail}" if detail else ""))
        except Exception as e:  # every failure is logged and the loop goes on
            t2 = time.time()
            msg = str(e).strip().splitlines()[0][:width] if str(e).strip() else type(e).__name__
            emit(f"{t1:.6f} {t2:.6f} fail {what} {type(e).__name__}: {msg}")
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()
                conn = None
        next_t = pace(next_t, interval, stop)
    if conn is not None:
        with contextlib.suppress(Exception):
            conn.close()


def run_clients(loops, stop, deadline):
    """Runs each of `loops` (callables) on a thread until `stop` or
    `deadline`, then stops and joins them (bounded)."""
    threads = [threading.Thread(target=fn, daemon=True) for fn in loops]
    for t in threads:
        t.start()
    while not stop.is_set() and time.time() < deadline:
        stop.wait(0.2)
    stop.set()
    for t in threads:
        t.join(timeout=10)


def cmd_load(lab, argv):
    """One numbered INSERT every `interval` through each path (PgBouncer, VIP,
    and directly to each node, the last to measure Patroni's own outage), each
    attempt logged with its start and end time (`<t1> <t2> ok|unsafe|fail
    <label> <path> <seq> <node>`); at the end, every acknowledged row is
    looked up on the primary."""
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
    emit = line_log(a.out)
    lock = threading.Lock()
    stop = stop_on_signals()
    deadline = time.time() + a.duration
    seqs = {}
    acked = []

    def writes(label, path, conninfo):
        notices = []

        def connect():
            conn = psycopg.connect(conninfo, autocommit=True, prepare_threshold=None, **PG_COMMON)
            conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
            return conn

        def begin():
            with lock:
                seqs[path] = seqs.get(path, 0) + 1
                return label, path, seqs[path]

        def insert(conn, t1, fields):
            seq = fields[2]
            notices.clear()
            row = conn.execute(
                "INSERT INTO lab_writes(event, path, seq, client_ts) VALUES (%s, %s, %s, %s) "
                "RETURNING split_part(current_setting('data_directory'), '/', -2)",
                (a.event, path, seq, t1)).fetchone()
            # A commit whose wait for the synchronous standby was cancelled
            # (statement_timeout) is committed locally only: PostgreSQL
            # returns success with this WARNING. A careful client does not
            # count it as acknowledged, and neither do we.
            if any("synchronous replication" in n for n in notices):
                return "unsafe", row[0]
            with lock:
                acked.append((path, seq))
            return "ok", row[0]
        return lambda: client_loop(connect, begin, insert, emit, a.interval, stop, deadline, 160)

    run_clients([writes(*t) for t in targets], stop, deadline)
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
    """The fault matrix's read probe: a `SELECT 1` every `interval` through
    PgBouncer, the VIP and directly to each node, each attempt logged:
    `<t1> <t2> ok|fail <label>`."""
    import psycopg  # from the Patroni virtualenv

    ap = argparse.ArgumentParser(prog="labtool reads")
    ap.add_argument("--out", required=True)
    ap.add_argument("--interval", type=float, default=0.05)
    ap.add_argument("--duration", type=float, default=600)
    a = ap.parse_args(argv)
    targets = [("pgbouncer", lab.conninfo("pgbouncer")), ("vip", lab.conninfo("vip"))]
    targets += [(n, lab.conninfo(n)) for n in lab.topo.db_nodes]
    emit = line_log(a.out)
    stop = stop_on_signals()
    deadline = time.time() + a.duration
    opts = dict(PG_COMMON, application_name="lab-reads")

    def select(conn, _t1, _fields):
        conn.execute("SELECT 1").fetchone()
        return "ok", ""

    def reads(label, conninfo):
        return lambda: client_loop(
            lambda: psycopg.connect(conninfo, autocommit=True, prepare_threshold=None, **opts),
            lambda: (label,), select, emit, a.interval, stop, deadline, 120)

    run_clients([reads(*t) for t in targets], stop, deadline)


# ---- measurement: the probes as processes around an action --------------------------------

class Measurement:
    """Starts the sampler, the load generator and, with `reads`, the read
    probe in the client namespace (`labtool.py sample | load | reads`, pids
    recorded as ev-sampler, ev-load, ev-reads, so lab.sh down stops them too)
    and stops them by pid."""

    # name: (seconds to wait after SIGTERM, the same when the action was abandoned)
    # The load's final check of acknowledged rows takes up to 30 s; when
    # the event was abandoned (an error, a signal) nobody reads it.
    GRACE = {"ev-reads": (10, 10), "ev-load": (60, 2), "ev-sampler": (10, 2)}

    def __init__(self, lab, ev_dir, event_name, reads=False):
        self.lab, self.dir, self.event_name = lab, ev_dir, event_name
        self.load_log = os.path.join(ev_dir, "load.log")
        self.result_path = os.path.join(ev_dir, "load-result.json")
        self.reads = Reads(lab, ev_dir) if reads else None
        self.procs = {}

    def _start(self, name, args, err):
        cmd = ["ip", "netns", "exec", self.lab.ns("client"), VENV_PYTHON, LABTOOL, *args]
        env = dict(os.environ, LAB_ROOT=self.lab.root, LAB_RUN_ID=self.lab.rid)
        p = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=open(err, "a"), stderr=subprocess.STDOUT)
        with open(self.lab.path("pids", f"{name}.pid"), "w") as f:
            f.write(f"{p.pid}\n")
        self.procs[name] = p

    def __enter__(self):
        try:
            self._start("ev-sampler", ["sample", "--out", os.path.join(self.dir, "sampler.log")],
                        os.path.join(self.dir, "sampler.err"))
            # Bounded: the load stops by itself after 300 s even if nobody stops it.
            self._start("ev-load", ["load", "--out", self.load_log, "--result", self.result_path,
                                    "--event", self.event_name, "--duration", "300"],
                        os.path.join(self.dir, "load.err"))
            if self.reads:
                self._start("ev-reads", ["reads", "--out", self.reads.log], self.reads.err)
        except BaseException:
            self.stop(hurry=True)
            raise
        return self

    def stop(self, hurry=False):
        # Not interrupted by a second signal: all are stopped and reaped.
        with signals_ignored():
            self._stop(hurry)

    def _stop(self, hurry):
        for name, (grace, hurried) in self.GRACE.items():
            p = self.procs.pop(name, None)
            if p is None:
                continue
            if hurry:
                grace = hurried
                if name == "ev-load":
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
    """The read probe's log (reads.log in the event's directory; Measurement
    runs the probe): its waits and the stalls it saw."""

    def __init__(self, lab, ev_dir):
        self.lab, self.log = lab, os.path.join(ev_dir, "reads.log")
        self.err = os.path.join(ev_dir, "reads.err")

    def wait_ready(self, timeout=60):
        """Waits until a read through every path was answered."""
        want = {"pgbouncer", "vip", *self.lab.topo.db_nodes}

        def ready():
            seen = {p[3] for p in (line.split() for line in load_lines(self.log)) if len(p) >= 4 and p[2] == "ok"}
            return want <= seen
        wait_for(f"answered reads through {', '.join(sorted(want))} ({self.log})", timeout, ready, 0.05)

    def wait_ok(self, labels, since, timeout):
        """Waits until a read through each of `labels` was answered after `since`."""
        def done():
            seen = {p[3] for p in (line.split() for line in load_lines(self.log))
                    if len(p) >= 4 and p[2] == "ok" and float(p[1]) >= since}
            return set(labels) <= seen
        wait_for(f"answered reads through {', '.join(labels)} ({self.log})", timeout, done, 0.05)

    def stalls(self, t0, t_end, old):
        """The longest time without an answered read within the episode:
        through PgBouncer, through the VIP, and on the nodes that were
        replicas at the start (the worst of them)."""
        oks = {}
        for line in load_lines(self.log):
            p = line.split()
            if len(p) >= 4 and p[2] == "ok":
                oks.setdefault(p[3], []).append(float(p[1]))
        out = {label: ms(stall(oks.get(label, []), t0, t_end)) for label in ("pgbouncer", "vip")}
        replicas = [stall(oks.get(n, []), t0, t_end) for n in self.lab.topo.db_nodes if n != old]
        out["replicas"] = ms(max(replicas)) if replicas else None
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
    for p in (line.split() for line in load_lines(load_log)):
        if len(p) >= 7 and p[2] == "ok":
            oks.setdefault(p[4], []).append(float(p[1]))
    return {path: ms(stall(oks.get(path, []), t0, t_end)) for path in ("pgbouncer", "vip", "direct")}


# ---- the sampler --------------------------------------------------------------------------

def cmd_sample(lab, argv):
    """Every `interval`: which database namespaces hold the VIP; and, from a
    blocking read, every change of the leader key. Logs only changes (plus the
    sampling statistics at the end), one line each: `<t> vip db1,db2`,
    `<t> leader db2` (`-` for none)."""
    ap = argparse.ArgumentParser(prog="labtool sample")
    ap.add_argument("--out", required=True)
    ap.add_argument("--interval", type=float, default=0.02)
    a = ap.parse_args(argv)
    sampler = Sampler(lab)
    emit = line_log(a.out)
    stop = stop_on_signals()

    def leader_loop():
        last = object()
        token = None
        while not stop.is_set():
            try:
                value, nxt = sampler.read(lab.leader_key, token)
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
    seen = {"prev": None, "samples": 0, "max_gap": 0.0, "last_t": None}

    def tick():
        now = time.time()
        try:
            holders = sampler.holders()
        except OSError as e:  # socket.timeout included: note it and go on sampling
            emit(f"{now:.6f} note sampling failed: {e}")
            return
        seen["samples"] += 1
        if seen["last_t"] is not None:
            seen["max_gap"] = max(seen["max_gap"], now - seen["last_t"])
        seen["last_t"] = now
        if holders != seen["prev"]:
            emit(f"{now:.6f} vip {','.join(holders) or '-'}")
            seen["prev"] = holders

    every(a.interval, stop, tick)
    emit(f"{time.time():.6f} end samples={seen['samples']} max_gap_ms={seen['max_gap'] * 1000:.1f}")


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


class Sampler:
    """The lab's observable state, read from the client namespace (made and
    used there): which database nodes hold the VIP (a netlink socket in each
    node's namespace), the leader key (and the vip-holder record) in the
    DCS, where pgbouncer.ini points, whether PgBouncer is paused (its admin
    console, opened when first asked). `ini_guard` (a lock) is held while
    pgbouncer.ini is read: the fault matrix's simulated operator's, so that
    a read never falls between its truncate and its write."""

    def __init__(self, lab, ini_guard=None):
        self.lab = lab
        self.socks = netns.db_sockets(lab)
        self.dcs = lab.dcs()
        self.admin = Admin(lab)
        self.ini_guard = ini_guard or contextlib.nullcontext()

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.close()
        return False

    def close(self):
        self.admin.close()

    def holders(self):
        """The nodes holding the VIP, sorted."""
        return netns.vip_holders(self.lab, self.socks)

    def read(self, key, token=None):
        """(value, token) of a DCS key; a token makes it a blocking read."""
        return self.dcs.read(key, token)

    def leader(self):
        return self.dcs.read(self.lab.leader_key)[0]

    def state(self):
        """The end state the fault matrix checks, with the time it was taken."""
        lab, topo = self.lab, self.lab.topo
        try:
            leader = self.leader()
        except (OSError, http.client.HTTPException, ValueError, KeyError):
            leader = None
        # After the read: a slow Consul answers with the state of this moment.
        t = time.time()
        if leader not in topo.db_nodes:
            leader = None
        try:
            holders = self.holders()
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
    obs = Sampler(lab)
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
        obs.close()


class Tracer:
    """The end state (Sampler.state) every 50 ms on a thread in the client
    namespace, for a whole episode of the fault matrix: when it converged
    after the fault, and whether it stayed so (pgbouncer.ini never again on a
    non-leader, the VIP nowhere else, no pause left). `ini_guard`: see Sampler."""

    def __init__(self, lab, ini_guard=None):
        self.samples, self.error = [], None
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(lab, ini_guard), daemon=True)
        self.thread.start()

    def _run(self, lab, ini_guard):
        try:
            netns.setns(lab.ns("client"))
            with Sampler(lab, ini_guard) as sampler:
                def tick():
                    s = sampler.state()
                    with self.lock:
                        self.samples.append(s)
                every(0.05, self.stop, tick)
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
        """Stops sampling; the samples after `after` that were not converged.
        A sample without a leader key is not judged: Patroni may drop and
        take its key again after a fault (real Consul after its servers were
        frozen with failsafe_mode on), and with no leader there is nothing
        to converge to; the hook keeps what it has then, and the VIP on two
        nodes is measured apart."""
        self.stop.set()
        self.thread.join(30)
        if self.error:
            raise LabError(f"sampling the end state: {self.error}")
        with self.lock:
            return [s for s in self.samples
                    if s["t"] > after and s["leader"] and not converged(s)], len(self.samples)


def observe_once(lab, ini_guard=None):
    with Sampler(lab, ini_guard) as sampler:
        return sampler.state()
