"""The fault matrix: the faults operators lose sleep over, each a lab event
with the load generator and the 20 ms sampler running, and whether the VIP
and PgBouncer stay right.

    scripts/lab.sh faults [--consul real|double | --dcs etcd3] [--only LIST] [--repeats N] [--use-lab]

It runs on whichever DCS the lab runs (--dcs, else LAB_DCS, else
topology.env's LAB_DCS_DEFAULT; on Consul --consul, else LAB_CONSUL, else
LAB_CONSUL_DEFAULT; with --use-lab, the lab's own): the in-repo double (one
process on the host `consul`), Consul 1.8.7 (three servers cs1..3, a client
agent on every other host, ACLs, HTTPS) or etcd 3.4 (three members es1..3,
TLS, auth and RBAC; the hook on its v3 API). "Consul" below is the double's
process, every Consul server, or on etcd every etcd member; "cut from
Consul", a blackhole route to the double's address or to every server's or
member's. On etcd the rows name the DCS: etcd-cut, etcd-down,
etcd-leader-loss, etcd-quorum-loss (--only takes either name); the Raft
leader is the one `etcdctl endpoint status` names, a killed member is
started again by `scripts/lab.sh start-etcd`. slow-consul (slow-etcd),
agent-restart and token-revoked are skipped there, saying why.

Faults (names for --only; NAME:VARIANT picks one variant):
  isolation       the primary's link to the bridge down for 30 s, then up again
  consul-cut      the primary cut from Consul only (blackhole routes to the
                  Consul hosts) for 30 s; variants failsafe-off, failsafe-on
  consul-down     Consul frozen (SIGSTOP of the double, or of every server)
                  for 30 s, then SIGCONT; variants failsafe-off, failsafe-on
  pgbouncer-cut   the PgBouncer host cut from Consul during a switchover, healed
                  10 s later; variants before-pause (cut as the switchover
                  starts), while-paused (cut the moment PgBouncer is paused)
  killed-runs     N switchovers (--repeats, default 10), every hook process
                  SIGKILLed at a random moment in its first 20 ms until the
                  cluster is whole again
  slow-consul     a switchover while every Consul answer (and every watch)
                  comes 1.5 s late (the double only: its --delay-file)
  ini-edits       N switchovers (--repeats, default 3) while an operator edits
                  pgbouncer.ini (adds databases, changes a comment)
Real Consul only (on the double each is skipped, saying why):
  consul-leader-loss  the Raft leader server SIGKILLed; the others elect a new
                  one (500 "No cluster leader" meanwhile); the killed server
                  is started again once they did
  consul-quorum-loss  two of three servers (the leader first) SIGKILLed for
                  30 s, then started again
  agent-restart   the local agent on the primary's node restarted (SIGTERM:
                  a client agent leaves the cluster; started again at once)
  token-revoked   the hook's tokens (the database nodes' and the PgBouncer
                  host's) deleted; once every agent refuses them, a
                  switchover; 10 s later new tokens installed as an operator
                  would (`consul acl token create`, the hooks' token files
                  rewritten, the agents' watch tokens replaced, `consul reload`)

Writes target/lab-faults.md and target/lab-faults.json (LAB_OUT_DIR
overrides target/), one row per fault and variant, each saying which Consul
it ran on ("consul") and the machine's load when it ended ("load"). A row
holds when no acknowledged row was lost, the VIP was never on two nodes (at
most 150 ms in killed-runs, where the hook's own runs die), and the end state
converged: the VIP on the leader alone, pgbouncer.ini naming the leader,
PgBouncer not paused. token-revoked also needs every host's hook to have said
"Consul does not know this token" while revoked, and none of its runs then to
have exited 75 (temporary): a revoked token is an operator's problem, not a
reason to retry. Clients may fail while the hook cannot read Consul; the row
measures it (writes and reads stalled, PgBouncer's failed attempts) and does
not count it against the row. Exit 0 only when every row holds.

The shared parts are the package's: the lab (runlab), the load generator,
the read probe, the sampler and the end-state tracer (measure), the events
and their waits (events), the analysis (analysis) and writing the results
(reports). This module adds the faults and their episodes, the operator's
view of real Consul (RealConsul), a watch on every run of the hook's binary
through the kernel's process events connector (exec and exit, with the
kernel's timestamps), which also kills runs, and the matrix's table. It runs
as `scripts/lab.sh faults ARGS` (labtool.py faults ARGS).
"""

import argparse
import contextlib
import errno
import heapq
import http.client
import json
import os
import pwd
import random
import re
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time

from . import analysis, base, dcs, events, measure, reports, runlab
from .base import LabError, say
from .events import leader_now, switchover_async
from .measure import Admin, CONVERGED_KEYS, Tracer, converged, observe_once, wait_state, write_stalls
from .netns import in_netns


CUT_S = 30.0            # isolation, consul-cut, consul-down
PGB_CUT_S = 10.0        # pgbouncer-cut: healed this long after the cut
SLOW_DELAY = "1.5s"     # slow-consul: every answer this late
KILL_WINDOW_S = 0.020   # killed-runs: each run killed this soon after its exec, at most
TWO_NODES_LIMIT_MS = {"killed-runs": 150.0}  # elsewhere 0: both Patronis run
# The lab's reconcile timers (lab.sh: LAB_SAFETY_NET_INTERVAL, LAB_PGB_SAFETY_NET_INTERVAL).
NODE_TIMER_S = float(os.environ.get("LAB_SAFETY_NET_INTERVAL") or 2)
PGB_TIMER_S = float(os.environ.get("LAB_PGB_SAFETY_NET_INTERVAL") or 5)
# A timer's period is its interval plus one run; on a busy machine a run
# takes up to this long.
RUN_MARGIN_S = 0.5
HOOK_DEADLINE_S = 5.0   # lab.sh's hook.yml: deadline 5s
CLIENTS_BACK_S = 60.0   # after converging, writes and reads through PgBouncer and the VIP within this
CONSUL_BIN = os.environ.get("CONSUL_BIN") or "/usr/local/bin/consul"  # scripts/prereqs.sh
REVOKED_HOLD_S = 10.0   # token-revoked: the tokens stay revoked this long after the switchover
SERVER_STOP_S = 15.0    # a Consul process signalled to stop: SIGKILL after this long
CONSUL_BACK_S = 120.0   # a Consul process started again: its agent knows a Raft leader within this


def ip(*args):
    r = subprocess.run(["ip", *args], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise LabError(f"ip {' '.join(args)}: {r.stderr.strip()}")


CONSUL_KINDS = ("real", "double")
# The DCS kinds the matrix runs on: the two Consuls and etcd3 (three etcd
# members; scripts/lab.sh --dcs etcd3).
KINDS = CONSUL_KINDS + ("etcd3",)


# Faults that only some DCS kinds have: (those kinds, why the others have not).
ONLY_ON = {
    "slow-consul": (("double",), "every answer late is the double's --delay-file; real Consul and etcd have no "
                                 "such switch, and a netem delay on the servers' links (which would slow Raft "
                                 "too) needs sch_netem, which this lab's kernel does not have"),
    "consul-leader-loss": (("real", "etcd3"), "the double is one process without Raft: there is no leader to lose"),
    "consul-quorum-loss": (("real", "etcd3"), "the double is one process without Raft: there is no quorum to lose"),
    "agent-restart": (("real",), "only real Consul has local agents (the double and etcd: every host talks to "
                                 "the servers)"),
    "token-revoked": (("real",), "the Consul double runs without ACLs, and etcd's counterpart (a revoked "
                                 "user or role) is not in the matrix yet"),
}

# A fault's name in the rows on etcd3 (the same fault, on etcd's members).
ETCD_NAMES = {"consul-cut": "etcd-cut", "consul-down": "etcd-down", "slow-consul": "slow-etcd",
              "consul-leader-loss": "etcd-leader-loss", "consul-quorum-loss": "etcd-quorum-loss"}


def row_name(fault, kind):
    return ETCD_NAMES.get(fault, fault) if kind == "etcd3" else fault


def lab_kind(lab):
    """The matrix's kind of a lab: real, double or etcd3."""
    return "etcd3" if lab.dcs_kind == "etcd3" else lab.consul_kind


def dcs_word(lab):
    return "etcd" if lab.dcs_kind == "etcd3" else "Consul"


def dcs_servers(lab):
    """The hosts serving the DCS: Consul's servers, the double's host, the etcd members."""
    return lab.etcd_members if lab.dcs_kind == "etcd3" else lab.consul_servers


def consul_kind(requested, env, default):
    """Which Consul the matrix runs on: --consul, else LAB_CONSUL, else the
    topology's default (as scripts/lab.sh up chooses)."""
    kind = requested or env or default
    if kind not in CONSUL_KINDS:
        raise LabError(f"--consul (LAB_CONSUL) must be real or double, not {kind!r}")
    return kind


def skip_reason(fault, kind):
    """Why `fault` does not run on `kind` (real, double, etcd3; None: it runs)."""
    only, why = ONLY_ON.get(fault, (None, None))
    if only is None or kind in only:
        return None
    names = {"real": "real Consul", "double": "the Consul double", "etcd3": "etcd"}
    return f"{' and '.join(names[k] for k in only)} only: {why}"


def consul_hosts(kind, servers):
    """The hosts serving Consul, which "Consul frozen" stops and "cut from
    Consul" cuts off: the double's host, or every server (`servers`: the
    topology's LAB_CONSUL_SERVERS)."""
    if kind in ("real", "etcd3"):
        return list(servers)
    if kind == "double":
        return ["consul"]
    raise LabError(f"no Consul of kind {kind!r}")


def consul_pid_names(kind, servers):
    """The lab's pid files (pids/<name>.pid) of the processes "Consul frozen" SIGSTOPs."""
    hosts = consul_hosts(kind, servers)
    if kind == "etcd3":
        return [f"etcd-{h}" for h in hosts]
    return [f"consul-{h}" for h in hosts] if kind == "real" else ["consul"]


def consul_routes(kind, servers, addr):
    """The blackhole routes that cut a host from Consul (`addr`: host -> address)."""
    return [f"{addr(h)}/32" for h in consul_hosts(kind, servers)]


def raft_leader_host(answer, addrs):
    """The server a `GET /v1/status/leader` answer names (its body: a JSON
    string "ip:port", "" while there is no leader), from `addrs` (server ->
    address); None while there is no leader."""
    value = json.loads(answer) if isinstance(answer, (str, bytes)) else answer
    if not isinstance(value, str):
        raise LabError(f"/v1/status/leader answered {answer!r}, not a string")
    if not value:
        return None
    ip_part = value[1:value.index("]")] if value.startswith("[") and "]" in value else value.rsplit(":", 1)[0]
    hosts = [h for h, a in addrs.items() if a == ip_part]
    if len(hosts) != 1:
        raise LabError(f"the Raft leader {value} is none of the servers ({', '.join(f'{h} {a}' for h, a in addrs.items())})")
    return hosts[0]


def quorum_loss_victims(leader, servers):
    """The fewest servers whose loss leaves less than a quorum: the Raft
    leader first (when it is one of them), then the others in order."""
    quorum = len(servers) // 2 + 1
    order = ([leader] if leader in servers else []) + [s for s in servers if s != leader]
    return order[:len(servers) - quorum + 1]


def with_watch_tokens(config, new_by_old):
    """A Consul agent's configuration (parsed JSON) with every watch's token
    that `new_by_old` names replaced by its new one; (the new configuration,
    how many watches changed). The argument is not changed."""
    c = json.loads(json.dumps(config))
    changed = 0
    for w in c.get("watches", []):
        if w.get("token") in new_by_old:
            w["token"] = new_by_old[w["token"]]
            changed += 1
    return c, changed


def exit_75_while_refused(runs, refused_from, until):
    """The hook's runs that exited 75 (temporary) while their host's agent
    refused the token: `runs` as HookRuns records them, `refused_from` host
    -> when that host's agent first refused it, `until` when new tokens were
    installed."""
    return [r for r in runs if r["host"] in refused_from and refused_from[r["host"]] <= r["t"] < until
            and not r.get("signal") and r.get("exit") == 75]


def gone(pid):
    """Whether pid has exited (a zombie has)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1][0] in "ZX"
    except (OSError, IndexError):
        return True


class RealConsul:
    """The lab's Consul 1.8.7 (scripts/lab.sh up --consul real): the `consul`
    CLI and the HTTPS API of a host's own agent, in that host's namespace,
    with the lab's CA and management token (the operator's shell there);
    its agents stopped and started by pid, the way lab.sh starts them."""

    def __init__(self, lab):
        if lab.consul_kind != "real":
            raise LabError(f"lab {lab.rid} runs on {lab.consul_label}, not on real Consul")
        self.lab = lab
        self.port = int(lab.topo.get("LAB_CONSUL_HTTPS_PORT"))
        self.ca = lab.path("consul", "tls", "ca.pem")
        self.servers = lab.topo.get("LAB_CONSUL_SERVERS").split()
        self.addrs = {h: lab.topo.addr(h) for h in self.servers}

    pid_prefix = "consul-"  # pids/<prefix><server>.pid
    servers_word = "servers"

    def token(self, name):
        with open(self.lab.path("consul", "tokens", name)) as f:
            return f.read().strip()

    def cli(self, host, *args, timeout=30):
        env = dict(os.environ, CONSUL_HTTP_ADDR=f"https://127.0.0.1:{self.port}", CONSUL_CACERT=self.ca,
                   CONSUL_HTTP_TOKEN_FILE=self.lab.path("consul", "tokens", "master"))
        try:
            r = subprocess.run(["ip", "netns", "exec", self.lab.ns(host), CONSUL_BIN, *args], env=env,
                               stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise LabError(f"timed out after {timeout} s waiting for consul {' '.join(args)} on {host}")
        if r.returncode != 0:
            raise LabError(f"consul {' '.join(args)} on {host}: exit {r.returncode}: {r.stderr.strip()[:300]}")
        return r.stdout

    def get(self, host, path, token=None, timeout=3.0):
        """(status, body) of a GET to `host`'s own agent; (None, error) when it does not answer."""
        ctx = ssl.create_default_context(cafile=self.ca)
        headers = {"X-Consul-Token": token if token is not None else self.token("master")}

        def get():
            try:
                status, _, body = dcs.http_get(f"127.0.0.1:{self.port}", path, timeout, ctx, headers)
                return status, body
            except (OSError, http.client.HTTPException) as e:
                return None, str(e)
        return in_netns(self.lab.ns(host), get)

    def raft_leader(self, host="client"):
        """The Raft leader as `host`'s agent knows it (None: none, or no answer)."""
        status, body = self.get(host, "/v1/status/leader")
        if status != 200:
            return None
        return raft_leader_host(body, self.addrs)

    def wait_raft_leader(self, host="client", timeout=CONSUL_BACK_S, other_than=None):
        """Waits (bounded) until `host`'s agent knows a Raft leader (other than `other_than`)."""
        return base.wait_for(f"{host}'s Consul agent to know a Raft leader"
                             + (f" other than {other_than}" if other_than else ""), timeout,
                             lambda: (lambda h: h if h and h != other_than else None)(self.raft_leader(host)), 0.1)

    def stop(self, host, sig):
        """Signals `host`'s Consul agent (its pid file) and waits until it is
        gone, SIGKILL after SERVER_STOP_S; returns its pid."""
        pid = self.lab.pid(f"consul-{host}")
        base.kill(pid, sig, f"the Consul agent of {host}")
        try:
            base.wait_for(f"the Consul agent of {host} (pid {pid}) to exit on {signal.Signals(sig).name}",
                          SERVER_STOP_S, lambda: gone(pid), 0.02)
        except LabError as e:
            print(f"faults: {e}; SIGKILL", file=sys.stderr)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            base.wait_for(f"the Consul agent of {host} (pid {pid}) to exit on SIGKILL", 10, lambda: gone(pid), 0.02)
        return pid

    def start(self, host):
        """Starts `host`'s Consul agent again on its rendered configuration, as
        lab.sh's start_consul_agent does: in its namespace, output appended to
        logs/consul-<host>.log, its pid in pids/consul-<host>.pid (lab.sh down
        stops it). A thread reaps it when it exits."""
        if not gone(self.lab.pid(f"consul-{host}") or 0):
            raise LabError(f"the Consul agent of {host} is still running")
        log = open(self.lab.path("logs", f"consul-{host}.log"), "a")
        try:
            p = subprocess.Popen(["ip", "netns", "exec", self.lab.ns(host), "env", f"CURL_CA_BUNDLE={self.ca}",
                                  CONSUL_BIN, "agent", "-config-file", self.lab.path("consul", host, "consul.json")],
                                 stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True)
        finally:
            log.close()
        with open(self.lab.path("pids", f"consul-{host}.pid"), "w") as f:
            f.write(f"{p.pid}\n")
        threading.Thread(target=p.wait, name=f"reap-consul-{host}", daemon=True).start()
        return p.pid


class EtcdCluster:
    """The lab's three etcd members (scripts/lab.sh up --dcs etcd3) as the
    leader-loss and quorum-loss faults use them, like RealConsul: the Raft
    leader from `etcdctl endpoint status` (root's certificate, from the
    client's namespace, or from one member's view), a member started again
    by `scripts/lab.sh start-etcd`."""

    pid_prefix = "etcd-"
    servers_word = "members"

    def __init__(self, lab):
        if lab.dcs_kind != "etcd3":
            raise LabError(f"lab {lab.rid} runs on {lab.consul_label}, not on etcd")
        self.lab = lab
        self.servers = lab.etcd_members
        self.port = lab.topo.etcd_port
        self.addrs = {h: lab.topo.addr(h) for h in self.servers}

    def status(self, hosts):
        """{host: (its member id, the leader's member id)} of the members that answered."""
        tls = self.lab.path("etcd", "tls")
        eps = ",".join(f"https://{self.addrs[h]}:{self.port}" for h in hosts)
        try:
            r = subprocess.run(["ip", "netns", "exec", self.lab.ns("client"), "etcdctl", "--endpoints", eps,
                                "--cacert", f"{tls}/ca.pem", "--cert", f"{tls}/client-root.pem",
                                "--key", f"{tls}/client-root-key.pem", "--dial-timeout", "1s",
                                "--command-timeout", "2s", "-w", "json", "endpoint", "status"],
                               env=dict(os.environ, ETCDCTL_API="3"), stdin=subprocess.DEVNULL,
                               capture_output=True, text=True, timeout=15)
        except subprocess.TimeoutExpired:
            return {}
        try:
            answers = json.loads(r.stdout or "[]")
        except ValueError:
            return {}
        out = {}
        for a in answers:
            host = next((h for h in hosts if f"//{self.addrs[h]}:" in a.get("Endpoint", "")), None)
            st = a.get("Status") or {}
            if host:
                out[host] = (st.get("header", {}).get("member_id"), st.get("leader"))
        return out

    def raft_leader(self, host="client"):
        """The Raft leader: as the members that answer agree (host "client"),
        or as member `host` sees it; None while there is none."""
        hosts = self.servers if host == "client" else [host]
        st = self.status(self.servers)
        ids = {mid: h for h, (mid, _) in st.items()}
        leaders = {st[h][1] for h in hosts if h in st and st[h][1]}
        if len(leaders) != 1:
            return None
        return ids.get(leaders.pop())

    def wait_raft_leader(self, host="client", timeout=CONSUL_BACK_S, other_than=None):
        return base.wait_for(("the etcd members" if host == "client" else f"etcd member {host}")
                             + " to know a Raft leader" + (f" other than {other_than}" if other_than else ""),
                             timeout, lambda: (lambda h: h if h and h != other_than else None)(self.raft_leader(host)),
                             0.2)

    def start(self, host):
        runlab.lab_sh("start-etcd", host, env={"LAB_RUN_ID": self.lab.rid, "LAB_ROOT": self.lab.root}, timeout=60)


NETLINK_CONNECTOR = 11
CN_IDX_PROC = CN_VAL_PROC = 1
PROC_CN_MCAST_LISTEN, PROC_CN_MCAST_IGNORE = 1, 2
PROC_EVENT_EXEC, PROC_EVENT_EXIT = 0x2, 0x80000000
NLMSG_DONE = 3
EVENT_OFF = 16 + 20  # nlmsghdr, cn_msg


class Scheduler:
    """Runs callables at given CLOCK_MONOTONIC times (ns) on one thread."""

    def __init__(self, name):
        self.heap, self.seq = [], 0
        self.cond = threading.Condition()
        self.stopped = False
        self.thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self.thread.start()

    def at(self, t_ns, fn):
        with self.cond:
            self.seq += 1
            heapq.heappush(self.heap, (t_ns, self.seq, fn))
            self.cond.notify()

    def _loop(self):
        while True:
            with self.cond:
                while not self.stopped and (not self.heap or self.heap[0][0] > time.monotonic_ns()):
                    wait = None if not self.heap else (self.heap[0][0] - time.monotonic_ns()) / 1e9
                    self.cond.wait(wait)
                if self.stopped:
                    return
                _, _, fn = heapq.heappop(self.heap)
            try:
                fn()
            except Exception as e:  # a failed action is reported, the schedule goes on
                print(f"faults: scheduled action failed: {e}", file=sys.stderr)

    def stop(self):
        with self.cond:
            self.stopped = True
            self.cond.notify()
        self.thread.join(5)


class HookRuns:
    """Every run of the lab's hook binary (matched by /proc/<pid>/exe), from
    the kernel's process events connector: host (from --config), verb,
    wall-clock start, duration and how it ended (the kernel's timestamps).
    With `kill_window` set, each run is SIGKILLed at a random moment in its
    first `kill_window` seconds; `on_exec(run)` is called for every run."""

    def __init__(self, lab):
        self.exe = os.path.realpath(lab.path("bin", "patroni-hook"))
        self.run_dir = lab.run
        self.live, self.done = {}, []
        self.lock = threading.Lock()
        self.kill_window = None
        self.on_exec = None
        self.kills = []        # (pid, offset after exec in ms, whether a running process got it)
        self.overruns = 0
        self.sched = Scheduler("hook-run-killer")
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR)
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE
        self.sock.bind((0, CN_IDX_PROC))
        self.sock.settimeout(0.2)
        self._control(PROC_CN_MCAST_LISTEN)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="proc-events", daemon=True)
        self.thread.start()

    def _control(self, op):
        payload = struct.pack("=I", op)
        cn = struct.pack("=IIIIHH", CN_IDX_PROC, CN_VAL_PROC, 0, 0, len(payload), 0) + payload
        port = self.sock.getsockname()[0]
        self.sock.send(struct.pack("=IHHII", 16 + len(cn), NLMSG_DONE, 0, 0, port) + cn)

    def close(self):
        self.stopped.set()
        self.thread.join(5)
        with contextlib.suppress(OSError):
            self._control(PROC_CN_MCAST_IGNORE)
        self.sock.close()
        self.sched.stop()

    @staticmethod
    def _wall(ts_ns):
        return time.time() - (time.monotonic_ns() - ts_ns) / 1e9

    def _loop(self):
        while not self.stopped.is_set():
            try:
                data = self.sock.recv(1 << 16)
            except socket.timeout:
                continue
            except OSError as e:
                if e.errno == errno.ENOBUFS:  # events lost: counted, reported with the results
                    self.overruns += 1
                    continue
                if self.stopped.is_set():
                    return
                raise
            off = 0
            while off + EVENT_OFF + 16 <= len(data):
                length = struct.unpack_from("=I", data, off)[0]
                what, _cpu, ts = struct.unpack_from("=IIQ", data, off + EVENT_OFF)
                body = off + EVENT_OFF + 16
                if what == PROC_EVENT_EXEC:
                    pid, tgid = struct.unpack_from("=ii", data, body)
                    if pid == tgid:
                        self._exec(pid, ts)
                elif what == PROC_EVENT_EXIT:
                    pid, tgid, code, _sig = struct.unpack_from("=iiII", data, body)
                    if pid == tgid:
                        self._exit(pid, ts, code)
                if length < 16:
                    break
                off += (length + 3) & ~3

    def _exec(self, pid, ts):
        try:
            if os.readlink(f"/proc/{pid}/exe") != self.exe:
                return
            argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        except OSError:
            return
        args = [a.decode(errors="replace") for a in argv if a]
        host, verb = "?", " ".join(a for a in args[3:] if not a.startswith("/")) or "?"
        with contextlib.suppress(ValueError, IndexError):
            config = args[args.index("--config") + 1]
            host = os.path.basename(os.path.dirname(config))
        run = {"pid": pid, "ts": ts, "t": self._wall(ts), "host": host, "verb": verb}
        with self.lock:
            self.live[pid] = run
        if self.kill_window:
            at = ts + int(random.uniform(0, self.kill_window) * 1e9)
            self.sched.at(at, lambda: self._kill(pid, ts))
        if self.on_exec:
            self.on_exec(run)

    def _kill(self, pid, ts):
        with self.lock:
            running = pid in self.live and self.live[pid]["ts"] == ts
        if running:
            try:
                with open(f"/proc/{pid}/stat") as f:
                    running = f.read().rsplit(") ", 1)[1][0] != "Z"
            except (OSError, IndexError):
                running = False
        if running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.kills.append((pid, (time.monotonic_ns() - ts) / 1e6, running))

    def _exit(self, pid, ts, code):
        with self.lock:
            run = self.live.pop(pid, None)
            if run is None:
                return
            run["ms"] = round((ts - run["ts"]) / 1e6, 1)
            run["signal"] = code & 0x7F
            run["exit"] = (code >> 8) & 0xFF
            self.done.append(run)

    def between(self, t0, t1):
        with self.lock:
            return [r for r in self.done if t0 <= r["t"] <= t1]


def runs_summary(runs):
    """Counts and the slowest run per host and verb."""
    out = {"runs": len(runs), "killed": sum(1 for r in runs if r["signal"] == 9),
           "exit_codes": {}}
    for r in runs:
        k = f"signal {r['signal']}" if r["signal"] else str(r["exit"])
        out["exit_codes"][k] = out["exit_codes"].get(k, 0) + 1
    slow = sorted(runs, key=lambda r: r["ms"], reverse=True)[:5]
    out["slowest"] = [{"host": r["host"], "verb": r["verb"], "ms": r["ms"],
                       "ended": f"signal {r['signal']}" if r["signal"] else f"exit {r['exit']}"} for r in slow]
    return out


def set_failsafe(lab, on):
    """Sets Patroni's failsafe_mode (PATCH /config on the leader) and waits
    until every member's view of the configuration has it and, when on, the
    /failsafe topology names every member."""
    topo = lab.topo
    leader = leader_now(lab)
    nodes = topo.db_nodes

    def patch():
        conn = http.client.HTTPConnection(topo.addr(leader), topo.api_port, timeout=10)
        try:
            conn.request("PATCH", "/config", body=json.dumps({"failsafe_mode": on}),
                         headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            body = resp.read()
        finally:
            conn.close()
        if resp.status != 200:
            raise LabError(f"PATCH /config failsafe_mode={on} on {leader}: HTTP {resp.status} {body[:200]!r}")

    def applied():
        for n in nodes:
            api = f"{topo.addr(n)}:{topo.api_port}"
            try:
                if dcs.http_json(api, "/config").get("failsafe_mode", False) != on:
                    return False
                if on:
                    status, _, body = dcs.http_get(api, "/failsafe", 2.0)
                    if status != 200 or set(json.loads(body)) != set(nodes):
                        return False
            except (OSError, ValueError, http.client.HTTPException):
                return False
        return True

    in_netns(lab.ns("client"), patch)
    in_netns(lab.ns("client"), base.wait_for,
             f"every member to see failsafe_mode: {str(on).lower()}"
             + (" and a /failsafe topology of all members" if on else ""), 60, applied, 0.2)
    say(f"failsafe_mode is {str(on).lower()}")


class Ctx:
    """What a fault's action gets: the lab, the old primary, its directory,
    a place for problems and details, and undo steps run when it heals
    (also when it fails)."""

    def __init__(self, lab, old, ev_dir, runs):
        self.lab, self.old, self.dir, self.runs = lab, old, ev_dir, runs
        self.problems, self.details = [], {}
        self._undo = []

    def on_heal(self, what, fn):
        self._undo.append((what, fn))

    def heal(self):
        while self._undo:
            what, fn = self._undo.pop()
            try:
                fn()
            except Exception as e:  # every undo runs; each failure is a problem
                self.problems.append(f"healing ({what}): {e}")


def episode(lab, fault, variant, act, runs=None, converge_timeout=120.0, converge_under_fault=False,
            vip_within=None, new_leader=False, ini_guard=None):
    """One fault: load, reads, the sampler and the end-state tracer on; act
    (which ends the fault, or with `converge_under_fault` starts it, and
    returns the moment converge_ms counts from); wait (at most
    `converge_timeout`) for the end state, with a leader other than the old
    one when `new_leader`, the VIP's part within `vip_within` when given; wait
    for the cluster to be whole, the end state holding all along; analyse
    into a row. `ini_guard`: held while the end state's pgbouncer.ini is
    read (Sampler)."""
    old = leader_now(lab)
    ev_dir = events.next_event_dir(lab, f"{fault}-{re.sub(r'[^a-z0-9]+', '-', variant.lower()).strip('-')}")
    t0 = t_from = None
    first = last = None
    first_each = {}
    other_than = old if new_leader else None
    with measure.Measurement(lab, ev_dir, f"{os.path.basename(ev_dir)}-{lab.rid}", reads=True) as m:
        reads = m.reads
        ctx = Ctx(lab, old, ev_dir, runs)
        in_netns(lab.ns("client"), measure.wait_writes, m.load_log, ["pgbouncer", "vip", "direct"], old, 60)
        reads.wait_ready()
        tracer = Tracer(lab, ini_guard)
        say(f"{fault} ({variant}): primary is {old}")
        t0 = time.time()
        try:
            try:
                t_from = act(ctx)
                if converge_under_fault:
                    first, last, first_each = tracer.wait_converged(t_from, converge_timeout, other_than)
            finally:
                ctx.heal()
            if not converge_under_fault:
                first, last, first_each = tracer.wait_converged(t_from, converge_timeout, other_than)
        except BaseException:
            with contextlib.suppress(LabError):
                tracer.finish(0)
            raise
        if first is None:
            why = ", ".join(k for k in CONVERGED_KEYS if not (last or {}).get(k))
            ctx.problems.append(f"not converged {converge_timeout:.1f} s after the fault ended ({why})"
                                + (f": {brief(last)}" if last else ""))
        # What clients see: writes and reads through PgBouncer and the VIP
        # answered again, on the leader, after the fault's end.
        if first is not None:
            try:
                in_netns(lab.ns("client"), measure.wait_writes, m.load_log, ["pgbouncer", "vip"], first["leader"],
                         CLIENTS_BACK_S, since=t_from)
                reads.wait_ok(["pgbouncer", "vip"], t_from, CLIENTS_BACK_S)
            except LabError as e:
                ctx.problems.append(f"converged, but clients did not get through: {e}")
        t_vip = first_each.get("vip_on_leader_only")
        if vip_within is not None and (t_vip is None or t_vip - t_from > vip_within):
            ctx.problems.append(f"the VIP was not on the leader alone within {vip_within:.1f} s of the fault's end")
        try:
            in_netns(lab.ns("client"), runlab.wait_healthy, lab, 180)
        except LabError as e:
            ctx.problems.append(str(e))
        try:
            relapses, n = tracer.finish(first["t"] if first else float("inf"))
        except LabError as e:
            relapses, n = [], 0
            ctx.problems.append(str(e))
        ctx.problems += relapse_problems(relapses, n, t_from)
        final = in_netns(lab.ns("client"), observe_once, lab, ini_guard)
        if first is not None and not converged(final):
            ctx.problems.append(f"converged, then no longer: {brief(final)}")
        t_end = time.time()
    lost, why = m.lost_rows()
    if why:
        ctx.problems.append(why)
    elif lost:
        ctx.problems.append(f"{lost} acknowledged rows are missing (see {m.result_path})")
    ev = {"kind": f"{fault} ({variant})", "manager": lab.label, "pause_on": lab.pause_on, "old": old,
          "new": final["leader"], "t0": t0, "t_end": t_end, "nodes": lab.topo.db_nodes, "run": lab.run,
          "converged": not ctx.problems, "problems": ctx.problems}
    with open(os.path.join(ev_dir, "event.json"), "w") as f:
        json.dump(ev, f, indent=1)
    r = analysis.analyze(ev_dir)
    row = {
        "fault": fault, "variant": variant,
        "vip_two_nodes_ms": r["vip_two_nodes_ms"],
        "vip_absent_ms": vip_absent_ms(ev_dir, t0, t_end),
        "lost_rows": r["lost_rows"],
        "pgbouncer_failed_attempts": r["pgbouncer_failed_attempts"],
        "converged": {k: bool(final[k]) and k in first_each for k in CONVERGED_KEYS},
        "converge_ms": base.ms(first["t"] - t_from) if first else None,
        "n": 1,
        "old": old, "new": final["leader"],
        "writes_stalled_ms": write_stalls(m.load_log, t0, t_end),
        "reads_stalled_ms": reads.stalls(t0, t_end, old),
        "vip_two_node_spans": r["vip_two_node_spans"],
        "timeline_ms": [x for x in r["timeline_ms"] if x["t_ms"] is not None],
        "details": ctx.details,
        "problems": list(ctx.problems),
        "dir": ev_dir,
    }
    if runs is not None:
        seen = runs.between(t0, t_end)
        row["details"]["hook_runs"] = runs_summary(seen)
        with open(os.path.join(ev_dir, "hook-runs.json"), "w") as f:
            json.dump(seen, f, indent=1)
    row["holds"] = holds(row)
    with open(os.path.join(ev_dir, "row.json"), "w") as f:
        json.dump(row, f, indent=1)
    print_row(row)
    return row


def relapse_problems(relapses, n, t_from):
    """The problem (a list of none or one) of the samples that were not
    converged after the end state first was (Tracer.finish)."""
    if not relapses:
        return []
    return [f"after converging, {len(relapses)} of {n} samples (50 ms apart) were not, "
            f"from {base.ms(relapses[0]['t'] - t_from)} to {base.ms(relapses[-1]['t'] - t_from)} ms: "
            f"{brief(relapses[0])}"]


def brief(s):
    return (f"leader {s['leader'] or '-'}, VIP on {','.join(s['holders'] or []) or '-'}, "
            f"ini host {s['ini'] or '-'}, paused {s['paused']}")


def vip_absent_ms(ev_dir, t0, t_end):
    """How long, within [t0, t_end], no node held the VIP (the sampler's changes)."""
    changes = []
    for line in base.load_lines(os.path.join(ev_dir, "sampler.log")):
        p = line.split(None, 2)
        if len(p) == 3 and p[1] == "vip":
            changes.append((float(p[0]), p[2] != "-"))
    absent, held, since = 0.0, True, t0
    for t, h in changes:
        if t <= t0:
            held = h
            continue
        if t >= t_end:
            break
        if not held:
            absent += t - since
        held, since = h, t
    if not held:
        absent += t_end - since
    return base.ms(absent)


def holds(row):
    limit = TWO_NODES_LIMIT_MS.get(row["fault"], 0.0)
    return (row["lost_rows"] == 0 and row["vip_two_nodes_ms"] is not None and row["vip_two_nodes_ms"] <= limit
            and all(row["converged"].values()) and not row["problems"])


def print_row(row):
    c = row["converged"]
    say(f"{row['fault']} ({row['variant']}): {'HOLDS' if row['holds'] else 'DOES NOT HOLD'}; "
        f"VIP on two nodes {row['vip_two_nodes_ms']} ms, absent {row['vip_absent_ms']} ms; "
        f"lost rows {row['lost_rows']}; PgBouncer failed attempts {row['pgbouncer_failed_attempts']}; "
        f"converged {'/'.join(k for k in CONVERGED_KEYS if c[k]) or 'none'} in {row['converge_ms']} ms; "
        f"writes stalled {row['writes_stalled_ms']}; reads stalled {row['reads_stalled_ms']}")
    for p in row["problems"]:
        print(f"  PROBLEM: {p}", flush=True)


def combine(fault, variant, rows):
    """One row for repeated episodes of a fault: the worst of each figure,
    totals of counts, converged only if every episode converged."""
    def worst(key, sub=None):
        vs = [(r[key] if sub is None else r[key][sub]) for r in rows]
        vs = [v for v in vs if v is not None]
        return max(vs) if vs else None
    lost = [r["lost_rows"] for r in rows]
    row = {
        "fault": fault, "variant": variant,
        "vip_two_nodes_ms": worst("vip_two_nodes_ms"),
        "vip_absent_ms": worst("vip_absent_ms"),
        "lost_rows": None if any(v is None for v in lost) else sum(lost),
        "pgbouncer_failed_attempts": sum(r["pgbouncer_failed_attempts"] or 0 for r in rows),
        "converged": {k: all(r["converged"][k] for r in rows) for k in CONVERGED_KEYS},
        "converge_ms": None if any(r["converge_ms"] is None for r in rows) else worst("converge_ms"),
        "n": len(rows),
        "writes_stalled_ms": {p: worst("writes_stalled_ms", p) for p in ("pgbouncer", "vip", "direct")},
        "reads_stalled_ms": {p: worst("reads_stalled_ms", p) for p in ("pgbouncer", "vip", "replicas")},
        "details": {},
        "problems": [f"#{i + 1}: {p}" for i, r in enumerate(rows) for p in r["problems"]],
        "episodes": rows,
    }
    # Totals of what the episodes counted (hook runs, kills).
    for group in ("hook_runs", "kills"):
        for r in rows:
            for k, v in r.get("details", {}).get(group, {}).items():
                if isinstance(v, int):
                    row["details"].setdefault(group, {})
                    row["details"][group][k] = row["details"][group].get(k, 0) + v
    row["holds"] = holds(row) and bool(rows)
    return row


def sleep_until(t):
    """The fault's own duration (not a synchronisation): until wall time t."""
    while True:
        left = t - time.time()
        if left <= 0:
            return
        time.sleep(min(left, 0.5))


def fault_isolation(lab, _variant, _opts, _runs):
    def act(ctx):
        port = f"v-{ctx.old}"
        sw = lab.ns(lab.topo.switch)
        ip("-n", sw, "link", "set", port, "down")
        ctx.on_heal(f"{port} up", lambda: ip("-n", sw, "link", "set", port, "up"))
        say(f"isolation: {ctx.old}'s link to the bridge is down for {CUT_S:.0f} s")
        sleep_until(time.time() + CUT_S)
        ctx.heal()
        return time.time()
    return [episode(lab, "isolation", "link down 30 s", act)]


def consul_route(lab, host):
    """Blackhole routes in `host`'s namespace to the Consul double's host or
    to every Consul server (consul_routes), and their undo. On real Consul
    the host's own agent stays reachable on its loopback; it is its RPC to
    the servers (and its gossip with them) that is cut."""
    ns = lab.ns(host)
    dsts = consul_routes(lab_kind(lab), dcs_servers(lab), lab.topo.addr)
    added = []

    def undo():
        errors = []
        for dst in reversed(added):
            try:
                ip("-n", ns, "route", "del", "blackhole", dst)
            except LabError as e:
                errors.append(str(e))
        if errors:
            raise LabError("; ".join(errors))
    try:
        for dst in dsts:
            ip("-n", ns, "route", "add", "blackhole", dst)
            added.append(dst)
    except LabError:
        with contextlib.suppress(LabError):
            undo()
        raise
    return undo


def with_failsafe(lab, on, fn):
    """fn() (one episode, its row) with failsafe_mode `on`; back to false after."""
    set_failsafe(lab, on)
    try:
        row = fn()
    except BaseException:
        if on:
            with contextlib.suppress(LabError):
                set_failsafe(lab, False)
        raise
    if on:
        try:
            set_failsafe(lab, False)
        except LabError as e:
            row["problems"].append(f"setting failsafe_mode back to false: {e}")
            row["holds"] = False
    return row


def fault_consul_cut(lab, variant, _opts, _runs):
    on = variant == "failsafe-on"

    def act(ctx):
        ctx.on_heal("route to Consul back", consul_route(lab, ctx.old))
        say(f"{row_name('consul-cut', lab_kind(lab))}: {ctx.old} cannot reach {dcs_word(lab)} for {CUT_S:.0f} s "
            f"(failsafe_mode: {str(on).lower()})")
        sleep_until(time.time() + CUT_S)
        ctx.heal()
        return time.time()
    return [with_failsafe(lab, on, lambda: episode(lab, "consul-cut", f"failsafe_mode: {str(on).lower()}", act))]


def fault_consul_down(lab, variant, _opts, _runs):
    on = variant == "failsafe-on"

    def act(ctx):
        names = consul_pid_names(lab_kind(lab), dcs_servers(lab))
        pids = {n: lab.pid(n) for n in names}
        for n in names:
            base.kill(pids[n], signal.SIGSTOP, f"the DCS ({n})")
            ctx.on_heal(f"SIGCONT to {n}", lambda pid=pids[n]: os.kill(pid, signal.SIGCONT))
        what = {"double": "the Consul double", "real": "every Consul server", "etcd3": "every etcd member"}[lab_kind(lab)]
        say(f"{row_name('consul-down', lab_kind(lab))}: {what} ({', '.join(f'{n} pid {p}' for n, p in pids.items())}) is stopped for "
            f"{CUT_S:.0f} s (failsafe_mode: {str(on).lower()})")
        sleep_until(time.time() + CUT_S)
        ctx.heal()
        return time.time()
    return [with_failsafe(lab, on, lambda: episode(lab, "consul-down", f"failsafe_mode: {str(on).lower()}", act))]


def fault_pgbouncer_cut(lab, variant, _opts, _runs):
    def act(ctx):
        if variant == "before-pause":
            ctx.on_heal("PgBouncer host's route to Consul back", consul_route(lab, "pgb"))
            t_cut = time.time()
            join = switchover_async(lab, ctx.old, ctx.dir)
        else:
            admin = Admin(lab)
            join = switchover_async(lab, ctx.old, ctx.dir)
            try:
                base.wait_for("PgBouncer paused by the switchover (SHOW DATABASES)", 60,
                              lambda: admin.paused(), 0.005)
            finally:
                admin.close()
            ctx.on_heal("PgBouncer host's route to Consul back", consul_route(lab, "pgb"))
            t_cut = time.time()
            ctx.details["cut_after_pause"] = True
        say(f"pgbouncer-cut: the PgBouncer host cannot reach {dcs_word(lab)} for {PGB_CUT_S:.0f} s ({variant})")
        sleep_until(t_cut + PGB_CUT_S)
        ctx.heal()
        t_heal = time.time()
        err = join()
        if err:
            ctx.problems.append(err)
        return t_heal
    name = {"before-pause": "cut as the switchover starts", "while-paused": "cut while PgBouncer is paused"}[variant]
    return [episode(lab, "pgbouncer-cut", name, act, new_leader=True)]


def fault_killed_runs(lab, _variant, opts, runs):
    rows = []
    for i in range(opts.repeats):
        def act(ctx):
            runs.kill_window = KILL_WINDOW_S
            ctx.on_heal("killing stopped", lambda: setattr(runs, "kill_window", None))
            k0 = len(runs.kills)
            say(f"killed-runs {i + 1}/{opts.repeats}: every hook run is SIGKILLed within "
                f"{KILL_WINDOW_S * 1000:.0f} ms of its exec")
            t = time.time()
            events.act_switchover(lab, ctx.old, ctx.dir)
            in_netns(lab.ns("client"), runlab.wait_healthy, lab, 180)
            ctx.heal()
            offsets = sorted(o for _, o, running in runs.kills[k0:] if running)
            ctx.details["kills"] = {
                "delivered": len(offsets),
                "ms_after_exec": {"median": round(offsets[len(offsets) // 2], 1), "max": round(offsets[-1], 1)}
                if offsets else None,
                "late": sum(1 for o in offsets if o > KILL_WINDOW_S * 1000),
                "runs_during_switchover": len(runs.between(t, time.time()))}
            return time.time()
        # After the last kill: the VIP within one node timer period, the rest
        # within one PgBouncer timer period.
        try:
            rows.append(episode(lab, "killed-runs", f"switchover {i + 1}", act, runs=runs,
                                converge_timeout=PGB_TIMER_S + RUN_MARGIN_S,
                                vip_within=NODE_TIMER_S + RUN_MARGIN_S, new_leader=True))
        except LabError as e:
            runs.kill_window = None
            rows.append(failed_row("killed-runs", f"switchover {i + 1}", str(e)))
            break
    return [combine("killed-runs", f"{opts.repeats} switchovers", rows)]


def fault_slow_consul(lab, _variant, _opts, runs):
    def act(ctx):
        delay = lab.path("consul-delay")
        with open(delay, "w") as f:
            f.write(SLOW_DELAY + "\n")
        ctx.on_heal("Consul answers at once again", lambda: os.unlink(delay))
        say(f"slow-consul: every Consul answer comes {SLOW_DELAY} late; a switchover")
        t = time.time()
        events.act_switchover(lab, ctx.old, ctx.dir)
        return t

    def check(row):
        summary = row["details"].get("hook_runs", {})
        late = [r for r in summary.get("slowest", []) if r["ms"] > HOOK_DEADLINE_S * 1000]
        if late:
            row["problems"].append(f"hook runs past their {HOOK_DEADLINE_S:.0f} s deadline: {late}")
            row["holds"] = False
        return row
    return [check(episode(lab, "slow-consul", f"switchover, answers {SLOW_DELAY} late", act, runs=runs,
                          converge_under_fault=True, new_leader=True))]


class Operator:
    """An operator editing pgbouncer.ini while the hook rewrites it: odd edits
    add a database under [databases] the way `sed -i` does (a new file
    renamed over the old), even ones change a comment in place (the file
    rewritten through its own inode, as an editor with backupcopy does).
    Every edit is remembered; `check` says which are no longer there.

    An in-place edit leaves the file empty between its truncate and its
    write: the operator's own non-atomic write, not a state the hook left.
    Each edit is made holding `lock`, which the end-state sampler holds
    while it reads the file (the episode's `ini_guard`), so no sample falls
    inside one; every write is logged with the times it started and ended.
    The hook takes no part in the lock: what it leaves in the file is
    sampled as it is."""

    NOTE = "; operator note: "

    def __init__(self, lab):
        self.path = lab.path("pgbouncer", "pgbouncer.ini")
        self.log = open(lab.path("events", "operator-edits.log"), "a", buffering=1)
        self.db_host, self.port = lab.topo.addr(lab.topo.db_nodes[0]), lab.topo.pg_port
        self.managed = lab.topo.pgb_db
        self.lock = threading.Lock()
        self.n = 0
        self.added, self.note = [], None
        self.last_written = None
        self.lost = {}   # edit line -> when it was first seen missing

    def edit(self):
        with self.lock:
            with open(self.path) as f:
                text = f.read()
            self._check(text, "before an edit")
            self.n += 1
            lines = text.split("\n")
            if self.n % 2:
                line = f"op{self.n} = host={self.db_host} port={self.port} dbname=postgres"
                i = next(i for i, x in enumerate(lines) if x.strip() == "[databases]")
                lines.insert(i + 1, line)
                self.added.append(line)
                new = "\n".join(lines)
                t_write = time.time()
                st = os.stat(self.path)
                tmp = os.path.join(os.path.dirname(self.path), f".op-edit-{os.getpid()}")
                with open(tmp, "w") as f:
                    f.write(new)
                    os.fchown(f.fileno(), st.st_uid, st.st_gid)
                    os.fchmod(f.fileno(), st.st_mode & 0o7777)
                os.rename(tmp, self.path)
            else:
                note = f"{self.NOTE}edit {self.n}"
                i = next((i for i, x in enumerate(lines) if x.startswith(self.NOTE)), None)
                if i is None:
                    lines.insert(0, note)
                else:
                    lines[i] = note
                self.note = note
                new = "\n".join(lines)
                t_write = time.time()
                with open(self.path, "w") as f:  # O_TRUNC, then one write
                    f.write(new)
            self.last_written = new
            self.log.write(f"{time.time():.6f} edit {self.n} {'add' if self.n % 2 else 'comment'} "
                           f"(written from {t_write:.6f})\n")

    def _check(self, text, when):
        lines = set(text.split("\n"))
        for line in self.added + ([self.note] if self.note else []):
            if line not in lines and line not in self.lost:
                self.lost[line] = when
                self.log.write(f"{time.time():.6f} lost {line!r} ({when})\n")

    def check(self):
        """Edits missing now or ever, and whether the file is the operator's
        last version but for host= and port= of the managed entry."""
        with self.lock:
            with open(self.path) as f:
                text = f.read()
            self._check(text, "at the end")

            def norm(t):
                return [re.sub(r"\b(host|port)=\S+", r"\1=*", x) if re.match(rf"\s*{re.escape(self.managed)}\s*=", x)
                        else x for x in t.split("\n")]
            same = self.last_written is None or norm(text) == norm(self.last_written)
            return {"edits": self.n, "lost": dict(self.lost), "byte_for_byte": same}


def fault_ini_edits(lab, _variant, opts, runs):
    n = opts.edit_repeats
    op = Operator(lab)
    sched = Scheduler("operator")
    stop = threading.Event()
    rows = []
    reported = set()

    def periodic():
        while not stop.wait(0.3):
            try:
                op.edit()
            except OSError as e:
                print(f"faults: operator edit failed: {e}", file=sys.stderr)

    def on_exec(run):
        # An edit in the middle of the PgBouncer host's run, when it reads and
        # replaces the file.
        if run["host"] == "pgbouncer" and not stop.is_set():
            sched.at(run["ts"] + int(random.uniform(0.001, 0.015) * 1e9), op.edit)
    try:
        for i in range(n):
            def act(ctx):
                stop.clear()
                editor = threading.Thread(target=periodic, daemon=True)
                runs.on_exec = on_exec
                editor.start()

                def quiet():
                    runs.on_exec = None
                    stop.set()
                    editor.join(5)
                ctx.on_heal("operator stops editing", quiet)
                say(f"ini-edits {i + 1}/{n}: an operator edits pgbouncer.ini during a switchover")
                t = time.time()
                events.act_switchover(lab, ctx.old, ctx.dir)
                return t
            try:
                row = episode(lab, "ini-edits", f"switchover {i + 1}", act, runs=runs, converge_under_fault=True,
                              new_leader=True, ini_guard=op.lock)
            except LabError as e:
                rows.append(failed_row("ini-edits", f"switchover {i + 1}", str(e)))
                break
            seen = op.check()
            row["details"]["operator"] = seen
            lost = {k: v for k, v in seen["lost"].items() if k not in reported}
            reported.update(lost)
            if lost:
                row["problems"].append(f"operator edits lost: {lost}")
            if not seen["byte_for_byte"]:
                row["problems"].append("pgbouncer.ini differs from the operator's last version beyond host=/port= "
                                       "of the managed entry")
            if not holds(row) and row["holds"]:
                row["holds"] = False
                print_row(row)
            rows.append(row)
    finally:
        stop.set()
        runs.on_exec = None
        sched.stop()
    row = combine("ini-edits", f"{n} switchovers", rows)
    row["details"]["operator"] = op.check()
    return [row]


def fault_consul_leader_loss(lab, _variant, _opts, _runs):
    rc = EtcdCluster(lab) if lab_kind(lab) == "etcd3" else RealConsul(lab)

    def act(ctx):
        leader = rc.wait_raft_leader()
        ctx.details["killed"] = leader
        pid = lab.pid(f"{rc.pid_prefix}{leader}")
        base.kill(pid, signal.SIGKILL, f"the DCS server {leader}")
        t_kill = time.time()

        def back():
            base.wait_for(f"the killed Consul server {leader} (pid {pid}) to be gone", 10, lambda: gone(pid), 0.02)
            rc.start(leader)
            rc.wait_raft_leader(leader)
            ctx.details["killed_back_ms"] = base.ms(time.time() - t_kill)
        ctx.on_heal(f"the Consul server {leader} started again", back)
        say(f"{row_name('consul-leader-loss', lab_kind(lab))}: the Raft leader {leader} (pid {pid}) SIGKILLed; "
            "waiting for an election")
        new = rc.wait_raft_leader(other_than=leader)
        t_new = time.time()
        ctx.details.update(new_raft_leader=new, election_ms=base.ms(t_new - t_kill))
        say(f"{row_name('consul-leader-loss', lab_kind(lab))}: {new} leads after {t_new - t_kill:.1f} s; "
            f"{leader} starts again")
        ctx.heal()
        return t_new
    return [episode(lab, "consul-leader-loss", "Raft leader SIGKILLed", act, runs=_runs)]


def fault_consul_quorum_loss(lab, _variant, _opts, _runs):
    rc = EtcdCluster(lab) if lab_kind(lab) == "etcd3" else RealConsul(lab)

    def act(ctx):
        leader = rc.wait_raft_leader()
        victims = quorum_loss_victims(leader, rc.servers)
        pids = {v: lab.pid(f"{rc.pid_prefix}{v}") for v in victims}
        for v in victims:
            base.kill(pids[v], signal.SIGKILL, f"the DCS server {v}")
        t_kill = time.time()
        ctx.details.update(stopped=victims, raft_leader_before=leader)

        def back():
            for v in victims:
                base.wait_for(f"the killed Consul server {v} (pid {pids[v]}) to be gone", 10,
                              lambda pid=pids[v]: gone(pid), 0.02)
            t = time.time()
            for v in victims:
                rc.start(v)
            ctx.details["raft_leader_after"] = rc.wait_raft_leader()
            ctx.details["leader_back_ms"] = base.ms(time.time() - t)
            for v in victims:
                rc.wait_raft_leader(v)
        ctx.on_heal(f"the Consul servers {', '.join(victims)} started again", back)
        say(f"{row_name('consul-quorum-loss', lab_kind(lab))}: the {dcs_word(lab)} {rc.servers_word} "
            f"{', '.join(f'{v} (pid {pids[v]})' for v in victims)} "
            f"SIGKILLed for {CUT_S:.0f} s (the Raft leader was {leader})")
        sleep_until(t_kill + CUT_S)
        t_heal = time.time()
        ctx.heal()
        return t_heal
    return [episode(lab, "consul-quorum-loss", f"{len(quorum_loss_victims(None, rc.servers))} of "
                    f"{len(rc.servers)} {rc.servers_word} down {CUT_S:.0f} s", act, runs=_runs)]


def fault_agent_restart(lab, _variant, _opts, _runs):
    rc = RealConsul(lab)

    def act(ctx):
        host = ctx.old
        say(f"agent-restart: the Consul agent on the primary {host} restarted (SIGTERM, then started again)")
        t = time.time()
        pid = rc.stop(host, signal.SIGTERM)
        ctx.details["stopped_ms"] = base.ms(time.time() - t)
        ctx.on_heal(f"the Consul agent of {host} started again", lambda: rc.start(host))
        ctx.heal()
        t_start = time.time()
        rc.wait_raft_leader(host)
        t_back = time.time()
        ctx.details.update(agent=host, old_pid=pid, back_ms=base.ms(t_back - t_start))
        return t_back
    return [episode(lab, "agent-restart", "the primary's agent (SIGTERM, start)", act, runs=_runs)]


def fault_token_revoked(lab, _variant, _opts, runs):
    """The hook's tokens deleted (hook-db, which db1..3's hook and watches
    use, and pgbouncer, the PgBouncer host's); once every agent refuses them
    (an agent caches a token's resolution: acl.token_ttl, 30 s by default),
    a switchover; REVOKED_HOLD_S after the cluster is whole again, new
    tokens installed. converge counts from the installation."""
    rc = RealConsul(lab)
    topo = lab.topo
    hook_dirs = {"hook-db": list(topo.db_nodes), "pgbouncer": ["pgbouncer"]}
    agent_of = {n: n for n in topo.db_nodes}
    agent_of["pgbouncer"] = "pgb"
    box = {}

    def install(old):
        pg = pwd.getpwnam("postgres")
        new_by_old = {}
        for role, dirs in hook_dirs.items():
            out = rc.cli("client", "acl", "token", "create", "-description", f"lab {role} (reissued)",
                         "-policy-name", f"lab-{role}", "-format=json")
            secret = json.loads(out)["SecretID"]
            new_by_old[old[role]] = secret
            # The lab's record of the secret, then each host's token file (replaced whole).
            for path, owner in [(lab.path("consul", "tokens", role), (0, 0))] + \
                               [(lab.path(d, "consul.token"), (pg.pw_uid, pg.pw_gid)) for d in dirs]:
                tmp = f"{path}.new"
                with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
                    f.write(secret + "\n")
                    os.fchown(f.fileno(), *owner)
                os.rename(tmp, path)
        # The agents' watches: their tokens in each agent's configuration, then `consul reload`.
        changed = {}
        for d, host in agent_of.items():
            path = lab.path("consul", host, "consul.json")
            with open(path) as f:
                config, n = with_watch_tokens(json.load(f), new_by_old)
            changed[host] = n
            with open(os.open(f"{path}.new", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
                json.dump(config, f, indent=2)
                f.write("\n")
            os.rename(f"{path}.new", path)
            rc.cli(host, "reload")
        box["t_install"] = time.time()
        box["watches_changed"] = changed

    def act(ctx):
        old = {role: rc.token(role) for role in hook_dirs}
        accessors = {}
        for role, secret in old.items():
            status, body = rc.get("client", "/v1/acl/token/self", token=secret)
            if status != 200:
                raise LabError(f"reading the {role} token's accessor: HTTP {status} {body!r:.200}")
            accessors[role] = json.loads(body)["AccessorID"]
        for role, acc in accessors.items():
            rc.cli("client", "acl", "token", "delete", "-id", acc)
        t_revoke = time.time()
        ctx.on_heal("new tokens installed", lambda: install(old))
        say(f"token-revoked: the hook's tokens ({', '.join(old)}) deleted; waiting until every agent refuses them")
        # Each host's agent refuses its hook's token once its cached resolution expires.
        refused = {}

        def all_refused():
            for d, host in agent_of.items():
                if d in refused:
                    continue
                role = "pgbouncer" if d == "pgbouncer" else "hook-db"
                status, body = rc.get(host, f"/v1/kv/{lab.leader_key}", token=old[role])
                if status == 403:
                    refused[d] = time.time()
            return len(refused) == len(agent_of)
        base.wait_for("every agent to refuse the deleted tokens (403)", 90, all_refused, 0.2)
        box["refused"] = refused
        ctx.details["refused_after_ms"] = {d: base.ms(t - t_revoke) for d, t in refused.items()}
        say("token-revoked: every agent refuses the hook's tokens; a switchover")
        t_sw = time.time()
        err = None
        try:
            events.act_switchover(lab, ctx.old, ctx.dir)
            in_netns(lab.ns("client"), runlab.wait_healthy, lab, 180)
        except LabError as e:
            err = str(e)
            ctx.problems.append(f"the switchover while revoked: {e}")
        box["t_switchover"] = t_sw
        if err is None:
            sleep_until(time.time() + REVOKED_HOLD_S)
        ctx.heal()
        if "t_install" not in box:
            raise LabError("new tokens were not installed")
        ctx.details.update(revoked_ms=base.ms(box["t_install"] - t_revoke),
                           switchover_after_revoke_ms=base.ms(t_sw - t_revoke),
                           watches_changed=box["watches_changed"])
        say(f"token-revoked: new tokens installed {box['t_install'] - t_revoke:.1f} s after the revocation")
        return box["t_install"]

    row = episode(lab, "token-revoked", "switchover while revoked", act, runs=runs, new_leader=True)
    # What the hook said and how its runs ended while it could not read Consul.
    if "refused" in box and "t_install" in box:
        t_from, t_to = min(box["refused"].values()), box["t_install"]
        said = {}
        for h in analysis.hook_log(lab.run, topo.db_nodes):
            if t_from <= h["t"] <= t_to and "does not know this token" in h["msg"]:
                host = h["source"].split("/")[0]
                said[host] = said.get(host, 0) + 1
        row["details"]["said_unknown_token"] = said
        silent = [d for d in agent_of if not said.get(d)]
        if silent:
            row["problems"].append(f"while revoked, no run on {', '.join(silent)} said "
                                   "\"Consul does not know this token\"")
        seen = runs.between(t_from, t_to)
        row["details"]["runs_while_refused"] = runs_summary(
            [r for r in seen if r["host"] in box["refused"] and box["refused"][r["host"]] <= r["t"]])
        bad = exit_75_while_refused(seen, box["refused"], t_to)
        if bad:
            row["problems"].append(f"{len(bad)} run(s) exited 75 (temporary) while their token was refused: "
                                   + ", ".join(f"{r['host']} {r['verb']}" for r in bad[:5]))
        row["holds"] = holds(row)
        if row["problems"]:
            print_row(row)
    return [row]


# name: its variants (`-`: none); the order is the order they run in.
FAULTS = {
    "isolation": ["-"],
    "consul-cut": ["failsafe-off", "failsafe-on"],
    "consul-down": ["failsafe-off", "failsafe-on"],
    "pgbouncer-cut": ["before-pause", "while-paused"],
    "killed-runs": ["-"],
    "slow-consul": ["-"],
    "ini-edits": ["-"],
    "consul-leader-loss": ["-"],
    "consul-quorum-loss": ["-"],
    "agent-restart": ["-"],
    "token-revoked": ["-"],
}
RUN = {
    "isolation": fault_isolation,
    "consul-cut": fault_consul_cut,
    "consul-down": fault_consul_down,
    "pgbouncer-cut": fault_pgbouncer_cut,
    "killed-runs": fault_killed_runs,
    "slow-consul": fault_slow_consul,
    "ini-edits": fault_ini_edits,
    "consul-leader-loss": fault_consul_leader_loss,
    "consul-quorum-loss": fault_consul_quorum_loss,
    "agent-restart": fault_agent_restart,
    "token-revoked": fault_token_revoked,
}
NEEDS_RUNS = {"killed-runs", "slow-consul", "ini-edits", "consul-leader-loss", "consul-quorum-loss",
              "agent-restart", "token-revoked"}


def parse_only(text):
    """--only LIST -> [(fault, variant)] in the matrix's order."""
    if not text:
        return [(f, v) for f, vs in FAULTS.items() for v in vs]
    wanted = set()
    for item in (x.strip() for x in text.split(",")):
        if not item:
            continue
        name, _, variant = item.partition(":")
        if name not in FAULTS:
            raise LabError(f"--only: unknown fault {name!r} (known: {', '.join(FAULTS)})")
        if variant and variant not in FAULTS[name]:
            raise LabError(f"--only: {name} has no variant {variant!r} (variants: {', '.join(FAULTS[name])})")
        for v in ([variant] if variant else FAULTS[name]):
            wanted.add((name, v))
    return [(f, v) for f, vs in FAULTS.items() for v in vs if (f, v) in wanted]


def plan_for(text, kind):
    """--only LIST on Consul `kind` -> ([(fault, variant)] to run, [(fault,
    variant, why)] skipped), both in the matrix's order."""
    todo, skipped = [], []
    for f, v in parse_only(text):
        why = skip_reason(f, kind)
        if why:
            skipped.append((f, v, why))
        else:
            todo.append((f, v))
    return todo, skipped


TABLE_NOTES = """\
Milliseconds. One row per fault and variant (a repeated fault: the worst of its episodes, counts
summed). VIP on two nodes / absent: from sampling the three nodes' addresses every 20 ms, from the
fault's start until the cluster was whole again. Writes stalled: the longest gap between two
acknowledged writes (one attempt every 20 ms through PgBouncer, through the VIP, and directly to
each node: "direct" is Patroni's own outage). Reads stalled: the longest gap between two answered
`SELECT 1` (one every 50 ms) through PgBouncer, through the VIP, and on the nodes that were
replicas when the fault started (the worst of them). Converged: at the end, the VIP on the leader
alone, pgbouncer.ini naming the leader, PgBouncer not paused; converge: from the fault's end (heal,
SIGCONT, the last kill, a new Raft leader elected, the servers started again, the agent back, new
tokens installed) or, under a lasting fault (slow Consul, the operator's edits), from the
switchover's start, until all three held. Holds: no acknowledged row lost, the VIP never on two
nodes (at most 150 ms where the hook's own runs are killed), converged, nothing else wrong (for
token-revoked: every host's hook said "Consul does not know this token" and none of its runs
exited 75 while the token was refused). Load: the machine's 1-minute load average when the row
ended.
"""


def cell(v):
    return "n/a" if v is None else f"{v:.0f}"


def load_cell(v):
    return "n/a" if v is None else f"{v:.1f}"


def markdown(rows, title, skipped=()):
    lines = [f"{title}\n", TABLE_NOTES,
             "| fault | variant | n | VIP on two nodes | VIP absent | writes stalled PgBouncer / VIP / direct "
             "| reads stalled PgBouncer / VIP / replicas | lost rows | PgBouncer failed attempts "
             "| converged VIP / ini / not paused | converge | holds | load |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        w, rd, c = r["writes_stalled_ms"], r["reads_stalled_ms"], r["converged"]
        lines.append(
            f"| {r['fault']} | {r['variant']} | {r['n']} | {cell(r['vip_two_nodes_ms'])} | {cell(r['vip_absent_ms'])} "
            f"| {cell(w['pgbouncer'])} / {cell(w['vip'])} / {cell(w['direct'])} "
            f"| {cell(rd['pgbouncer'])} / {cell(rd['vip'])} / {cell(rd['replicas'])} "
            f"| {'n/a' if r['lost_rows'] is None else r['lost_rows']} | {r['pgbouncer_failed_attempts']} "
            f"| {' / '.join('yes' if c[k] else 'NO' for k in CONVERGED_KEYS)} | {cell(r['converge_ms'])} "
            f"| {'yes' if r['holds'] else 'NO'} | {load_cell(r.get('load'))} |")
    problems = [(r, p) for r in rows for p in r["problems"]]
    if problems:
        lines.append("\nProblems:\n")
        lines += [f"- {r['fault']} ({r['variant']}): {p}" for r, p in problems]
    if skipped:
        lines.append("\nSkipped on this DCS:\n")
        lines += [f"- {f}{'' if v == '-' else ' (' + v + ')'}: {why}" for f, v, why in skipped]
    return "\n".join(lines) + "\n"


def failed_row(fault, variant, why):
    return {"fault": fault, "variant": variant, "vip_two_nodes_ms": None, "vip_absent_ms": None, "lost_rows": None,
            "pgbouncer_failed_attempts": None, "converged": {k: False for k in CONVERGED_KEYS},
            "converge_ms": None, "n": 0, "writes_stalled_ms": {p: None for p in ("pgbouncer", "vip", "direct")},
            "reads_stalled_ms": {p: None for p in ("pgbouncer", "vip", "replicas")}, "details": {},
            "problems": [why], "holds": False}


def lab_is_sound(lab):
    """Whether the next fault can run on this lab: a whole cluster and the end
    state converged (bounded waits)."""
    try:
        in_netns(lab.ns("client"), runlab.wait_healthy, lab, 120)
        first, last, _ = in_netns(lab.ns("client"), wait_state, lab, time.time(), 60)
        if first is None:
            print(f"faults: lab {lab.rid} did not settle: {brief(last)}", file=sys.stderr)
        return first is not None
    except LabError as e:
        print(f"faults: lab {lab.rid}: {e}", file=sys.stderr)
        return False


def scenario(topo, argv):
    ap = argparse.ArgumentParser(prog="scripts/lab.sh faults",
                                 description="The fault matrix on the hook's lab (see scripts/lab/labkit/faults.py).")
    ap.add_argument("--consul", choices=CONSUL_KINDS, default=None,
                    help="the Consul of the lab it brings up (default: LAB_CONSUL, else the topology's "
                    "LAB_CONSUL_DEFAULT); with --use-lab, the lab's own, which this must match")
    ap.add_argument("--dcs", choices=("consul", "etcd3"), default=None,
                    help="the DCS of the lab it brings up (default: LAB_DCS, else the topology's LAB_DCS_DEFAULT); "
                    "on etcd3 the Consul faults run on etcd's members (etcd-cut, etcd-down, etcd-leader-loss, "
                    "etcd-quorum-loss; --only takes either name)")
    ap.add_argument("--only", default="", help="comma list of faults or FAULT:VARIANT (default: all): "
                    + ", ".join(f"{f}" + (f" [{'|'.join(v)}]" if v != ['-'] else "") for f, v in FAULTS.items()))
    ap.add_argument("--repeats", type=int, default=None,
                    help="switchovers in killed-runs (default 10) and ini-edits (default 3)")
    ap.add_argument("--use-lab", action="store_true",
                    help="run on the lab that is up ($LAB_RUN_ID or $LAB_ROOT/current) and leave it up")
    a = ap.parse_args(argv)
    etcd_aliases = {v: k for k, v in ETCD_NAMES.items()}
    a.only = ",".join(etcd_aliases.get(x.split(":")[0], x.split(":")[0]) + (":" + x.split(":", 1)[1] if ":" in x else "")
                      for x in a.only.split(",") if x.strip())
    if a.use_lab:
        kind = lab_kind(runlab.Lab.current(topo))
        if a.consul and a.consul != kind:
            raise LabError(f"--consul {a.consul}, but the lab that is up runs on {kind or 'etcd'}")
        if a.dcs and (a.dcs == "etcd3") != (kind == "etcd3"):
            raise LabError(f"--dcs {a.dcs}, but the lab that is up runs on {kind}")
    elif (a.dcs or os.environ.get("LAB_DCS") or topo.get("LAB_DCS_DEFAULT")) == "etcd3":
        kind = "etcd3"
        os.environ["LAB_DCS"] = "etcd3"
    else:
        kind = consul_kind(a.consul, os.environ.get("LAB_CONSUL"), topo.get("LAB_CONSUL_DEFAULT"))
        # The labs this brings up (lab.sh up) run on it.
        os.environ["LAB_CONSUL"] = kind
        os.environ["LAB_DCS"] = "consul"
    plan, skipped = plan_for(a.only, kind)
    if a.repeats is not None and a.repeats < 1:
        raise LabError(f"--repeats must be at least 1, not {a.repeats}")
    a.edit_repeats = a.repeats or 3
    a.repeats = a.repeats or 10
    where = {"real": "real Consul", "double": "the Consul double", "etcd3": "etcd"}[kind]
    skipped = [(row_name(f, kind), v, why) for f, v, why in skipped]
    for f, v, why in skipped:
        say(f"skipped on {where}: {f}{'' if v == '-' else ' (' + v + ')'}: {why}")
    started = time.time()
    head = {"consul": None}

    def title():
        load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
        return (f"scripts/lab.sh faults {'--dcs etcd3' if kind == 'etcd3' else '--consul ' + kind}"
                f"{' --only ' + a.only if a.only else ''}"
                f"{' --repeats ' + str(a.repeats) if a.repeats != 10 else ''}, "
                f"on {head['consul'] or where}, {time.strftime('%Y-%m-%d %H:%M', time.gmtime(started))} "
                f"UTC, {os.cpu_count()} CPUs, load (1/5/15 min) {load} at {time.strftime('%H:%M', time.gmtime())}")
    rows = []

    def save():
        data = [{k: v for k, v in r.items() if k not in ("episodes", "timeline_ms", "dir")} for r in rows]
        return write(rows, data, title(), skipped)

    todo = list(plan)
    try:
        while todo:
            if a.use_lab:
                session = contextlib.nullcontext(runlab.Lab.current(topo))
            else:
                # The first lab may take its run id from LAB_RUN_ID, as the demo's does.
                rid = os.environ.get("LAB_RUN_ID") if not rows else None
                session = runlab.lab_session(topo, "hook", rid=rid)
            with session as lab:
                if lab.manager != "hook":
                    raise LabError(f"lab {lab.rid} runs {lab.manager}; the fault matrix needs the hook's lab")
                if lab_kind(lab) != kind:
                    raise LabError(f"lab {lab.rid} runs on {lab.consul_label}, not on {where}")
                head["consul"] = lab.consul_label
                runs = HookRuns(lab)
                try:
                    while todo:
                        fault, variant = todo[0]
                        if not lab_is_sound(lab):
                            if a.use_lab:
                                raise LabError(f"lab {lab.rid} is not whole; faults left: {todo}")
                            say(f"lab {lab.rid} is not whole; the faults left run on a new lab")
                            break
                        todo.pop(0)
                        try:
                            got = RUN[fault](lab, variant, a, runs if fault in NEEDS_RUNS else None)
                        except LabError as e:
                            print(f"faults: {fault} ({variant}): {e}", file=sys.stderr)
                            got = [failed_row(fault, variant, str(e))]
                        load = round(os.getloadavg()[0], 2)
                        for r in got:
                            r["fault"] = row_name(r["fault"], kind)
                            r["consul"] = lab.consul
                            r["dcs"] = lab.dcs_kind
                            r["load"] = load
                        rows.extend(got)
                        save()
                finally:
                    runs.close()
                    if runs.overruns:
                        print(f"faults: {runs.overruns} process event overruns (some hook runs not seen)",
                              file=sys.stderr)
    finally:
        md, paths = save()
    print(md)
    say(f"fault matrix written to {paths[1]} and {paths[0]} in {time.time() - started:.0f} s")
    bad = [f"{r['fault']} ({r['variant']})" for r in rows if not r["holds"]]
    if bad:
        raise LabError(f"{len(bad)} row(s) do not hold: {', '.join(bad)} (see {paths[1]})")


def write(rows, data, title, skipped=()):
    md = markdown(rows, title, skipped)
    paths = reports.write_results("faults", data, md)
    return md, paths
