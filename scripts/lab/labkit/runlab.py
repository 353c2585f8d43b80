"""One running lab: $LAB_ROOT/<run id> as scripts/lab.sh up wrote it (its
variant, files, pids), its DCS and namespaces, bringing one up and always
taking it down around a scenario (lab_session, through lab.sh), waiting for
a healthy cluster, its status, and the real-Consul agents' configurations
rendered from the kit (kit_consul_config, for lab.sh up)."""

import contextlib
import http.client
import json
import os
import random
import re
import ssl
import subprocess
import sys
import time

from . import reports
from .base import DEFAULT_ROOT, LAB_SH, LabError, PATRONICTL, REPO, alive, load_lines, signals_ignored, wait_for
from .dcs import Consul, EtcdV2Tls, EtcdV3, http_json
from .measure import Sampler
from .netns import in_netns
from .topology import parse_env_file


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
        # Which DCS: "consul" or "etcd3" (the three etcd members; the
        # vip-manager variant runs there too, its Patroni on their v2 API).
        self.dcs_kind = state.get("LAB_DCS") or ("consul" if self.manager == "hook" else "etcd3")
        self.etcd_version = state.get("LAB_ETCD_VERSION") or None
        reports.CONSUL_RAN_ON = self.consul
        reports.DCS_RAN_ON = self.dcs_record
        reports.ETCD_API = self.etcd_api

    @property
    def on_etcd3(self):
        """The hook's lab on etcd3 (Patroni and the hook on the v3 API)."""
        return self.manager == "hook" and self.dcs_kind == "etcd3"

    @property
    def etcd_members(self):
        return self.topo.get("LAB_ETCD_MEMBERS").split() if self.dcs_kind == "etcd3" else []

    def etcd_member_pids(self):
        return {h: self.pid(f"etcd-{h}") for h in self.etcd_members}

    @property
    def dcs_record(self):
        """Which DCS, as every JSON the lab writes records it ("dcs")."""
        return self.dcs_kind

    @property
    def etcd_api(self):
        """The etcd API Patroni uses: v3 (hook) or v2 (vip-manager); None on Consul."""
        if self.dcs_kind != "etcd3":
            return None
        return "v3" if self.manager == "hook" else "v2"

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
        if self.consul_kind == "double":
            return "the Consul double"
        return f"etcd {self.etcd_version or '3.4'} (three members, Patroni on its {self.etcd_api} API)"

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
        address, the client host's own Consul agent over HTTPS with the
        management token, or the etcd members (v3 for the hook, v2 for
        vip-manager) with root's client certificate."""
        t = self.topo
        if self.manager == "hook" and self.consul_kind == "real":
            ctx = ssl.create_default_context(cafile=self.path("consul", "tls", "ca.pem"))
            token = open(self.path("consul", "tokens", "master")).read().strip()
            return Consul(f"127.0.0.1:{t.get('LAB_CONSUL_HTTPS_PORT')}", tls=ctx, token=token)
        if self.dcs_kind == "etcd3":
            # Every member over HTTPS as etcd's root user: v3 through the
            # gateway (a certificate without a CN, root's password), v2 with
            # root's certificate (v2 has no auth of its own here).
            tls = lambda name: (self.path("etcd", "tls", f"{name}.pem"), self.path("etcd", "tls", f"{name}-key.pem"))  # noqa: E731
            ctx = ssl.create_default_context(cafile=self.path("etcd", "tls", "ca.pem"))
            hosts = [f"{t.addr(m)}:{t.etcd_port}" for m in self.etcd_members]
            if self.manager == "hook":
                ctx.load_cert_chain(*tls("gateway-root"))
                password = open(self.path("etcd", "passwords", "root")).read().strip()
                return EtcdV3(hosts, ctx, auth=("root", password))
            ctx.load_cert_chain(*tls("client-root"))
            return EtcdV2Tls(hosts, ctx)
        return Consul(f"{t.addr('consul')}:{t.consul_port}")

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


def ini_host(ini, db):
    for line in load_lines(ini):
        m = re.match(rf"^\s*{re.escape(db)}\s*=(.*)$", line)
        if m:
            h = re.search(r"\bhost=(\S+)", m.group(1))
            return h.group(1) if h else None
    return None


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


@contextlib.contextmanager
def lab_session(topo, manager, rid=None, interval_ms=None, pause_on=None, extra_env=None, dcs=None):
    """A lab of the given variant brought up for a scenario and always taken
    down afterwards (also when the scenario fails or is interrupted).
    `extra_env`: more LAB_* settings for `up` (LAB_BACKUP, LAB_LEGACY);
    `dcs`: consul or etcd3 (LAB_DCS; else what the environment says)."""
    rid = rid or new_run_id()
    root = os.environ.get("LAB_ROOT") or DEFAULT_ROOT
    env = {"LAB_RUN_ID": rid, "LAB_ROOT": root, "LAB_VIP_MANAGER": manager, **(extra_env or {})}
    if dcs:
        env["LAB_DCS"] = dcs
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
        sampler = Sampler(lab)
        wait_for(f"the VIP on {lead} alone after restarting vip-manager", 30,
                 lambda: sampler.holders() == [lead], 0.02)
    in_netns(lab.ns("client"), on_leader_alone)


def show_status(lab):
    topo = lab.topo
    print(f"lab {lab.rid} in {lab.run}, VIP managed by {lab.label}, on {lab.consul_label}")
    if lab.dcs_kind == "etcd3":
        print(f"  etcd members: {', '.join(lab.etcd_members)} (HTTPS :{topo.etcd_port}, client certificates)")
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
        sampler = Sampler(lab)
        lead = sampler.leader()
        holder = sampler.read(lab.holder_key)[0] if lab.manager == "hook" else "(not used by vip-manager)"
        return lead, holder, sampler.holders()
    try:
        lead, holder, on = in_netns(lab.ns("client"), dcs_view)
    except (OSError, http.client.HTTPException, ValueError) as e:
        raise LabError(f"reading the DCS or the nodes' addresses: {e}")
    print(f"leader key:        {lead or '-'}")
    print(f"vip-holder record: {holder or '-'}")
    print(f"VIP {topo.vip} on:  {','.join(on) or '-'}")
    ini = next((line for line in load_lines(lab.path("pgbouncer", "pgbouncer.ini")) if line.startswith(topo.pgb_db)), "-")
    print(f"pgbouncer.ini:     {ini}")


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
