#!/usr/bin/env python3
"""The lab's measuring side, driven by scripts/lab.sh: the 20 ms address and
leader-key sampler, the load generator, the bounded waits that need JSON or
SQL, and the per-event timeline analysis and bench table.

Runs with the Patroni virtualenv's Python (it has psycopg), as root, inside the
lab's client namespace; the sampler enters the database namespaces with
setns(2) only to open its netlink sockets there. Every wait has a deadline and
fails naming what it waited for. Times are wall-clock seconds since the epoch
(float), so they line up with the hook's RFC 3339 log lines.
"""

import argparse
import base64
import ctypes
import datetime
import http.client
import json
import os
import re
import signal
import socket
import statistics
import struct
import sys
import threading
import time

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL("libc.so.6", use_errno=True)


def setns(name):
    """Moves the calling thread into network namespace `name`."""
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into {name}: {os.strerror(err)}")
    finally:
        os.close(fd)


def die(msg):
    print(f"labtool: {msg}", file=sys.stderr)
    sys.exit(1)


def wait_for(what, timeout, cond, interval=0.05):
    """Polls cond() until it returns something truthy; exits naming `what`."""
    end = time.time() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.time() >= end:
            die(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


# ---- netlink: IPv4 addresses of one namespace ------------------------------

RTM_NEWADDR, RTM_GETADDR = 20, 22
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
IFA_LOCAL = 2


class AddrSocket:
    """A NETLINK_ROUTE socket opened inside one namespace; it stays bound to
    that namespace whatever namespace the thread is in later."""

    def __init__(self, ns):
        setns(ns)
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self.sock.bind((0, 0))
        self.sock.settimeout(1.0)
        self.seq = 0
        self.ns = ns

    def ipv4(self):
        """The set of local IPv4 addresses (strings) in the namespace."""
        self.seq += 1
        body = struct.pack("BBBBI", socket.AF_INET, 0, 0, 0, 0)
        hdr = struct.pack("IHHII", 16 + len(body), RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, self.seq, 0)
        self.sock.send(hdr + body)
        found = set()
        while True:
            data = self.sock.recv(65536)
            off = 0
            while off + 16 <= len(data):
                length, mtype, _flags, seq, _pid = struct.unpack_from("IHHII", data, off)
                if length < 16:
                    return found
                if seq == self.seq:
                    if mtype == NLMSG_DONE:
                        return found
                    if mtype == NLMSG_ERROR:
                        raise OSError(f"netlink error dumping addresses in {self.ns}")
                    if mtype == RTM_NEWADDR:
                        a = off + 16 + 8  # after nlmsghdr and ifaddrmsg
                        end = off + length
                        while a + 4 <= end:
                            alen, atype = struct.unpack_from("HH", data, a)
                            if alen < 4:
                                break
                            if atype == IFA_LOCAL and alen >= 8:
                                found.add(socket.inet_ntoa(data[a + 4:a + 8]))
                            a += (alen + 3) & ~3
                off += (length + 3) & ~3


# ---- Consul (the double) ---------------------------------------------------

def consul_get(addr, key, index=None, wait=None, timeout=5.0):
    """(value or None, X-Consul-Index) of one key."""
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    path = f"/v1/kv/{key}"
    if index is not None:
        path += f"?index={index}&wait={wait}"
    conn.request("GET", path)
    resp = conn.getresponse()
    body = resp.read()
    idx = int(resp.getheader("X-Consul-Index", "0"))
    conn.close()
    if resp.status == 404:
        return None, idx
    if resp.status != 200:
        raise OSError(f"GET {path}: HTTP {resp.status}")
    entry = json.loads(body)[0]
    raw = entry.get("Value")
    return (base64.b64decode(raw).decode() if raw else ""), idx


def http_json(hostport, path, timeout=2.0):
    host, port = hostport.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return json.loads(resp.read())
    finally:
        conn.close()


# ---- sampler ---------------------------------------------------------------

def pace(next_t, interval, stop):
    """Waits for the next tick of a fixed-rate loop (or until stopped); a loop
    that fell behind starts again from now instead of bursting to catch up."""
    next_t += interval
    delay = next_t - time.time()
    if delay > 0:
        stop.wait(delay)
        return next_t
    return time.time()


def cmd_sample(a):
    """Every `interval`: which database namespaces hold the VIP; and, from a
    blocking query, every change of the leader key. Logs only changes (plus
    the sampling statistics at the end), one line each: `<t> vip db1,db2`,
    `<t> leader db2` (`-` for none)."""
    dbs = [kv.split("=", 1) for kv in a.db]
    socks = [(name, AddrSocket(ns)) for name, ns in dbs]
    out = open(a.out, "a", buffering=1)
    lock = threading.Lock()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    def emit(line):
        with lock:
            out.write(line + "\n")

    def leader_loop():
        setns(a.consul_ns)
        last = object()
        index = None
        while not stop.is_set():
            try:
                value, idx = consul_get(a.consul, a.key, index, "2s" if index else None)
            except (OSError, http.client.HTTPException, ValueError) as e:
                emit(f"{time.time():.6f} note leader read failed: {e}")
                stop.wait(0.05)
                index = None
                continue
            now = time.time()
            if value != last:
                emit(f"{now:.6f} leader {value or '-'}")
                last = value
            # An index that went backwards means a reset; start over (consul-api.md).
            index = idx if (index is None or idx >= index) else None

    t = threading.Thread(target=leader_loop, daemon=True)
    t.start()
    prev = None
    samples, max_gap, last_t = 0, 0.0, None
    next_t = time.time()
    while not stop.is_set():
        now = time.time()
        try:
            holders = sorted(name for name, s in socks if a.vip in s.ipv4())
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


def cmd_vip_holders(a):
    """Prints the database namespaces that hold the VIP now."""
    dbs = [kv.split("=", 1) for kv in a.db]
    print(",".join(name for name, ns in dbs if a.vip in AddrSocket(ns).ipv4()) or "-")


# ---- load generator --------------------------------------------------------

def cmd_load(a):
    """One numbered INSERT every `interval` through each path (PgBouncer, VIP,
    and directly to each node, the last to measure Patroni's own outage), each
    attempt logged with its start and end time; at the end, every
    acknowledged row is looked up on the primary."""
    import psycopg  # from the Patroni virtualenv

    targets = []  # (label, path, conninfo)
    for spec in a.target:
        label, conninfo = spec.split("=", 1)
        path = "direct" if label.startswith("direct-") else label
        targets.append((label, path, conninfo))
    common = dict(connect_timeout=1, tcp_user_timeout=1500, keepalives=1,
                  keepalives_idle=1, keepalives_interval=1, keepalives_count=2,
                  application_name="lab-load")
    out = open(a.out, "a", buffering=1)
    lock = threading.Lock()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
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
                    conn = psycopg.connect(conninfo, autocommit=True, prepare_threshold=None, **common)
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
                    try:
                        conn.close()
                    except Exception:
                        pass
                    conn = None
            next_t = pace(next_t, a.interval, stop)
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass

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
    primary = None
    end = time.time() + 30
    while primary is None and time.time() < end:
        for spec in a.direct_check:
            name, conninfo = spec.split("=", 1)
            try:
                with psycopg.connect(conninfo, autocommit=True, **common) as c:
                    if not c.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
                        present = set(c.execute(
                            "SELECT path, seq FROM lab_writes WHERE event = %s", (a.event,)).fetchall())
                        primary = name
                        result["missing"] = sorted(set(acked) - present)
                        result["rows_on_primary"] = len(present)
                        break
            except Exception:
                continue
        if primary is None:
            time.sleep(0.2)
    result["checked_on"] = primary
    with open(a.result, "w") as f:
        json.dump(result, f, indent=1)
    if primary is None:
        die("no primary answered for the final check of acknowledged rows")
    if result["missing"]:
        die(f"{len(result['missing'])} acknowledged rows are missing on {primary}: {result['missing'][:10]}")


# ---- waits -----------------------------------------------------------------

def cluster_state(apis):
    for api in apis:
        try:
            return http_json(api, "/cluster")
        except (OSError, ValueError, http.client.HTTPException):
            continue
    return None


def cmd_wait_healthy(a):
    """Waits until the cluster has a leader and every other member streams
    from it (and, in synchronous mode, one is the synchronous standby)."""
    def healthy():
        c = cluster_state(a.api)
        if not c:
            return None
        members = c.get("members", [])
        leaders = [m for m in members if m.get("role") in ("leader", "master", "primary") and m.get("state") == "running"]
        others = [m for m in members if m not in leaders]
        if len(leaders) != 1 or len(members) != a.members:
            return None
        if not all(m.get("state") == "streaming" for m in others):
            return None
        if a.sync and not any(m.get("role") == "sync_standby" for m in others):
            return None
        return leaders[0]["name"]
    print(wait_for(f"a leader and {a.members - 1} streaming replicas (Patroni /cluster)", a.timeout, healthy, 0.2))


def cmd_leader(a):
    value, _ = consul_get(a.consul, a.key)
    print(value or "-")


def load_lines(path):
    try:
        with open(path) as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


def ok_lines(path, since=0.0):
    for line in load_lines(path):
        p = line.split()
        if len(p) >= 7 and p[2] == "ok" and float(p[1]) >= since:
            yield p  # t1 t2 ok label path seq node


def cmd_wait_writes(a):
    """Waits until each path has an acknowledged write on node `--node`
    (any node when `-`) that ended after `--since`."""
    def done():
        need = set(a.paths)
        for p in ok_lines(a.log, a.since):
            if a.node in ("-", p[6]):
                need.discard(p[4])
        return not need
    wait_for(f"acknowledged writes through {', '.join(a.paths)} on {a.node} ({a.log})", a.timeout, done, 0.05)


def ini_host(ini, db):
    for line in load_lines(ini):
        m = re.match(rf"^\s*{re.escape(db)}\s*=(.*)$", line)
        if m:
            h = re.search(r"\bhost=(\S+)", m.group(1))
            return h.group(1) if h else None
    return None


def cmd_wait_converged(a):
    """After an event: a new leader other than `--old`; the VIP on it alone
    (when a VIP manager runs); pgbouncer.ini pointing at it; writes
    acknowledged by it through PgBouncer and through the VIP."""
    dbs = dict(kv.split("=", 1) for kv in a.db)
    addr = dict(kv.split("=", 1) for kv in a.addr)
    socks = {name: AddrSocket(ns) for name, ns in dbs.items()}
    setns(a.client_ns)  # back where HTTP to the double works
    state = {}

    def step(what, cond):
        state["what"] = what
        return wait_for(what, max(1.0, a.deadline - time.time()), cond, 0.02)

    new = step(f"a leader other than {a.old} in {a.key}",
               lambda: (lambda v: v if v and v != a.old else None)(consul_get(a.consul, a.key)[0]))
    step(f"the VIP {a.vip} on {new} and on no other node",
         lambda: [n for n, s in socks.items() if a.vip in s.ipv4()] == [new])
    step(f"{a.ini} to point {a.db_name} at {new} ({addr[new]})",
         lambda: ini_host(a.ini, a.db_name) == addr[new])
    if a.holder:
        def holder():
            raw, _ = consul_get(a.consul, a.holder)
            try:
                return raw and json.loads(raw).get("member") == new
            except ValueError:
                return False
        step(f"{a.holder} to name {new}", holder)
    paths = set(a.paths)

    def writes():
        seen = {p[4] for p in ok_lines(a.log, a.since) if p[6] == new}
        return paths <= seen
    step(f"acknowledged writes through {', '.join(sorted(paths))} on {new}", writes)
    print(new)


# ---- analysis --------------------------------------------------------------

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


def ms(x):
    return None if x is None else round(x * 1000.0, 1)


def gaps(oks, t0, t_end):
    """The longest interval without an acknowledged write, between the last
    success before the event's effect and the first after it, within
    [t0 - 1 s, t_end]; returns (outage, last_before, first_after)."""
    times = sorted(t2 for t2 in oks)
    best = (0.0, None, None)
    prev = None
    for t in times:
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
    t_end = ev.get("t_end", samples and float(samples[-1].split()[0]) or t0 + 60)

    # Leader key.
    leader_gone = next((t for t, v in leader_changes if t >= t0 - 0.5 and v != old), None)
    leader_new = next((t for t, v in leader_changes if t >= t0 - 0.5 and v == new), None)

    # VIP: times with two holders; when the old node lost it; when the new got it.
    two = 0.0
    two_spans = []
    for i, (t, h) in enumerate(vip_changes):
        nxt = vip_changes[i + 1][0] if i + 1 < len(vip_changes) else t_end
        if len(h) >= 2:
            two += nxt - t
            two_spans.append((t, nxt, h))
    vip_off_old = next((t for t, h in vip_changes if t >= t0 - 0.5 and old not in h), None)
    vip_on_new = next((t for t, h in vip_changes if t >= t0 - 0.5 and new in h), None)

    # Hook and vip-manager lines.
    hooks = []
    for name in ev["nodes"]:
        hooks += list(hook_lines(os.path.join(ev["run"], "logs", f"{name}-patroni.log"), name))
        hooks += list(hook_lines(os.path.join(ev["run"], "logs", f"{name}-safety-net.log"), name + "/safety-net"))
    # The watch's reconcile logs to the double's stderr (it runs the handler);
    # the safety-net timer's to its own file.
    pgb = sorted(list(hook_lines(os.path.join(ev["run"], "logs", "consul.log"), "pgbouncer/watch"))
                 + list(hook_lines(os.path.join(ev["run"], "logs", "pgbouncer-safety-net.log"), "pgbouncer/safety-net")),
                 key=lambda h: h["t"])
    after = [h for h in hooks if h["t"] >= t0 - 0.5]
    cb_new = next((h for h in after if h["source"] == new and h["action"] in ("on_role_change", "on_start")
                   and h["role"] in ("primary", "master", "promoted")), None)
    cb_old = next((h for h in after if h["source"] == old and h["action"] in ("on_role_change", "on_stop", "on_start")), None)
    vip_added = next((h for h in after if h["source"].startswith(new) and h["msg"].startswith("added ")), None)
    vip_removed = next((h for h in after if h["source"].startswith(old) and h["msg"].startswith("removed ")), None)
    rewrote = next((h for h in pgb if h["t"] >= t0 - 0.5 and h["msg"].startswith("rewrote ")), None)
    reloaded = next((h for h in pgb if h["t"] >= t0 - 0.5 and h["msg"].startswith("reloaded pgbouncer")), None)

    # Client writes.
    load = [l.split() for l in load_lines(os.path.join(ev_dir, "load.log"))]
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
    last_old = max((float(p[1]) for p in ok if p[3] == f"direct-{old}" and p[6] == old and float(p[1]) <= (per["direct"]["first_on_new"] or t_end)), default=None)
    first_new = per["direct"]["first_on_new"]
    patroni_outage = (first_new - last_old) if (first_new and last_old) else None

    check = {}
    try:
        check = json.load(open(os.path.join(ev_dir, "load-result.json")))
    except (OSError, ValueError):
        pass

    def rel(t):
        return None if t is None else round((t - t0) * 1000.0, 1)

    timeline = [
        ("event issued", t0, ev["kind"] + " of " + old),
        ("last direct write accepted by old primary", last_old, old),
        ("leader key no longer names old primary", leader_gone, ""),
        ("leader key names new primary", leader_new, new),
        ("callback on old node", cb_old and cb_old["t"], cb_old and f"{cb_old['action']} {cb_old['role']}: {cb_old['msg']}"),
        ("VIP removed from old node (hook log)", vip_removed and vip_removed["t"], vip_removed and vip_removed["source"]),
        ("VIP gone from old node (sampler)", vip_off_old, old),
        ("callback on new primary", cb_new and cb_new["t"], cb_new and f"{cb_new['action']} {cb_new['role']}: {cb_new['msg']}"),
        ("VIP added on new primary (hook log)", vip_added and vip_added["t"], vip_added and vip_added["source"]),
        ("VIP seen on new primary (sampler)", vip_on_new, new),
        ("pgbouncer.ini rewritten", rewrote and rewrote["t"], rewrote and f"{rewrote['source']}: {rewrote['msg']}"),
        ("PgBouncer reloaded", reloaded and reloaded["t"], ""),
        ("first direct write on new primary", first_new, new),
        ("first write through PgBouncer on new primary", per["pgbouncer"]["first_on_new"], ""),
        ("first write through the VIP on new primary", per["vip"]["first_on_new"], ""),
    ]
    cb_t = cb_new and cb_new["t"]
    result = {
        "kind": ev["kind"], "mode": ev.get("mode", "hook"), "old": old, "new": new, "t0": t0,
        "converged": ev.get("converged", False),
        "timeline_ms": [{"what": w, "t_ms": rel(t), "detail": d or ""} for w, t, d in timeline],
        "patroni_outage_ms": ms(patroni_outage),
        "pgbouncer_outage_ms": per["pgbouncer"]["outage_ms"],
        "vip_outage_ms": per["vip"]["outage_ms"],
        "paths": per,
        "vip_after_callback_ms": ms(vip_on_new - cb_t) if (vip_on_new and cb_t) else None,
        "vip_after_leader_key_ms": ms(vip_on_new - leader_new) if (vip_on_new and leader_new) else None,
        "ini_after_leader_key_ms": ms(rewrote["t"] - leader_new) if (rewrote and leader_new) else None,
        "two_holders_ms": ms(two),
        "two_holder_spans": [{"from_ms": rel(a), "to_ms": rel(b), "holders": h} for a, b, h in two_spans],
        "old_kept_vip_after_new_got_it_ms": ms(vip_off_old - vip_on_new) if (vip_off_old and vip_on_new and vip_off_old > vip_on_new) else 0.0,
        "sampler": sample_stats,
        "acked": check.get("acked"), "missing_acked_rows": len(check.get("missing", [])) if check else None,
        "checked_on": check.get("checked_on"),
    }
    return result


def print_timeline(r):
    print(f"--- {r['kind']} ({r['mode']}): {r['old']} -> {r['new']}")
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
    print(f"  VIP on new primary {r['vip_after_callback_ms']} ms after its callback, "
          f"{r['vip_after_leader_key_ms']} ms after the leader key; ini rewritten {r['ini_after_leader_key_ms']} ms after the leader key")
    print(f"  VIP on two nodes: {r['two_holders_ms']} ms in total"
          + (f" (old node kept it {r['old_kept_vip_after_new_got_it_ms']} ms after the new one got it)" if r['two_holders_ms'] else ""))
    p = r["paths"]
    print(f"  failed attempts: PgBouncer {p['pgbouncer']['failed_attempts']}, VIP {p['vip']['failed_attempts']}; "
          f"commits not acknowledged (sync wait cancelled): PgBouncer {p['pgbouncer']['unsafe_commits']}, VIP {p['vip']['unsafe_commits']}, direct {p['direct']['unsafe_commits']}")
    print(f"  acknowledged rows: {r['acked']}, missing on {r['checked_on']}: {r['missing_acked_rows']}; sampler {r['sampler']}")


def cmd_analyze(a):
    r = analyze(a.event_dir)
    with open(os.path.join(a.event_dir, "result.json"), "w") as f:
        json.dump(r, f, indent=1)
    print_timeline(r)


def cmd_table(a):
    """Medians and maxima per (mode, event kind), Markdown."""
    groups = {}
    for path in a.results:
        r = json.load(open(path))
        groups.setdefault((r["mode"], r["kind"]), []).append(r)
    cols = [("Patroni own outage", "patroni_outage_ms"), ("PgBouncer outage", "pgbouncer_outage_ms"),
            ("PgBouncer - Patroni", None), ("VIP outage", "vip_outage_ms"),
            ("VIP after on_role_change", "vip_after_callback_ms"), ("VIP after leader key", "vip_after_leader_key_ms"),
            ("ini after leader key", "ini_after_leader_key_ms"), ("VIP on two nodes", "two_holders_ms")]

    def val(r, key):
        if key is None:
            a_, b_ = r["pgbouncer_outage_ms"], r["patroni_outage_ms"]
            return None if a_ is None or b_ is None else a_ - b_
        return r.get(key)

    lines = ["| VIP manager | event | n | " + " | ".join(c for c, _ in cols) + " |",
             "|---|---|---|" + "---|" * len(cols)]
    for (mode, kind), rs in sorted(groups.items()):
        cells = []
        for _, key in cols:
            vs = [v for v in (val(r, key) for r in rs) if v is not None]
            cells.append(f"{statistics.median(vs):.0f} / {max(vs):.0f}" if vs else "n/a")
        lines.append(f"| {mode} | {kind} | {len(rs)} | " + " | ".join(cells) + " |")
    text = ("Milliseconds, median / max over n events. Outage = longest gap between two acknowledged "
            "writes (one attempt every 20 ms per path). Patroni's own = last write accepted directly by the "
            "old primary to first accepted directly by the new one.\n\n" + "\n".join(lines) + "\n")
    with open(a.out, "w") as f:
        f.write(text)
    print(text)


def main():
    ap = argparse.ArgumentParser(prog="labtool")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sample")
    s.add_argument("--out", required=True)
    s.add_argument("--db", action="append", required=True, help="NAME=NETNS")
    s.add_argument("--consul-ns", required=True)
    s.add_argument("--consul", required=True)
    s.add_argument("--key", required=True)
    s.add_argument("--vip", required=True)
    s.add_argument("--interval", type=float, default=0.02)
    s.set_defaults(f=cmd_sample)
    s = sub.add_parser("vip-holders")
    s.add_argument("--db", action="append", required=True)
    s.add_argument("--vip", required=True)
    s.set_defaults(f=cmd_vip_holders)
    s = sub.add_parser("load")
    s.add_argument("--out", required=True)
    s.add_argument("--result", required=True)
    s.add_argument("--event", required=True)
    s.add_argument("--target", action="append", required=True, help="LABEL=CONNINFO")
    s.add_argument("--direct-check", action="append", required=True, help="NAME=CONNINFO")
    s.add_argument("--duration", type=float, default=300)
    s.add_argument("--interval", type=float, default=0.02)
    s.set_defaults(f=cmd_load)
    s = sub.add_parser("wait-healthy")
    s.add_argument("--api", action="append", required=True)
    s.add_argument("--members", type=int, default=3)
    s.add_argument("--sync", action="store_true")
    s.add_argument("--timeout", type=float, default=120)
    s.set_defaults(f=cmd_wait_healthy)
    s = sub.add_parser("leader")
    s.add_argument("--consul", required=True)
    s.add_argument("--key", required=True)
    s.set_defaults(f=cmd_leader)
    s = sub.add_parser("wait-writes")
    s.add_argument("--log", required=True)
    s.add_argument("--paths", nargs="+", required=True)
    s.add_argument("--node", default="-")
    s.add_argument("--since", type=float, default=0.0)
    s.add_argument("--timeout", type=float, default=30)
    s.set_defaults(f=cmd_wait_writes)
    s = sub.add_parser("wait-converged")
    s.add_argument("--old", required=True)
    s.add_argument("--db", action="append", required=True)
    s.add_argument("--addr", action="append", required=True, help="NAME=ADDRESS")
    s.add_argument("--client-ns", required=True)
    s.add_argument("--consul", required=True)
    s.add_argument("--key", required=True)
    s.add_argument("--vip", required=True)
    s.add_argument("--ini", required=True)
    s.add_argument("--db-name", default="appdb")
    s.add_argument("--log", required=True)
    s.add_argument("--since", type=float, required=True)
    s.add_argument("--paths", nargs="+", default=["pgbouncer", "vip"])
    s.add_argument("--holder", help="vip-holder key that must name the new leader")
    s.add_argument("--timeout", type=float, default=90)
    s.set_defaults(f=cmd_wait_converged)
    s = sub.add_parser("analyze")
    s.add_argument("event_dir")
    s.set_defaults(f=cmd_analyze)
    s = sub.add_parser("table")
    s.add_argument("--out", required=True)
    s.add_argument("results", nargs="+")
    s.set_defaults(f=cmd_table)
    a = ap.parse_args()
    if a.cmd == "wait-converged":
        a.deadline = time.time() + a.timeout
    a.f(a)


if __name__ == "__main__":
    main()
