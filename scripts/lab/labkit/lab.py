#!/usr/bin/env python3
"""The lab as a program: events, measurements, scenarios and their results.

scripts/lab.sh brings a lab up and takes it down (its `ip netns` commands are
the topology's specification); everything else is here, run as root with the
Patroni virtualenv's Python (it has psycopg):

    labtool.py status | switchover | failover | kill-patroni | stop-primary
    labtool.py demo
    labtool.py bench [--n N] [--events LIST] [--managers LIST]

One layout shared by every scenario:
  - Topology: scripts/lab/topology.env, the one definition of hosts,
    addresses, ports and names (lab.sh sources it, tests/e2e.rs parses it).
  - Lab: one running lab (run id, variant, files, pids) and its DCS.
  - Measurement: the 20 ms address and leader-key sampler and the load
    generator (a row every 20 ms through PgBouncer, the VIP and directly to
    each node), started around an action and stopped after it.
  - run_event(): act, wait for convergence, bring the old node back,
    analyse into a timeline and a result.
  - lab_session(): a lab brought up for a scenario and always taken down.
  - write_results(): target/lab-<name>.json and .md.
  - SCENARIOS: the commands built from these (demo, bench; later ones add
    themselves there).

The sampler and the load generator run inside the lab's client namespace
(internal commands `sample` and `load`); so do `wait-healthy` and `prepare-db`,
which lab.sh calls during `up`. The orchestrating process stays in the host's
namespace (lab.sh down kills whatever is inside the lab's namespaces) and
enters the client namespace per call on a short-lived thread (in_netns).
Every wait has a deadline and fails naming what it waited for. Times are
wall-clock seconds since the epoch (float), so they line up with the hook's
RFC 3339 log lines.
"""

import argparse
import base64
import contextlib
import ctypes
import datetime
import http.client
import json
import os
import random
import re
import signal
import socket
import ssl
import statistics
import struct
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # scripts/lab
REPO = os.path.dirname(os.path.dirname(HERE))
LABTOOL = os.path.join(HERE, "labtool.py")  # the entry point, also of the client-namespace probes
TOPOLOGY = os.path.join(HERE, "topology.env")
LAB_SH = os.path.join(REPO, "scripts", "lab.sh")
DEFAULT_ROOT = "/run/patroni-hook-lab"
# The load generator needs psycopg and the events patronictl: the Patroni
# virtualenv's, whichever Python runs this.
VENV = os.environ.get("PATRONI_VENV") or "/opt/patroni-hook-test/venv"
VENV_PYTHON = os.path.join(VENV, "bin", "python")
PATRONICTL = os.path.join(VENV, "bin", "patronictl")

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL("libc.so.6", use_errno=True)


class LabError(Exception):
    """A check or a wait that failed; the message names what."""


def say(msg):
    print(f"==> {msg}", flush=True)


def wait_for(what, timeout, cond, interval=0.05):
    """Polls cond() until it returns something truthy; raises naming `what`."""
    end = time.time() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.time() >= end:
            raise LabError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


# ---- topology and run state -------------------------------------------------

_ENV_LINE = re.compile(r'^([A-Za-z_][A-Za-z0-9_]*)=(?:"([^"$`\\]*)"|([^\s"\'$`\\;&|<>()#]*))$')


def parse_env_file(path):
    """KEY=VALUE lines (a value with spaces in double quotes), comments and
    blank lines; anything else is refused naming the file and line."""
    env = {}
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise LabError(f"cannot read {path}: {e.strerror}")
    for no, line in enumerate(lines, 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        m = _ENV_LINE.match(s)
        if not m:
            raise LabError(f"{path}:{no}: expected KEY=VALUE or KEY=\"VALUE\" without shell syntax, got {s[:60]!r}")
        env[m.group(1)] = m.group(2) if m.group(2) is not None else m.group(3)
    return env


class Topology:
    """scripts/lab/topology.env, the one definition of the lab's layout."""

    def __init__(self, path=TOPOLOGY):
        self.path = path
        self.env = parse_env_file(path)
        self.ns_prefix = self.get("LAB_NS_PREFIX")
        self.switch = self.get("LAB_SWITCH")
        self.iface = self.get("LAB_IFACE")
        self.prefix_len = int(self.get("LAB_PREFIX_LEN"))
        self.db_nodes = self.get("LAB_DB_NODES").split()
        self.vip = self.get("LAB_VIP")
        self.consul_port = int(self.get("LAB_CONSUL_PORT"))
        self.etcd_port = int(self.get("LAB_ETCD_PORT"))
        self.pg_port = int(self.get("LAB_PG_PORT"))
        self.pgb_port = int(self.get("LAB_PGB_PORT"))
        self.api_port = int(self.get("LAB_PATRONI_API_PORT"))
        self.scope = self.get("LAB_SCOPE")
        self.dcs_namespace = self.get("LAB_DCS_NAMESPACE")
        self.pgb_db = self.get("LAB_PGB_DB")

    def get(self, key):
        if key not in self.env:
            raise LabError(f"{self.path}: {key} is not defined")
        return self.env[key]

    def addr(self, host):
        return self.get(f"LAB_ADDR_{host}")

    def hosts(self, manager):
        return self.get("LAB_HOSTS_" + manager.replace("-", "_")).split()


def new_run_id():
    return time.strftime("l%H%M%S") + f"{random.randrange(10000):04d}"


class Lab:
    """One running lab: $LAB_ROOT/<run id>, written by lab.sh up."""

    def __init__(self, topo, root, rid):
        if not re.fullmatch(r"[a-z0-9]{1,12}", rid or ""):
            raise LabError(f"run id {rid!r} must be 1-12 lowercase letters or digits")
        self.topo, self.root, self.rid = topo, root, rid
        self.run = os.path.join(root, rid)
        state = parse_env_file(os.path.join(self.run, "lab.env"))
        self.manager = state.get("LAB_MANAGER", "")
        if self.manager not in ("hook", "vip-manager"):
            raise LabError(f"{self.run}/lab.env: LAB_MANAGER is {self.manager!r}, expected hook or vip-manager")
        self.interval_ms = int(state.get("LAB_VIP_MANAGER_INTERVAL") or 1000)
        self.pause_on = state.get("LAB_PAUSE_ON") or None
        self.node_watches = state.get("LAB_NODE_WATCHES", "1") != "0"
        self.legacy = state.get("LAB_LEGACY", "0") == "1"
        self.backup = state.get("LAB_BACKUP", "0") == "1"
        # Which Consul the hook's lab runs on: "double" or "real" ("" for vip-manager).
        self.consul_kind = state.get("LAB_CONSUL", "double" if self.manager == "hook" else "")
        self.consul_version = state.get("LAB_CONSUL_VERSION") or None
        global CONSUL_RAN_ON
        CONSUL_RAN_ON = self.consul

    @property
    def consul_servers(self):
        """The hosts serving Consul: cs1..3 on real Consul, the double's host."""
        if self.consul_kind == "real":
            return self.topo.get("LAB_CONSUL_SERVERS").split()
        return ["consul"] if self.consul_kind == "double" else []

    def consul_server_pids(self):
        """{host: pid} of the Consul servers (a fault stops or freezes them)."""
        if self.consul_kind == "real":
            return {h: self.pid(f"consul-{h}") for h in self.consul_servers}
        return {h: self.pid("consul") for h in self.consul_servers}

    @property
    def consul_label(self):
        """Which Consul, in words (titles of the results)."""
        if self.consul_kind == "real":
            return f"Consul {self.consul_version}"
        return "the Consul double" if self.consul_kind == "double" else "etcd"

    @property
    def consul(self):
        """Which Consul this lab runs on, as every JSON the lab writes records it."""
        if self.consul_kind == "real":
            return {"kind": "real", "version": self.consul_version}
        if self.consul_kind == "double":
            return {"kind": "double"}
        return None

    @classmethod
    def current(cls, topo):
        root = os.environ.get("LAB_ROOT") or DEFAULT_ROOT
        rid = os.environ.get("LAB_RUN_ID")
        if not rid:
            try:
                rid = open(os.path.join(root, "current")).read().strip()
            except OSError:
                raise LabError(f"no lab is up (no {root}/current); run: scripts/lab.sh up")
        if not os.path.isdir(os.path.join(root, rid)):
            raise LabError(f"no lab with run id {rid} ({root}/{rid} is missing)")
        return cls(topo, root, rid)

    def ns(self, host):
        return f"{self.topo.ns_prefix}-{self.rid}-{host}"

    @property
    def label(self):
        """The VIP manager as the results name it."""
        if self.manager == "hook":
            return "hook" if self.node_watches else "hook-timer-only"
        return f"vip-manager-{self.interval_ms}ms"

    @property
    def leader_key(self):
        return f"{self.topo.dcs_namespace}/{self.topo.scope}/leader"

    @property
    def holder_key(self):
        return f"{self.topo.dcs_namespace}/{self.topo.scope}/vip-holder"

    def dcs(self):
        """The DCS as seen from the client namespace: the double at its
        address, or the client host's own Consul agent over HTTPS with the
        management token."""
        t = self.topo
        if self.manager == "hook" and self.consul_kind == "real":
            ctx = ssl.create_default_context(cafile=self.path("consul", "tls", "ca.pem"))
            token = open(self.path("consul", "tokens", "master")).read().strip()
            return Consul(f"127.0.0.1:{t.get('LAB_CONSUL_HTTPS_PORT')}", tls=ctx, token=token)
        if self.manager == "hook":
            return Consul(f"{t.addr('consul')}:{t.consul_port}")
        return EtcdV2(f"{t.addr('etcd')}:{t.etcd_port}")

    def conninfo(self, target, user="lab"):
        t = self.topo
        if target == "pgbouncer":
            return f"host={t.addr('pgb')} port={t.pgb_port} dbname={t.pgb_db} user={user}"
        if target == "vip":
            return f"host={t.vip} port={t.pg_port} dbname=postgres user={user}"
        return f"host={t.addr(target)} port={t.pg_port} dbname=postgres user={user}"

    def apis(self):
        return [f"{self.topo.addr(n)}:{self.topo.api_port}" for n in self.topo.db_nodes]

    def path(self, *parts):
        return os.path.join(self.run, *parts)

    def pid(self, name):
        try:
            return int(open(self.path("pids", f"{name}.pid")).read().strip())
        except (OSError, ValueError):
            return None

    def postmaster_pid(self, node):
        """The node's postmaster while it lives (pids are reused: checked)."""
        try:
            pid = int(open(self.path(node, "data", "postmaster.pid")).readline().strip())
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                return pid if b"postgres" in f.read() else None
        except (OSError, ValueError):
            return None

    def ini_host(self):
        return ini_host(self.path("pgbouncer", "pgbouncer.ini"), self.topo.pgb_db)

    def leader(self):
        """The leader key's value now (read from the client namespace)."""
        return in_netns(self.ns("client"), lambda: self.dcs().read(self.leader_key)[0])

    def sh(self, *args, timeout=300):
        lab_sh(*args, env={"LAB_RUN_ID": self.rid, "LAB_ROOT": self.root}, timeout=timeout)


def lab_sh(*args, env=None, timeout=300, detach=False):
    """Runs scripts/lab.sh ARGS, its output on ours; raises when it fails.
    `detach`: in its own session, out of reach of the terminal's Ctrl-C."""
    e = dict(os.environ)
    e.update(env or {})
    try:
        r = subprocess.run(["bash", LAB_SH, *args], env=e, stdin=subprocess.DEVNULL, timeout=timeout,
                           start_new_session=detach)
    except subprocess.TimeoutExpired:
        raise LabError(f"timed out after {timeout} s waiting for scripts/lab.sh {' '.join(args)}")
    if r.returncode != 0:
        raise LabError(f"scripts/lab.sh {' '.join(args)} failed (exit {r.returncode})")


@contextlib.contextmanager
def signals_ignored():
    """SIGINT and SIGTERM ignored for a cleanup that must finish (bounded)."""
    old = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def alive(pid):
    if not pid:
        return False
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


# ---- network namespaces -----------------------------------------------------

def setns(name):
    """Moves the calling thread into network namespace `name`."""
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into {name}: {os.strerror(err)}")
    finally:
        os.close(fd)


def in_netns(ns, fn, *args, **kw):
    """Runs fn(*args, **kw) on a new thread inside namespace `ns` and returns
    its result (or raises its exception). The process itself stays where it is."""
    box = {}

    def run():
        try:
            setns(ns)
            box["value"] = fn(*args, **kw)
        except BaseException as e:  # handed to the caller
            box["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box.get("value")


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


def db_sockets(lab):
    """{node: AddrSocket} for every database namespace; the calling thread
    ends up back in the client namespace."""
    socks = {n: AddrSocket(lab.ns(n)) for n in lab.topo.db_nodes}
    setns(lab.ns("client"))
    return socks


def vip_holders(lab, socks):
    return sorted(n for n, s in socks.items() if lab.topo.vip in s.ipv4())


# ---- the DCS: Consul (the double) or etcd (v2 API) ---------------------------

def http_get(hostport, path, timeout, tls=None, headers=None):
    """(status, headers, body) of one GET; over HTTPS with the `tls` context."""
    host, port = hostport.rsplit(":", 1)
    if tls is not None:
        conn = http.client.HTTPSConnection(host, int(port), timeout=timeout, context=tls)
    else:
        conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp, resp.read()
    finally:
        conn.close()


def http_json(hostport, path, timeout=2.0):
    return json.loads(http_get(hostport, path, timeout)[2])


class Consul:
    """KV reads; a token makes the read a blocking query (tests/consul-double/SPEC.md).
    Real Consul: `tls` (an ssl context with the lab's CA) and an ACL `token`."""

    def __init__(self, hostport, tls=None, token=None):
        self.hostport = hostport
        self.tls = tls
        self.headers = {"X-Consul-Token": token} if token else {}

    def request(self, method, path, body=None, timeout=5.0):
        """(status, body) of one request (writes: the adopt scenarios' operator)."""
        host, port = self.hostport.rsplit(":", 1)
        if self.tls is not None:
            conn = http.client.HTTPSConnection(host, int(port), timeout=timeout, context=self.tls)
        else:
            conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=self.headers)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def read(self, key, token=None, wait_s=2.0):
        """(value or None, token for the next blocking read)."""
        path = f"/v1/kv/{key}"
        if token is not None:
            path += f"?index={token}&wait={wait_s:g}s"
        status, resp, body = http_get(self.hostport, path, wait_s + 3.0, self.tls, self.headers)
        idx = int(resp.getheader("X-Consul-Index", "0"))
        # An index that went backwards means a reset; start over.
        nxt = idx if (token is None or idx >= token) else None
        if status == 404:
            return None, nxt
        if status != 200:
            raise OSError(f"GET {path}: HTTP {status}")
        raw = json.loads(body)[0].get("Value")
        return (base64.b64decode(raw).decode() if raw else ""), nxt


class EtcdV2:
    """etcd's v2 keys API, the one Patroni's etcd backend and vip-manager
    1.0.2 use; a token makes the read a watch (wait=true&waitIndex)."""

    def __init__(self, hostport):
        self.hostport = hostport

    def read(self, key, token=None, wait_s=2.0):
        if token is None:
            status, resp, body = http_get(self.hostport, f"/v2/keys/{key}", 5.0)
            nxt = int(resp.getheader("X-Etcd-Index", "0")) + 1
            if status == 404:
                return None, nxt
            if status != 200:
                raise OSError(f"GET /v2/keys/{key}: HTTP {status}")
            return json.loads(body)["node"].get("value"), nxt
        try:
            status, _resp, body = http_get(self.hostport, f"/v2/keys/{key}?wait=true&waitIndex={token}", wait_s)
        except (TimeoutError, socket.timeout):
            return self.read(key)  # nothing changed meanwhile: a plain read
        if status != 200:  # 400 "event index cleared" and the like: a plain read
            return self.read(key)
        ev = json.loads(body)
        node = ev.get("node", {})
        value = None if ev.get("action") in ("delete", "expire", "compareAndDelete") else node.get("value")
        return value, int(node.get("modifiedIndex", token)) + 1


# ---- waits -------------------------------------------------------------------

def cluster_state(apis):
    for api in apis:
        try:
            return http_json(api, "/cluster")
        except (OSError, ValueError, http.client.HTTPException):
            continue
    return None


def wait_healthy(lab, timeout):
    """Waits until the cluster has a leader and every other member streams
    from it, one of them the synchronous standby; returns the leader's name."""
    members_wanted = len(lab.topo.db_nodes)

    def healthy():
        c = cluster_state(lab.apis())
        if not c:
            return None
        members = c.get("members", [])
        leaders = [m for m in members if m.get("role") in ("leader", "master", "primary") and m.get("state") == "running"]
        others = [m for m in members if m not in leaders]
        if len(leaders) != 1 or len(members) != members_wanted:
            return None
        if not all(m.get("state") == "streaming" for m in others):
            return None
        if not any(m.get("role") == "sync_standby" for m in others):
            return None
        return leaders[0]["name"]
    return wait_for(f"a leader and {members_wanted - 1} streaming replicas, one synchronous (Patroni /cluster)",
                    timeout, healthy, 0.2)


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


def wait_writes(log, paths, node, timeout, since=0.0):
    """Waits until each path has an acknowledged write on `node` that ended after `since`."""
    def done():
        need = set(paths)
        for p in ok_lines(log, since):
            if p[6] == node:
                need.discard(p[4])
        return not need
    wait_for(f"acknowledged writes through {', '.join(paths)} on {node} ({log})", timeout, done, 0.05)


def ini_host(ini, db):
    for line in load_lines(ini):
        m = re.match(rf"^\s*{re.escape(db)}\s*=(.*)$", line)
        if m:
            h = re.search(r"\bhost=(\S+)", m.group(1))
            return h.group(1) if h else None
    return None


def wait_converged(lab, old, since, log, timeout):
    """After an event: a new leader other than `old`; the VIP on it alone;
    for the hook, pgbouncer.ini pointing at it and vip-holder naming it;
    writes acknowledged by it through PgBouncer and through the VIP.
    Runs in the client namespace; returns the new leader."""
    deadline = time.time() + timeout
    socks = db_sockets(lab)
    dcs = lab.dcs()
    t = lab.topo

    def step(what, cond):
        return wait_for(what, max(1.0, deadline - time.time()), cond, 0.02)

    new = step(f"a leader other than {old} in {lab.leader_key}",
               lambda: (lambda v: v if v and v != old else None)(dcs.read(lab.leader_key)[0]))
    step(f"the VIP {t.vip} on {new} and on no other node", lambda: vip_holders(lab, socks) == [new])
    if lab.manager == "hook":
        step(f"pgbouncer.ini to point {t.pgb_db} at {new} ({t.addr(new)})", lambda: lab.ini_host() == t.addr(new))

        def holder():
            raw = dcs.read(lab.holder_key)[0]
            try:
                return raw and json.loads(raw).get("member") == new
            except ValueError:
                return False
        step(f"{lab.holder_key} to name {new}", holder)

    def writes():
        return {"pgbouncer", "vip"} <= {p[4] for p in ok_lines(log, since) if p[6] == new}
    step(f"acknowledged writes through PgBouncer and the VIP on {new}", writes)
    return new


# ---- sampler -----------------------------------------------------------------

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


# ---- load generator ----------------------------------------------------------

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


# ---- measurement: sampler and load around an action ---------------------------

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


# ---- events -------------------------------------------------------------------

def act_switchover(lab, old, ev_dir):
    cmd = ["ip", "netns", "exec", lab.ns("client"), "env", "LC_ALL=C.UTF-8",
           PATRONICTL, "-c", lab.path(old, "patroni.yml"),
           "switchover", "--leader", old, "--force", lab.topo.scope]
    with open(os.path.join(ev_dir, "patronictl.out"), "w") as out:
        try:
            rc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, timeout=90).returncode
        except subprocess.TimeoutExpired:
            raise LabError("timed out after 90 s waiting for patronictl switchover")
    if rc != 0:
        raise LabError(f"patronictl switchover failed: {open(os.path.join(ev_dir, 'patronictl.out')).read().strip()}")


def kill(pid, sig, what):
    if not alive(pid):
        raise LabError(f"{what} is not running (pid {pid})")
    os.kill(pid, sig)


def act_failover(lab, old, _ev_dir):
    # The primary's Patroni and PostgreSQL die at once, as if the machine froze.
    pm = lab.postmaster_pid(old)
    kill(lab.pid(f"{old}-patroni"), signal.SIGKILL, f"Patroni of {old}")
    if pm:
        os.kill(pm, signal.SIGKILL)


def act_kill_patroni(lab, old, _ev_dir):
    kill(lab.pid(f"{old}-patroni"), signal.SIGKILL, f"Patroni of {old}")


def act_stop_primary(lab, old, _ev_dir):
    kill(lab.pid(f"{old}-patroni"), signal.SIGTERM, f"Patroni of {old}")


# name: (action, whether the old node's Patroni must be started again after it)
EVENTS = {
    "switchover": (act_switchover, False),
    "failover": (act_failover, True),
    "kill-patroni": (act_kill_patroni, True),
    "stop-primary": (act_stop_primary, True),
}


def rejoin(lab, old, kind):
    """Brings the old node back, as an operator would; Patroni rejoins it
    (pg_rewind where its timeline diverged)."""
    pid = lab.pid(f"{old}-patroni")
    wait_for(f"Patroni of {old} (pid {pid}) to exit", 60, lambda: not alive(pid), 0.05)
    if kind == "failover":
        # Backends of the killed postmaster exit by themselves; wait for them.
        with contextlib.suppress(LabError):
            wait_for(f"the killed PostgreSQL of {old} to be gone", 30, lambda: not lab.postmaster_pid(old), 0.1)
    lab.sh("start-patroni", old, timeout=30)


def next_event_dir(lab, kind):
    n = len([d for d in os.listdir(lab.path("events")) if os.path.isdir(lab.path("events", d))])
    d = lab.path("events", f"{n + 1:02d}-{kind}")
    os.makedirs(d)
    return d


def run_event(lab, kind):
    """One event: sampler and load on; act; wait until the new primary serves
    both paths; bring the old node back; timeline. Returns the result (also in
    <event dir>/result.json); raises LabError after writing it when a check failed."""
    act, comes_back = EVENTS[kind]
    old = lab.leader()
    if old not in lab.topo.db_nodes:
        raise LabError(f"no leader in {lab.leader_key} (got {old!r})")
    ev_dir = next_event_dir(lab, kind)
    problems = []
    new, t0 = None, None
    with Measurement(lab, ev_dir, f"{os.path.basename(ev_dir)}-{lab.rid}") as m:
        in_netns(lab.ns("client"), wait_writes, m.load_log, ["pgbouncer", "vip", "direct"], old, 30)
        say(f"{kind}: primary is {old}")
        t0 = time.time()
        act(lab, old, ev_dir)
        try:
            new = in_netns(lab.ns("client"), wait_converged, lab, old, t0, m.load_log, 120)
        except LabError as e:
            problems.append(str(e))
        if comes_back:
            rejoin(lab, old, kind)
        try:
            in_netns(lab.ns("client"), wait_healthy, lab, 180)
        except LabError as e:
            problems.append(str(e))
        t_end = time.time()
    lost, why = m.lost_rows()
    if why:
        problems.append(why)
    elif lost:
        problems.append(f"{lost} acknowledged rows are missing (see {m.result_path})")
    ev = {"kind": kind, "manager": lab.label, "pause_on": lab.pause_on if lab.manager == "hook" else None,
          "old": old, "new": new, "t0": t0, "t_end": t_end, "nodes": lab.topo.db_nodes, "run": lab.run,
          "converged": not problems, "problems": problems}
    with open(os.path.join(ev_dir, "event.json"), "w") as f:
        json.dump(with_consul(ev), f, indent=1)
    r = analyze(ev_dir)
    with open(os.path.join(ev_dir, "result.json"), "w") as f:
        json.dump(with_consul(r), f, indent=1)
    print_timeline(r)
    if problems:
        raise LabError(f"{kind} on lab {lab.rid}: " + "; ".join(problems))
    return r


# ---- analysis ------------------------------------------------------------------

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


def ms(x):
    return None if x is None else round(x * 1000.0, 1)


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


# ---- results: rows, tables, files ------------------------------------------------

FIGURES = ["patroni_outage_ms", "pgbouncer_outage_ms", "vip_outage_ms", "pgbouncer_failed_attempts",
           "vip_failed_attempts", "vip_two_nodes_ms", "vip_after_leader_key_ms", "ini_after_leader_key_ms"]


def pgb_minus_patroni(r):
    a, b = r.get("pgbouncer_outage_ms"), r.get("patroni_outage_ms")
    return None if a is None or b is None else round(a - b, 1)


def summarize(results, failures=()):
    """One row per (manager, event), in order of first appearance: each figure
    as {"median", "max"} over the events (null when none had it), lost_rows a
    total; `failed` counts the events of that kind that did not complete."""
    groups = {}
    for r in results:
        groups.setdefault((r["manager"], r.get("pause_on"), r["kind"]), []).append(r)
    for manager, kind, _why in failures:
        if not any(m == manager and k == kind for m, _p, k in groups):
            groups.setdefault((manager, None, kind), [])
    rows = []
    for (manager, pause_on, kind), rs in groups.items():
        row = {"manager": manager, "event": kind, "pause_on": pause_on, "n": len(rs)}
        if rs and "consul" in rs[0]:
            row["consul"] = rs[0]["consul"]
        for key in FIGURES + ["pgbouncer_minus_patroni_ms"]:
            vs = [v for v in ((pgb_minus_patroni(r) if key == "pgbouncer_minus_patroni_ms" else r.get(key)) for r in rs)
                  if v is not None]
            row[key] = {"median": round(statistics.median(vs), 1), "max": max(vs)} if vs else {"median": None, "max": None}
        row["lost_rows"] = sum(r.get("lost_rows") or 0 for r in rs)
        row["failed"] = sum(1 for m, k, _ in failures if (m, k) == (manager, kind))
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
20 ms. hook: Patroni on Consul (the title says which: Consul 1.8.7, three servers and an agent per
host, or the Consul double); the hook as Patroni's callbacks, reconcile from Consul watches on every
node and on the PgBouncer host, and every 2 s (nodes) / 5 s (PgBouncer host) from a timer.
vip-manager-<interval>: Debian's vip-manager 1.0.2 at that --interval, Patroni on etcd 3.4 (v2
API, the only one vip-manager 1.0.2 reads); its PgBouncer points at the VIP (what vip-manager's
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
    head = "| manager | pause_on | event | n | " + " | ".join(c for c, _ in COLUMNS) + " | lost rows |"
    lines = [f"{title}\n", TABLE_NOTES, head, "|---|---|---|---|" + "---|" * (len(COLUMNS) + 1)]
    for row in rows:
        cells = [cell(row[key], row["n"]) for _, key in COLUMNS]
        n = f"{row['n']}" + (f" ({row['failed']} failed)" if row.get("failed") else "")
        lines.append(f"| {row['manager']} | {row.get('pause_on') or '-'} | {row['event']} | {n} | "
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


def with_consul(data):
    """`data` with "consul" (which Consul the lab ran on: {"kind": "real",
    "version"}, {"kind": "double"}, or null on etcd) on it, or on each of its
    rows that does not say already."""
    if CONSUL_RAN_ON is NO_LAB:
        return data
    if isinstance(data, dict):
        data.setdefault("consul", CONSUL_RAN_ON)
    elif isinstance(data, list):
        for row in data:
            if isinstance(row, dict):
                row.setdefault("consul", CONSUL_RAN_ON)
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


# ---- scenarios ---------------------------------------------------------------------

@contextlib.contextmanager
def lab_session(topo, manager, rid=None, interval_ms=None, pause_on=None, extra_env=None):
    """A lab of the given variant brought up for a scenario and always taken
    down afterwards (also when the scenario fails or is interrupted).
    `extra_env`: more LAB_* settings for `up` (LAB_BACKUP, LAB_LEGACY)."""
    rid = rid or new_run_id()
    root = os.environ.get("LAB_ROOT") or DEFAULT_ROOT
    env = {"LAB_RUN_ID": rid, "LAB_ROOT": root, "LAB_VIP_MANAGER": manager, **(extra_env or {})}
    if interval_ms:
        env["LAB_VIP_MANAGER_INTERVAL"] = str(interval_ms)
    if pause_on:
        env["LAB_PAUSE_ON"] = pause_on
    try:
        lab_sh("up", env=env, timeout=900)
        yield Lab(topo, root, rid)
    finally:
        # Taking the lab down is not interrupted by a second signal.
        with signals_ignored():
            try:
                lab_sh("down", env={"LAB_RUN_ID": rid, "LAB_ROOT": root}, timeout=300, detach=True)
            except LabError as e:
                print(f"labtool: taking lab {rid} down: {e}", file=sys.stderr)


def set_vip_manager_interval(lab, interval_ms):
    """Restarts the vip-managers with another interval and waits until the VIP
    is on the leader alone again."""
    lab.sh("vip-manager-interval", str(interval_ms), timeout=60)
    lab.interval_ms = interval_ms
    lead = lab.leader()

    def on_leader_alone():
        socks = db_sockets(lab)
        wait_for(f"the VIP on {lead} alone after restarting vip-manager", 30,
                 lambda: vip_holders(lab, socks) == [lead], 0.02)
    in_netns(lab.ns("client"), on_leader_alone)


def cmd_event(topo, kind, argv):
    if argv:
        raise LabError(f"{kind} takes no arguments (got {' '.join(argv)})")
    run_event(Lab.current(topo), kind)


def cmd_status(topo, argv):
    if argv:
        raise LabError(f"status takes no arguments (got {' '.join(argv)})")
    show_status(Lab.current(topo))


def show_status(lab):
    topo = lab.topo
    print(f"lab {lab.rid} in {lab.run}, VIP managed by {lab.label}, on {lab.consul_label}")
    for f in sorted(os.listdir(lab.path("pids"))):
        pid = lab.pid(f[:-4])
        print(f"  {f[:-4]}: pid {pid} {'running' if alive(pid) else 'gone'}")
    try:
        subprocess.run(["ip", "netns", "exec", lab.ns("client"), "env", "LC_ALL=C.UTF-8",
                        PATRONICTL, "-c",
                        lab.path(topo.db_nodes[0], "patroni.yml"), "list"], stdin=subprocess.DEVNULL, timeout=30)
    except subprocess.TimeoutExpired:
        print("patronictl list: no answer within 30 s")

    def dcs_view():
        dcs = lab.dcs()
        lead = dcs.read(lab.leader_key)[0]
        holder = dcs.read(lab.holder_key)[0] if lab.manager == "hook" else "(not used by vip-manager)"
        return lead, holder, vip_holders(lab, db_sockets(lab))
    try:
        lead, holder, on = in_netns(lab.ns("client"), dcs_view)
    except (OSError, http.client.HTTPException, ValueError) as e:
        raise LabError(f"reading the DCS or the nodes' addresses: {e}")
    print(f"leader key:        {lead or '-'}")
    print(f"vip-holder record: {holder or '-'}")
    print(f"VIP {topo.vip} on:  {','.join(on) or '-'}")
    ini = next((line for line in load_lines(lab.path("pgbouncer", "pgbouncer.ini")) if line.startswith(topo.pgb_db)), "-")
    print(f"pgbouncer.ini:     {ini}")


def scenario_demo(topo, argv):
    """Up (hook variant), a switchover, a failover and a Patroni-only kill with
    their timelines, a summary table (target/lab-demo.{md,json}), down."""
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
    for variant in plan:
        lab_sh("check-prereqs", variant, timeout=60)
    started = time.time()
    results, failures = [], []
    title = (f"scripts/lab.sh bench --n {a.n} --events {','.join(events)} --managers {a.managers} "
             f"--pause-on {','.join(pause_ons)}, "
             f"{time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs")

    def save():
        rows = summarize(results, failures)
        md = markdown(rows, title)
        if failures:
            md += "\nEvents that did not complete:\n\n" + "".join(f"- {m} {k}: {w}\n" for m, k, w in failures)
        paths = write_results("bench", rows, md)
        with open(os.path.join(out_dir(), "lab-bench-events.json"), "w") as f:
            json.dump(with_consul(results), f, indent=1)
        return md, paths

    labs = []  # (variant, intervals, pause_on): one lab each
    for variant, intervals in plan.items():
        for p in (pause_ons if variant == "hook" else [None]):
            labs.append((variant, intervals, p))
    try:
        for variant, intervals, pause_on in labs:
            with lab_session(topo, variant, interval_ms=intervals[0], pause_on=pause_on) as lab:
                kind = "vip-manager-interval"
                try:
                    for interval in intervals:
                        if interval and interval != lab.interval_ms:
                            kind = "vip-manager-interval"
                            set_vip_manager_interval(lab, interval)
                        for i in range(a.n):
                            for kind in events:
                                say(f"bench: {lab.label} {kind} {i + 1}/{a.n}")
                                results.append(run_event(lab, kind))
                                save()
                except LabError as e:
                    # The lab may be in any state now: no more events on it.
                    print(f"labtool: {e}; no more events on lab {lab.rid}", file=sys.stderr)
                    failures.append((lab.label, kind, str(e)))
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
    "faults": lambda topo, argv: scenario_faults(topo, argv),
}

def scenario_faults(topo, argv):
    """The fault matrix (scripts/lab/faults.py). A faults.py that names the
    Consuls it runs on (CONSUL_KINDS) chooses for itself; one that does not
    acts on the Consul double's one process and address (SIGSTOP, a blackhole
    route, the delay file), so it gets the double's lab, and a real-Consul lab
    is refused rather than failing midway."""
    faults = scenario_module("faults")
    if "real" not in getattr(faults, "CONSUL_KINDS", ()):
        if "--use-lab" in argv:
            lab = Lab.current(topo)
            if lab.consul_kind == "real":
                raise LabError(f"faults: lab {lab.rid} runs on real Consul; this fault matrix acts on the "
                               "Consul double only (bring a lab up with --consul double)")
        elif os.environ.get("LAB_CONSUL", "double") != "double":
            raise LabError("faults: this fault matrix acts on the Consul double only (LAB_CONSUL=double)")
        else:
            os.environ["LAB_CONSUL"] = "double"
    faults.scenario(topo, argv)


def cmd_wait_healthy(lab, argv):
    ap = argparse.ArgumentParser(prog="labtool wait-healthy")
    ap.add_argument("--timeout", type=float, default=180)
    print(wait_healthy(lab, ap.parse_args(argv).timeout))


def kit_consul_config(lab, host):
    """The kit's consul-server.json or consul-client.json rendered for `host`
    of a real-Consul lab: its data directory, node name, the lab's servers to
    join, TLS files and tokens; the watches' keys and handler for this lab.
    Everything else is the file as shipped (ACLs, HTTPS only, raft_multiplier)."""
    t = lab.topo
    servers = t.get("LAB_CONSUL_SERVERS").split()
    server = host in servers
    with open(os.path.join(REPO, "patroni-conf", "consul-server.json" if server else "consul-client.json")) as f:
        c = json.load(f)
    d = lab.path("consul", host)
    token = lambda name: open(lab.path("consul", "tokens", name)).read().strip()  # noqa: E731
    c["data_dir"] = os.path.join(d, "data")
    c["node_name"] = host
    c["retry_join"] = [t.addr(h) for h in servers]
    # Lab only: the servers start together, so the first join may find no one;
    # Consul's default retry interval is 30 s.
    c["retry_interval"] = "1s"
    tls = lab.path("consul", "tls")
    c["ca_file"] = os.path.join(tls, "ca.pem")
    c["cert_file"] = os.path.join(tls, f"{host}.pem")
    c["key_file"] = os.path.join(tls, f"{host}-key.pem")
    tokens = {"agent": token(f"agent-{host}")}
    if server:
        # The cluster's bootstrap: the management token, known before it runs.
        tokens["master"] = token("master")
    elif lab.legacy and host in t.db_nodes + ["pgb"]:
        # The legacy lab's old glue reads its key with the agent's default token.
        tokens["default"] = token("legacy-glue")
    c["acl"]["tokens"] = tokens
    kit_watches = c.pop("watches", [])
    if host in t.db_nodes or host == "pgb":
        name = "pgbouncer" if host == "pgb" else host
        hook_token = token("pgbouncer" if host == "pgb" else "hook-db")
        handler = [lab.path("bin", "watch-handler.sh"), "-", lab.path("logs", f"{name}-watch.log"),
                   lab.path("bin", "patroni-hook"), lab.path(name, "hook.yml")]
        if lab.legacy:
            # Installed by the adoption (scripts/lab.sh enable-reconcile).
            handler = [lab.path("bin", "agent-watch.sh"), lab.path(name, "agent", "patroni-hook")] + handler
        watches = []
        if host == "pgb" or lab.node_watches:
            for w in kit_watches:
                w = dict(w)
                w["key"] = re.sub(r"^service/postgres/", f"{t.dcs_namespace}/{t.scope}/", w["key"])
                w["args"] = handler
                w["token"] = hook_token
                watches.append(w)
        if lab.legacy:
            key, url = t.get("LAB_LEGACY_PRIMARY_KEY"), f"https://127.0.0.1:{t.get('LAB_CONSUL_HTTPS_PORT')}/v1/kv/"
            url += t.get("LAB_LEGACY_PRIMARY_KEY")
            glue = lab.path("bin", "legacy-glue.sh")
            if host == "pgb":
                args = [lab.path("bin", "agent-watch.sh"), lab.path("pgbouncer", "agent", "legacy-render"), glue, "render",
                        lab.ns(host), lab.path("logs", "pgbouncer-legacy-glue.log"),
                        lab.path("pgbouncer", "pgbouncer.ini.ctmpl"), lab.path("pgbouncer", "pgbouncer.ini"),
                        lab.path("pgbouncer", "pgbouncer.pid"), url]
            else:
                args = [lab.path("bin", "agent-watch.sh"), lab.path(host, "agent", "legacy-vip"), glue, "vip",
                        lab.ns(host), lab.path("logs", f"{host}-legacy-glue.log"), t.addr(host),
                        f"{t.vip}/{t.prefix_len}", t.iface, url]
            watches.append({"type": "key", "key": key, "handler_type": "script", "args": args,
                            "token": token("legacy-glue")})
        if watches:
            c["watches"] = watches
    return c


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
    "sample": cmd_sample,
    "load": cmd_load,
    "prepare-db": cmd_prepare_db,
    "wait-healthy": cmd_wait_healthy,
    "reads": lambda lab, argv: scenario_module("faults").cmd_reads(lab, argv),
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


