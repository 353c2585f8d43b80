"""Adopting what already runs: the `adopt-single` and `adopt-cluster`
scenarios (scripts/lab.sh adopt-single | adopt-cluster), registered in
scenarios.SCENARIOS.

Each brings up a legacy lab of its own (LAB_LEGACY=1: the hosts, the Consul
double and PgBouncer; no Patroni, the hook's watches and timers not yet
installed), builds an existing setup there the way it ran before, then,
while a client writes through PgBouncer and through the VIP, adopts it with
the runbook's own scripts (scripts/adopt/adopt-node.sh and
adopt-pgbouncer.sh, the steps docs/operations.md shows), measures the write
outage the adoption cost and checks that no acknowledged row was lost. A
switchover afterwards shows the VIP and PgBouncer following the leader.

adopt-single: a standalone PostgreSQL 15 on db1 with data, the VIP added by
hand, a hand-written pgbouncer.ini pointing at db1. Patroni takes over db1's
data directory in place, the hook takes over the VIP where it is and
reconcile the [databases] entries as they are; then db2 and db3 are added as
replicas.

adopt-cluster: the consul-template shape of docs/operations.md ("Migrating
from consul-template"): a primary (db1) and two streaming replicas made with
pg_basebackup, not managed by Patroni; the VIP moved by a script on a Consul
watch, pgbouncer.ini rendered from a template (scripts/lab/legacy-glue.sh),
both following a key the operator writes. All three come under Patroni
without re-cloning the replicas (same system identifier, their data
directories untouched, no base backup in their logs).

Where the runbook says `systemctl ...`, the lab passes its equivalents to
the scripts: lab.sh start-patroni NODE, lab.sh enable-reconcile HOST (the
hook's watch in the agent's configuration, run once, and its timer), and
removing the old glue's watch entry (its consul-template stopped).
"""

import difflib
import hashlib
import os
import re
import time

from . import base, events, measure, netns, runlab
from .checks import Checks, hook_follows, outage, run_in, sql

ADOPT_NODE = os.path.join(base.REPO, "scripts", "adopt", "adopt-node.sh")
ADOPT_PGBOUNCER = os.path.join(base.REPO, "scripts", "adopt", "adopt-pgbouncer.sh")
PG_BIN = os.environ.get("PG_BIN") or "/usr/lib/postgresql/15/bin"
LEGACY_ROWS = 20000
FINGERPRINT = ("SELECT count(*) || ' rows, md5 ' || md5(string_agg(id || ':' || owner || ':' || balance, ',' ORDER BY id)) "
               "FROM legacy_accounts")


def as_postgres(lab, host, argv, timeout=180):
    rc, out = run_in(lab, host, argv, timeout=timeout, user="postgres",
                     env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": lab.path(host), "LC_ALL": "C.UTF-8"},
                     log=lab.path("logs", "adopt-commands.log"))
    if rc != 0:
        raise base.LabError(f"{' '.join(argv[:3])} on {host} failed (exit {rc}): {out.strip()[-400:]}")
    return out


def consul_put(lab, key, value):
    """Writes a KV key of the lab's Consul (the double, or real Consul through
    the client host's agent with the management token), as `consul kv put` would."""

    def put():
        status, body = lab.dcs().request("PUT", f"/v1/kv/{key}", body=value.encode())
        if status != 200 or body.strip() != b"true":
            raise base.LabError(f"PUT /v1/kv/{key}: HTTP {status}")
    netns.in_netns(lab.ns("client"), put)


# ---- the existing setup -----------------------------------------------------------

def legacy_conf(lab, node, wal_log_hints):
    """The legacy server's own settings, appended to postgresql.conf (the
    last setting wins): what an operator ran before Patroni."""
    return ("\n# The legacy setup's settings (scripts/lab/labkit/adopt.py)\n"
            "listen_addresses = '*'\n"
            f"port = {lab.topo.pg_port}\n"
            f"unix_socket_directories = '{lab.path(node)}'\n"
            "wal_level = replica\n"
            "max_wal_senders = 10\n"
            "max_replication_slots = 10\n"
            "hot_standby = on\n"
            f"wal_log_hints = {'on' if wal_log_hints else 'off'}\n"
            "shared_buffers = 32MB\n")


def start_legacy_pg(lab, node, upstream=None, wal_log_hints=True):
    """PostgreSQL 15 on `node` as the legacy setup ran it, started with
    pg_ctl: initdb, or a streaming replica of `upstream` made with
    pg_basebackup (its own replication slot, as the old runbook had it)."""
    t = lab.topo
    data = lab.path(node, "data")
    if upstream is None:
        as_postgres(lab, node, [f"{PG_BIN}/initdb", "-D", data, "-U", "postgres", "--auth=trust",
                                "-E", "UTF8", "--locale=C"])
        with open(os.path.join(data, "pg_hba.conf"), "a") as f:
            f.write("\n# The legacy setup: its network only (the lab's documentation range)\n"
                    "host all all 198.51.100.0/24 trust\nhost replication all 198.51.100.0/24 trust\n")
    else:
        as_postgres(lab, node, [f"{PG_BIN}/pg_basebackup", "-h", t.addr(upstream), "-p", str(t.pg_port),
                                "-U", "replicator", "-D", data, "-R", "-X", "stream", "-C", "-S", f"legacy_{node}",
                                "--checkpoint=fast"], timeout=300)
    with open(os.path.join(data, "postgresql.conf"), "a") as f:
        f.write(legacy_conf(lab, node, wal_log_hints))
    # A file of this node's own in its data directory: a re-clone or a
    # restore would not bring it back with this content.
    with open(os.path.join(data, "adopt-marker"), "w") as f:
        f.write(f"{node} legacy data directory, written {time.time():.6f}\n")
    as_postgres(lab, node, [f"{PG_BIN}/pg_ctl", "-D", data, "-l", lab.path("logs", f"{node}-postgres.log"),
                            "-w", "-t", "120", "start"])


def prepare_legacy_db(lab, node):
    """The legacy application's data, and the load generator's role and table."""
    sql(lab, node, "CREATE TABLE legacy_accounts (id int PRIMARY KEY, owner text, balance numeric); "
                   f"INSERT INTO legacy_accounts SELECT g, 'owner ' || g, g * 1.5 FROM generate_series(1, {LEGACY_ROWS}) g")
    run_in(lab, "client", [base.VENV_PYTHON, base.LABTOOL, "prepare-db", "--node", node],
           env={"LAB_ROOT": lab.root, "LAB_RUN_ID": lab.rid})
    sql(lab, node, "SELECT 1 FROM pg_roles WHERE rolname = 'lab'")


def node_facts(lab, node):
    """What identifies a node's data: its system identifier, PG_VERSION's
    inode, the marker file."""
    data = lab.path(node, "data")
    sysid = sql(lab, node, "SELECT system_identifier::text FROM pg_control_system()")[0][0]
    try:
        marker = open(os.path.join(data, "adopt-marker")).read()
    except OSError:
        marker = None
    return {"sysid": sysid, "inode": os.stat(os.path.join(data, "PG_VERSION")).st_ino, "marker": marker}


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


HAND_WRITTEN = """[databases]
; Written by hand when the application moved to db1. Its database first; the
; nightly reports read the same server through their own small pool.
{db} = host={addr} port={port} dbname=postgres
reports   =   host={addr}   port={port} dbname=postgres   pool_size=2
"""


def hand_written_ini(lab):
    """adopt-single: the lab's pgbouncer.ini with its [databases] section as
    an operator wrote it by hand (a comment, an entry the hook does not
    manage, spacing of their own); PgBouncer reloaded."""
    t = lab.topo
    ini = lab.path("pgbouncer", "pgbouncer.ini")
    text = open(ini).read()
    start, end = text.index("[databases]"), text.index("[pgbouncer]")
    text = text[:start] + HAND_WRITTEN.format(db=t.pgb_db, addr=t.addr(t.db_nodes[0]), port=t.pg_port) + "\n" + text[end:]
    with open(ini, "w") as f:
        f.write(text)
    os.kill(lab.pid("pgbouncer"), 1)  # SIGHUP: PgBouncer reloads


def consul_template(lab):
    """adopt-cluster: the template consul-template rendered pgbouncer.ini from."""
    t = lab.topo
    ini = lab.path("pgbouncer", "pgbouncer.ini")
    text = open(ini).read()
    entry = re.search(rf"^{re.escape(t.pgb_db)} = host=(\S+) ", text, re.M)
    if not entry:
        raise base.LabError(f"{ini}: no {t.pgb_db} entry to template")
    head = ("; Rendered by consul-template from pgbouncer.ini.ctmpl: the primary's address\n"
            f"; comes from the Consul key {t.get('LAB_LEGACY_PRIMARY_KEY')}.\n")
    text = head + text[:entry.start(1)] + '{{ key "' + t.get("LAB_LEGACY_PRIMARY_KEY") + '" }}' + text[entry.end(1):]
    path = lab.path("pgbouncer", "pgbouncer.ini.ctmpl")
    with open(path, "w") as f:
        f.write(text)


def start_legacy_glue(lab):
    """adopt-cluster: the old glue's watches in place, then the operator's
    key naming db1: the VIP script adds the VIP there, the render points
    pgbouncer.ini at it."""
    t = lab.topo
    consul_template(lab)
    for n in t.db_nodes:
        open(lab.path(n, "agent", "legacy-vip"), "w").close()
    open(lab.path("pgbouncer", "agent", "legacy-render"), "w").close()
    primary = t.db_nodes[0]
    consul_put(lab, t.get("LAB_LEGACY_PRIMARY_KEY"), t.addr(primary))

    def glued():
        sampler = measure.Sampler(lab)
        base.wait_for(f"the old VIP script to put the VIP on {primary}", 30,
                      lambda: sampler.holders() == [primary], 0.05)
    netns.in_netns(lab.ns("client"), glued)
    base.wait_for(f"the old template render to point pgbouncer.ini at {primary}", 30,
                  lambda: lab.ini_host() == t.addr(primary), 0.05)


def legacy_vip_by_hand(lab, node):
    """adopt-single: the VIP added by hand, as the operator did."""
    t = lab.topo
    run_in(lab, node, ["ip", "addr", "add", f"{t.vip}/{t.prefix_len}", "dev", t.iface])


def wait_clients(lab, timeout=60):
    """Writes through PgBouncer and through the VIP work (the legacy setup serves)."""
    for target in ("pgbouncer", "vip"):
        base.wait_for(f"a write through {target} on the legacy setup", timeout,
                      lambda target=target: _try_write(lab, target), 0.2)


def _try_write(lab, target):
    try:
        sql(lab, target, "INSERT INTO lab_writes(event, path, seq) VALUES ('legacy-probe', %s, "
                         "(SELECT coalesce(max(seq), 0) + 1 FROM lab_writes WHERE event = 'legacy-probe'))",
            (target,), user="lab", timeout=2)
        return True
    except Exception:
        return False


# ---- the adoption ------------------------------------------------------------------

def lab_env(lab):
    return {"LAB_ROOT": lab.root, "LAB_RUN_ID": lab.rid, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "PATRONI_VENV": base.VENV}


def adopt_node(lab, ck, node, role, glue):
    """scripts/adopt/adopt-node.sh on `node`, as root in its namespace."""
    t = lab.topo
    argv = ["bash", ADOPT_NODE, "--role", role, "--pgdata", lab.path(node, "data"), "--pg-socket", lab.path(node),
            "--pg-port", str(t.pg_port), "--api", f"http://{t.addr(node)}:{t.api_port}",
            "--hook", lab.path("bin", "patroni-hook"), "--hook-config", lab.path(node, "hook.yml"),
            "--start-patroni", f"bash {base.LAB_SH} start-patroni {node}",
            "--start-reconcile", f"bash {base.LAB_SH} enable-reconcile {node}", "--timeout", "180"]
    if glue:
        argv += ["--stop-glue", f"rm -f {lab.path(node, 'agent', 'legacy-vip')}"]
    base.say(f"adopt: scripts/adopt/adopt-node.sh --role {role} on {node}")
    rc, out = run_in(lab, node, argv, timeout=600, env=lab_env(lab), log=lab.path("logs", "adopt-commands.log"))
    print("\n".join(f"    {line}" for line in out.strip().splitlines() if line.startswith("adopt-node")), flush=True)
    last = out.strip().splitlines()[-1] if out.strip() else ""
    ck.must(f"adopt-node.sh --role {role} on {node}", rc == 0, last)


def adopt_pgbouncer(lab, ck, glue):
    argv = ["bash", ADOPT_PGBOUNCER, "--ini", lab.path("pgbouncer", "pgbouncer.ini"),
            "--hook", lab.path("bin", "patroni-hook"), "--hook-config", lab.path("pgbouncer", "hook.yml"),
            "--start-reconcile", f"bash {base.LAB_SH} enable-reconcile pgb"]
    if glue:
        argv += ["--stop-glue", f"rm -f {lab.path('pgbouncer', 'agent', 'legacy-render')}"]
    base.say("adopt: scripts/adopt/adopt-pgbouncer.sh on the PgBouncer host")
    rc, out = run_in(lab, "pgb", argv, timeout=300, env=lab_env(lab), log=lab.path("logs", "adopt-commands.log"))
    print("\n".join(f"    {line}" for line in out.strip().splitlines() if line.startswith("adopt-pgbouncer")), flush=True)
    last = out.strip().splitlines()[-1] if out.strip() else ""
    ck.must("adopt-pgbouncer.sh on the PgBouncer host", rc == 0, last)


def vip_stayed(ev_dir, node):
    """From the 20 ms sampler: the VIP on `node` alone at every sample of the
    adoption (the sampler logs changes only)."""
    seen = [line.split(None, 2)[2] for line in base.load_lines(os.path.join(ev_dir, "sampler.log"))
            if len(line.split(None, 2)) == 3 and line.split(None, 2)[1] == "vip"]
    return bool(seen) and all(s == node for s in seen), seen


def patroni_log(lab, node):
    return "\n".join(base.load_lines(lab.path("logs", f"{node}-patroni.log")))


def check_vip_adopted(lab, ck, ev_dir, primary):
    t = lab.topo
    stayed, seen = vip_stayed(ev_dir, primary)
    ck.check(f"the VIP stayed on {primary} through the adoption (sampled every 20 ms)", stayed,
             f"holders seen: {' -> '.join(seen) or 'none'}")
    owned = "".join(base.load_lines(lab.path(primary, "lock", f"vip-{t.scope}.owned")))
    ck.check("the hook took the VIP over where it was (adopted, not added)",
             "adopted" in owned and f"added {t.vip}" not in patroni_log(lab, primary)
             and f"added {t.vip}" not in "\n".join(base.load_lines(lab.path("logs", f"{primary}-watch.log"))),
             f"vip-{t.scope}.owned: {owned.strip() or 'empty'}")


def check_ini_after_switchover(lab, ck, before_text, new):
    t = lab.topo
    after_text = open(lab.path("pgbouncer", "pgbouncer.ini")).read()
    diff = [d for d in difflib.unified_diff(before_text.splitlines(), after_text.splitlines(), lineterm="", n=0)
            if d[:1] in "+-" and not d.startswith(("+++", "---"))]
    expect_old = [line for line in before_text.splitlines() if line.startswith(f"{t.pgb_db} ")]
    expected = ["-" + expect_old[0], "+" + expect_old[0].replace(f"host={t.addr(t.db_nodes[0])}", f"host={t.addr(new)}")] \
        if expect_old else []
    ck.check("after the switchover pgbouncer.ini differs only in the managed entry's host", diff == expected,
             " | ".join(diff) or "no change")


def check_slots(lab, ck, primary, replicas):
    """The replicas stream through Patroni's slots (named after them) and
    Patroni dropped the legacy ones once unused."""
    def slots():
        return sorted((name, active) for name, active in
                      sql(lab, primary, "SELECT slot_name::text, active FROM pg_replication_slots"))
    want = sorted((n, True) for n in replicas)
    try:
        base.wait_for(f"the slots on {primary} to be Patroni's, in use: {want}", 60, lambda: slots() == want, 0.5)
    except base.LabError:
        pass
    got = slots()
    ck.check("the replicas use Patroni's slots; the legacy ones are dropped", got == want,
             ", ".join(f"{n} ({'active' if a else 'inactive'})" for n, a in got) or "no slots")


def check_glue_stopped(lab, ck, leader):
    """The old glue is really stopped: the operator's key now names another
    node, the watches fire, and neither the VIP nor pgbouncer.ini moves."""
    t = lab.topo
    # Another node than the leader and than the key names now (writing the
    # same value again is no change, and fires no watch).
    other = next(n for n in t.db_nodes if n not in (leader, t.db_nodes[0]))
    entries = [lab.path(n, "agent", "legacy-vip") for n in t.db_nodes] + [lab.path("pgbouncer", "agent", "legacy-render")]
    seen = {e: len(base.load_lines(e + ".skipped")) for e in entries}
    ini = open(lab.path("pgbouncer", "pgbouncer.ini")).read()
    consul_put(lab, t.get("LAB_LEGACY_PRIMARY_KEY"), t.addr(other))
    base.wait_for("the old glue's watches to run (and skip) on the changed key", 30,
                  lambda: all(len(base.load_lines(e + ".skipped")) > n for e, n in seen.items()), 0.05)
    on = netns.in_netns(lab.ns("client"), lambda: netns.vip_holders(lab, netns.db_sockets(lab)))
    ck.check(f"the old glue stays stopped: the legacy key names {other}, nothing follows it",
             on == [leader] and open(lab.path("pgbouncer", "pgbouncer.ini")).read() == ini,
             f"VIP on {','.join(on) or 'none'}, pgbouncer.ini unchanged")


def switchover(lab, ck):
    """The adopted cluster's first switchover, measured like every lab event."""
    base.say("adopt: a switchover on the adopted cluster")
    try:
        r = events.run_event(lab, "switchover")
        ck.check("switchover: the new primary serves PgBouncer and the VIP, nothing lost", True,
                 f"{r['old']} -> {r['new']}, outage PgBouncer {r['pgbouncer_outage_ms']} ms, VIP {r['vip_outage_ms']} ms")
        return r
    except base.LabError as e:
        ck.check("switchover: the new primary serves PgBouncer and the VIP, nothing lost", False, str(e))
        return None


def measure_adoption(lab, name, primary, steps):
    """Runs `steps()` while the client writes; returns (ev_dir, outage, lost, why, t0, t1)."""
    ev_dir = events.next_event_dir(lab, name)
    m = measure.Measurement(lab, ev_dir, f"{os.path.basename(ev_dir)}-{lab.rid}")
    with m:
        netns.in_netns(lab.ns("client"), measure.wait_writes, m.load_log, ["pgbouncer", "vip", "direct"], primary, 30)
        t0 = time.time()
        steps()
        t1 = time.time()
    lost, why = m.lost_rows()
    return ev_dir, outage(m.load_log, t0, t1), lost, why, t0, t1


def finish(lab, ck, name, ev_dir, out, lost, why, t0, t1, sw):
    ck.check("no acknowledged row lost during the adoption", lost == 0, why or f"{lost} missing")
    if t1:
        print(f"  adoption took {t1 - t0:.1f} s; longest write outage: through the VIP {out['vip']} ms, "
              f"through PgBouncer {out['pgbouncer']} ms", flush=True)
    ck.finish(lab.rid, {
        "lost_rows": lost, "outage_ms": out, "adoption_s": round(t1 - t0, 1),
        "switchover": {k: sw.get(k) for k in ("old", "new", "pgbouncer_outage_ms", "vip_outage_ms",
                                               "patroni_outage_ms", "lost_rows")} if sw else None,
        "events": ev_dir,
    })


def scenario_adopt_single(topo, argv):
    """A standalone PostgreSQL with a hand-set VIP and a hand-written
    pgbouncer.ini, brought under Patroni and the hook, then two replicas added."""
    if argv:
        raise base.LabError(f"adopt-single takes no arguments (got {' '.join(argv)})")
    ck = Checks("adopt-single")
    with runlab.lab_session(topo, "hook", rid=os.environ.get("LAB_RUN_ID"), extra_env={"LAB_LEGACY": "1"}) as lab:
        primary, replicas = topo.db_nodes[0], topo.db_nodes[1:]
        base.say(f"adopt-single: the existing setup: a standalone PostgreSQL 15 on {primary}, "
                 "the VIP added by hand, a hand-written pgbouncer.ini")
        start_legacy_pg(lab, primary, wal_log_hints=False)
        prepare_legacy_db(lab, primary)
        legacy_vip_by_hand(lab, primary)
        hand_written_ini(lab)
        wait_clients(lab)
        before = node_facts(lab, primary)
        data_before = sql(lab, primary, FINGERPRINT)[0][0]
        ini_path = lab.path("pgbouncer", "pgbouncer.ini")
        ini_before, ini_text = sha256(ini_path), open(ini_path).read()
        ck.check(f"the existing setup serves: {primary} standalone, the VIP and PgBouncer in front", True,
                 f"system identifier {before['sysid']}, legacy_accounts {data_before}")
        sw, ev_dir, out, lost, why, t0, t1 = None, None, {"vip": None, "pgbouncer": None}, None, None, 0.0, 0.0
        try:
            def steps():
                adopt_node(lab, ck, primary, "primary", glue=False)
                adopt_pgbouncer(lab, ck, glue=False)
                for n in replicas:
                    adopt_node(lab, ck, n, "new", glue=False)
                netns.in_netns(lab.ns("client"), runlab.wait_healthy, lab, 240)
            ev_dir, out, lost, why, t0, t1 = measure_adoption(lab, "adopt-single", primary, steps)
            after = node_facts(lab, primary)
            ck.check(f"{primary}'s data taken over in place (no dump, no restore)",
                     after == before and sql(lab, primary, FINGERPRINT)[0][0] == data_before,
                     f"same system identifier {after['sysid']}, same PG_VERSION file, marker intact, "
                     f"legacy_accounts unchanged")
            ck.check(f"Patroni did not initialise {primary}", "trying to bootstrap" not in patroni_log(lab, primary),
                     f"no 'trying to bootstrap' in logs/{primary}-patroni.log")
            for n in replicas:
                sid = sql(lab, n, "SELECT system_identifier::text FROM pg_control_system()")[0][0]
                ck.check(f"{n} added as a streaming replica of the same system", sid == before["sysid"],
                         f"system identifier {sid}")
            check_vip_adopted(lab, ck, ev_dir, primary)
            ck.check("pgbouncer.ini unchanged byte for byte: reconcile took its entries over",
                     sha256(ini_path) == ini_before, f"sha256 {ini_before[:16]}...")
            hook_follows(lab, ck, "after the adoption")
            sw = switchover(lab, ck)
            if sw:
                hook_follows(lab, ck, "after the switchover")
                check_ini_after_switchover(lab, ck, ini_text, sw["new"])
        except base.LabError as e:
            ck.check("the scenario ran to its end", False, str(e))
            why = why or str(e)
        finish(lab, ck, "adopt-single", ev_dir, out, lost, why, t0, t1, sw)


def scenario_adopt_cluster(topo, argv):
    """A primary and two streaming replicas not managed by Patroni, with the
    consul-template glue, brought under Patroni and the hook without
    re-cloning anything."""
    if argv:
        raise base.LabError(f"adopt-cluster takes no arguments (got {' '.join(argv)})")
    ck = Checks("adopt-cluster")
    with runlab.lab_session(topo, "hook", rid=os.environ.get("LAB_RUN_ID"), extra_env={"LAB_LEGACY": "1"}) as lab:
        primary, replicas = topo.db_nodes[0], topo.db_nodes[1:]
        base.say(f"adopt-cluster: the existing setup: {primary} primary, {' and '.join(replicas)} streaming "
                 "replicas (pg_basebackup), the VIP script and the pgbouncer.ini template on Consul watches")
        start_legacy_pg(lab, primary)
        sql(lab, primary, "CREATE ROLE replicator WITH REPLICATION LOGIN")
        prepare_legacy_db(lab, primary)
        for n in replicas:
            start_legacy_pg(lab, n, upstream=primary)
        start_legacy_glue(lab)
        wait_clients(lab)
        standbys = sql(lab, primary, "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")[0][0]
        ck.check(f"the existing setup serves: {primary} primary with {standbys} streaming replicas, the glue's "
                 "VIP and rendered pgbouncer.ini in front", standbys == len(replicas), "")
        before = {n: node_facts(lab, n) for n in topo.db_nodes}
        data_before = sql(lab, primary, FINGERPRINT)[0][0]
        ini_path = lab.path("pgbouncer", "pgbouncer.ini")
        ini_before, ini_text = sha256(ini_path), open(ini_path).read()
        sw, ev_dir, out, lost, why, t0, t1 = None, None, {"vip": None, "pgbouncer": None}, None, None, 0.0, 0.0
        try:
            def steps():
                adopt_node(lab, ck, primary, "primary", glue=True)
                adopt_pgbouncer(lab, ck, glue=True)
                for n in replicas:
                    adopt_node(lab, ck, n, "replica", glue=True)
                netns.in_netns(lab.ns("client"), runlab.wait_healthy, lab, 240)
            ev_dir, out, lost, why, t0, t1 = measure_adoption(lab, "adopt-cluster", primary, steps)
            for n in topo.db_nodes:
                after = node_facts(lab, n)
                ck.check(f"{n}: same data directory, same system identifier", after == before[n],
                         f"system identifier {after['sysid']}, PG_VERSION inode {after['inode']}, marker "
                         f"{'intact' if after['marker'] == before[n]['marker'] else 'changed'}")
            sysids = {before[n]["sysid"] for n in topo.db_nodes}
            ck.check("one system identifier for all three", len(sysids) == 1, ", ".join(sorted(sysids)))
            for n in replicas:
                log = patroni_log(lab, n)
                ck.check(f"{n} was not re-cloned: no base backup in its Patroni log",
                         "replica has been created using" not in log and "trying to bootstrap" not in log,
                         f"logs/{n}-patroni.log has no 'replica has been created using' nor 'trying to bootstrap'")
            ck.check("the legacy data unchanged", sql(lab, lab.leader(), FINGERPRINT)[0][0] == data_before, data_before)
            check_slots(lab, ck, primary, replicas)
            check_vip_adopted(lab, ck, ev_dir, primary)
            ck.check("pgbouncer.ini unchanged byte for byte: reconcile took the rendered entries over",
                     sha256(ini_path) == ini_before, f"sha256 {ini_before[:16]}...")
            hook_follows(lab, ck, "after the adoption")
            sw = switchover(lab, ck)
            if sw:
                hook_follows(lab, ck, "after the switchover")
                check_ini_after_switchover(lab, ck, ini_text, sw["new"])
                check_glue_stopped(lab, ck, sw["new"])
        except base.LabError as e:
            ck.check("the scenario ran to its end", False, str(e))
            why = why or str(e)
        finish(lab, ck, "adopt-cluster", ev_dir, out, lost, why, t0, t1, sw)

