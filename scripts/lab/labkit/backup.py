"""pgBackRest in the lab: the repository host, the kit's files, and the
`backup` scenario (scripts/lab.sh backup).

lab.sh up with LAB_BACKUP=1 runs, as root in the host's namespace, with the
Patroni virtualenv's Python (internal commands of scripts/lab/labtool.py):

    backup-setup             TLS files (scripts/backup/make-certs.sh), every
                             host's pgbackrest.conf made from patroni-conf/
                             pgbackrest.conf and pgbackrest-repo.conf,
                             patroni-conf/patroni-pgbackrest.yml merged into
                             each node's patroni.yml, and the TLS servers on
                             the repository host and the database nodes
    backup-stanza-create     the stanza, once the cluster runs

The kit's files are used as shipped, with only the lab's names, addresses and
paths substituted (every substitution must match, so a changed kit file stops
the lab instead of testing something else): the scenario runs the kit.

The scenario (scenario_backup, registered in scenarios.SCENARIOS), on a lab
of its own, while a client writes through PgBouncer and the VIP:
  1. a full backup, a switchover, an incremental backup; `pgbackrest check`
     on the repository host before and after the switchover, and on the new
     primary (archiving continues from it);
  2. a replica rebuilt from the repository (`patronictl reinit`): Patroni's
     log names the pgbackrest method, and it streams again;
  3. a point-in-time recovery into a new cluster (patroni-conf/
     patroni-pitr.yml) at a time between two marked writes: every row
     acknowledged before it is there, none written after it.
The hook is unaffected: the VIP and pgbouncer.ini follow the leader
throughout, checked after each phase.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

from . import base, dcs, events, measure, netns, runlab
from .checks import Checks, acked_rows, hook_follows, log_size, outage, patroni_log_since, run_in, sql

KIT = os.path.join(base.REPO, "patroni-conf")
MAKE_CERTS = os.path.join(base.REPO, "scripts", "backup", "make-certs.sh")
# The kit's names for what the lab names otherwise (patroni-conf/README.md).
KIT_SCOPE = "postgres"
KIT_REPO = ("backup-01", "198.51.100.40")
KIT_NODES = [("pg-patroni1", "198.51.100.21"), ("pg-patroni2", "198.51.100.22"), ("pg-patroni3", "198.51.100.23")]
KIT_DATA = "/var/lib/postgresql/15/patroni"
KIT_SOCKET = "/var/run/postgresql"
KIT_TLS = "/etc/pgbackrest/tls/"
KIT_PITR_TARGET = '"2026-11-29 04:00:00+00"'


def read_kit(name):
    with open(os.path.join(KIT, name)) as f:
        return f.read()


def subst(text, pairs, what):
    """Each `from` replaced by `to`; a `from` missing from the kit file is an error."""
    for a, b in pairs:
        if a not in text:
            raise base.LabError(f"patroni-conf/{what}: expected {a!r} (the lab substitutes it)")
        text = text.replace(a, b)
    return text


def merge(base, over):
    """`over` merged into `base`: mappings key by key, anything else replaced."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for k, v in over.items():
            out[k] = merge(base[k], v) if k in base else v
        return out
    return over


def lab_only(lab, host):
    """Lines the lab adds to a [global] section: logs, locks and
    configuration files per host (the hosts share one file system). The
    remote side of a TLS connection reads the configuration file the client
    names (repo1-host-config, pgN-host-config; default
    /etc/pgbackrest/pgbackrest.conf, as on real hosts)."""
    t = lab.topo
    lines = [f"# lab: {host}'s logs, locks and the other hosts' configuration files",
             f"log-path={lab.path('logs', 'pgbackrest-' + host)}",
             f"lock-path={lab.path(host, 'pgbackrest-lock')}"]
    if host == "repo":
        lines += [f"pg{i}-host-config={lab.path(n, 'pgbackrest.conf')}" for i, n in enumerate(t.db_nodes, 1)]
    else:
        lines.append(f"repo1-host-config={lab.path('repo', 'pgbackrest.conf')}")
    return "\n".join(lines) + "\n"


def node_conf(lab, host):
    """patroni-conf/pgbackrest.conf for a database node (or the PITR host)."""
    t = lab.topo
    return subst(read_kit("pgbackrest.conf"), [
        ("[global]\n", "[global]\n" + lab_only(lab, host)),
        (f"repo1-host={KIT_REPO[1]}", f"repo1-host={t.addr('repo')}"),
        (KIT_TLS, lab.path(host, "tls") + "/"),
        (f"tls-server-auth={KIT_REPO[0]}={KIT_SCOPE}", f"tls-server-auth=repo={t.scope}"),
        (f"[{KIT_SCOPE}]", f"[{t.scope}]"),
        (f"pg1-path={KIT_DATA}", f"pg1-path={lab.path(host, 'data')}"),
        (f"pg1-socket-path={KIT_SOCKET}", f"pg1-socket-path={lab.path(host)}"),
    ], "pgbackrest.conf")


def repo_conf(lab):
    """patroni-conf/pgbackrest-repo.conf for the repository host."""
    t = lab.topo
    pairs = [
        ("[global]\n", "[global]\n" + lab_only(lab, "repo")),
        ("repo1-path=/var/lib/pgbackrest", f"repo1-path={lab.path('repo', 'repository')}"),
        (KIT_TLS, lab.path("repo", "tls") + "/"),
        (f"[{KIT_SCOPE}]", f"[{t.scope}]"),
    ]
    for i, ((kname, kaddr), node) in enumerate(zip(KIT_NODES, t.db_nodes), 1):
        pairs += [(f"tls-server-auth={kname}={KIT_SCOPE}", f"tls-server-auth={node}={t.scope}"),
                  (f"pg{i}-host={kaddr}", f"pg{i}-host={t.addr(node)}"),
                  (f"pg{i}-path={KIT_DATA}", f"pg{i}-path={lab.path(node, 'data')}"),
                  (f"pg{i}-socket-path={KIT_SOCKET}", f"pg{i}-socket-path={lab.path(node)}")]
    # The new cluster of a point-in-time recovery restores from here too.
    last = f"tls-server-auth={t.db_nodes[-1]}={t.scope}\n"
    pairs.append((last, last + f"tls-server-auth=pitr={t.scope}\n"))
    text = read_kit("pgbackrest-repo.conf")
    for a, b in pairs:  # in order: the auth lines are renamed before the last one is extended
        text = subst(text, [(a, b)], "pgbackrest-repo.conf")
    return text


def kit_yaml(name, pairs):
    import yaml  # from the Patroni virtualenv
    return yaml.safe_load(subst(read_kit(name), pairs, name))


def write_yaml(path, doc, header):
    import yaml
    with open(path + ".new", "w") as f:
        f.write(header)
        yaml.safe_dump(doc, f, default_flow_style=False, sort_keys=False)
    os.replace(path + ".new", path)
    shutil.chown(path, "postgres", "postgres")


def owned_dir(path, mode=0o755):
    os.makedirs(path, exist_ok=True)
    os.chmod(path, mode)
    shutil.chown(path, "postgres", "postgres")


def write_owned(path, text, mode=0o644):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)
    shutil.chown(path, "postgres", "postgres")


def pgbackrest(lab, host, *args, timeout=300, stanza=True):
    """pgbackrest on `host` as postgres with that host's configuration;
    (exit code, output), the output also in logs/pgbackrest-commands.log."""
    argv = ["pgbackrest", f"--config={lab.path(host, 'pgbackrest.conf')}"]
    if stanza:
        argv.append(f"--stanza={lab.topo.scope}")
    return run_in(lab, host, argv + list(args), timeout=timeout, user="postgres",
                  log=lab.path("logs", "pgbackrest-commands.log"))


# ---- setup (lab.sh up, LAB_BACKUP=1) -------------------------------------------

def cmd_setup(lab):
    t = lab.topo
    hosts = ["repo", *t.db_nodes, "pitr"]
    tls = lab.path("tls")
    r = subprocess.run(["bash", MAKE_CERTS, tls, *[f"{h}={t.addr(h)}" for h in hosts]],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise base.LabError(f"scripts/backup/make-certs.sh failed: {r.stderr.strip() or r.stdout.strip()}")
    for h in hosts:
        owned_dir(lab.path(h))
        owned_dir(lab.path(h, "tls"), 0o700)
        owned_dir(lab.path("logs", f"pgbackrest-{h}"))
        with open(os.path.join(tls, "ca.crt")) as f:
            write_owned(lab.path(h, "tls", "ca.crt"), f.read())
        with open(os.path.join(tls, f"{h}.crt")) as f:
            write_owned(lab.path(h, "tls", "host.crt"), f.read())
        with open(os.path.join(tls, f"{h}.key")) as f:
            write_owned(lab.path(h, "tls", "host.key"), f.read(), 0o600)
        write_owned(lab.path(h, "pgbackrest.conf"), repo_conf(lab) if h == "repo" else node_conf(lab, h))
    owned_dir(lab.path("repo", "repository"), 0o750)
    owned_dir(lab.path("pitr", "data"), 0o700)

    import yaml
    fragment = kit_yaml("patroni-pgbackrest.yml", [(f"--stanza={KIT_SCOPE}", f"--stanza={t.scope}")])
    for n in t.db_nodes:
        path = lab.path(n, "patroni.yml")
        with open(path) as f:
            doc = yaml.safe_load(f)
        write_yaml(path, merge(doc, fragment),
                   "# Generated by scripts/lab.sh, then merged with patroni-conf/patroni-pgbackrest.yml\n"
                   "# by scripts/lab/labkit/backup.py (LAB_BACKUP=1); pgBackRest finds this node's\n"
                   "# pgbackrest.conf through PGBACKREST_CONFIG in Patroni's environment.\n")

    # The TLS servers (Debian's pgbackrest.service on real hosts): the
    # repository host's, and each database node's for the repository host.
    for h in ["repo", *t.db_nodes]:
        log = open(lab.path("logs", f"{h}-pgbackrest.log"), "a")
        p = subprocess.Popen(["ip", "netns", "exec", lab.ns(h), "setpriv", "--reuid=postgres", "--regid=postgres",
                              "--init-groups", "--", "pgbackrest", f"--config={lab.path(h, 'pgbackrest.conf')}",
                              "server"], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True)
        with open(lab.path("pids", f"{h}-pgbackrest.pid"), "w") as f:
            f.write(f"{p.pid}\n")
    for h in t.db_nodes:
        base.wait_for(f"pgBackRest's TLS server on {h} to answer the repository host (server-ping)", 30,
                      lambda h=h: pgbackrest(lab, "repo", "server-ping", t.addr(h), stanza=False, timeout=10)[0] == 0,
                      0.2)
    base.wait_for("pgBackRest's TLS server on the repository host to answer db1 (server-ping)", 30,
                  lambda: pgbackrest(lab, t.db_nodes[0], "server-ping", t.addr("repo"), stanza=False, timeout=10)[0] == 0,
                  0.2)


def cmd_stanza_create(lab):
    rc, out = pgbackrest(lab, "repo", "stanza-create")
    if rc != 0:
        raise base.LabError(f"pgbackrest stanza-create on the repository host failed: {out.strip()[-500:]}")
    rc, out = pgbackrest(lab, "repo", "check")
    if rc != 0:
        raise base.LabError(f"pgbackrest check on the repository host failed: {out.strip()[-500:]}")


# ---- the scenario ---------------------------------------------------------------

def tail(out, n=300):
    s = " ".join(out.split())
    return s if len(s) <= n else "..." + s[-n:]


def backup_info(lab):
    rc, out = pgbackrest(lab, "repo", "info", "--output=json", timeout=60)
    if rc != 0:
        raise base.LabError(f"pgbackrest info failed: {tail(out)}")
    stanzas = json.loads(out)
    return stanzas[0]["backup"] if stanzas else []


def cluster_members(lab):
    c = netns.in_netns(lab.ns("client"), runlab.cluster_state, lab.apis()) or {}
    return c.get("members", [])


def patronictl(lab, node, *args, timeout=300):
    r = subprocess.run(["ip", "netns", "exec", lab.ns("client"), "env", "LC_ALL=C.UTF-8", base.PATRONICTL,
                        "-c", lab.path(node, "patroni.yml"), *args],
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, timeout=timeout)
    return r.returncode, r.stdout


def phase(lab, name):
    """An event directory and a Measurement for one phase of the scenario."""
    ev_dir = events.next_event_dir(lab, name)
    return ev_dir, measure.Measurement(lab, ev_dir, f"{os.path.basename(ev_dir)}-{lab.rid}")


def writes_flow(lab, m, node):
    netns.in_netns(lab.ns("client"), measure.wait_writes, m.load_log, ["pgbouncer", "vip", "direct"], node, 30)
    return time.time()


def mark(lab, name):
    """A marked write through PgBouncer; returns when it is acknowledged."""
    sql(lab, "pgbouncer", "INSERT INTO lab_marks(name) VALUES (%s)", (name,), user="lab")
    return time.time()


def phase_one(lab, ck, figures):
    """A full backup, writes, a switchover, more writes, an incremental one."""
    t = lab.topo
    ev_dir, m = phase(lab, "backup-switchover")
    old = lab.leader()
    with m:
        t0 = writes_flow(lab, m, old)
        base.say(f"backup: full backup from the primary {old}, while the client writes")
        rc, out = pgbackrest(lab, "repo", "--type=full", "backup", timeout=600)
        ck.must("full backup on the repository host", rc == 0, tail(out) if rc else f"from {old}")
        mark(lab, "after-full")
        rc, out = pgbackrest(lab, "repo", "check", timeout=180)
        ck.check("pgbackrest check before the switchover", rc == 0, tail(out) if rc else f"archiving from {old}")
        base.say(f"backup: switchover away from {old}")
        ts = time.time()
        events.act_switchover(lab, old, ev_dir)
        new = netns.in_netns(lab.ns("client"), events.wait_converged, lab, old, ts, m.load_log, 120)
        netns.in_netns(lab.ns("client"), runlab.wait_healthy, lab, 180)
        ck.check("switchover", new != old, f"{old} -> {new}")
        mark(lab, "after-switchover")
        rc, out = pgbackrest(lab, "repo", "check", timeout=180)
        ck.check("pgbackrest check after the switchover (repository host)", rc == 0,
                 tail(out) if rc else f"archiving continues from {new}")
        rc, out = pgbackrest(lab, new, "check", timeout=180)
        ck.check(f"pgbackrest check on the new primary {new}", rc == 0, tail(out) if rc else "archive-push to the repository host")
        base.say(f"backup: incremental backup, now from {new}")
        rc, out = pgbackrest(lab, "repo", "--type=incr", "backup", timeout=600)
        ck.must("incremental backup on the repository host", rc == 0, tail(out) if rc else f"from {new}")
        t1 = time.time()
    lost, why = m.lost_rows()
    backups = backup_info(lab)
    full = [b for b in backups if b["type"] == "full"]
    incr = [b for b in backups if b["type"] == "incr"]
    ck.check("the repository holds the full backup and the incremental one based on it",
             full and incr and incr[-1].get("prior") == full[-1]["label"],
             ", ".join(f"{b['label']} ({b['type']}, WAL {b['archive']['start']})" for b in backups))
    # WAL file names begin with the timeline: the incremental was taken on the new primary's.
    tl = lambda b: int(b["archive"]["start"][:8], 16)  # noqa: E731
    ck.check("the incremental backup was taken on the new primary's timeline",
             full and incr and tl(incr[-1]) > tl(full[-1]),
             f"full on timeline {tl(full[-1]) if full else '?'}, incremental on {tl(incr[-1]) if incr else '?'}")
    ck.check("no acknowledged row lost (backups and switchover)", lost == 0, why or f"{lost} missing")
    figures["phases"]["backup-switchover"] = {"outage_ms": outage(m.load_log, t0, t1), "lost_rows": lost,
                                              "old": old, "new": new}
    figures["loads"].append((m.load_log, f"{os.path.basename(ev_dir)}-{lab.rid}"))
    hook_follows(lab, ck, "after the switchover")
    return new


def phase_two(lab, ck, figures):
    """A replica rebuilt from the repository with patronictl reinit."""
    leader = lab.leader()
    members = cluster_members(lab)
    # The asynchronous replica: rebuilding the synchronous one would make the
    # primary wait for Patroni to name another.
    target = next((mm["name"] for mm in members if mm.get("role") == "replica"), None)
    ck.must("an asynchronous replica to rebuild", target, f"members {[(mm['name'], mm.get('role')) for mm in members]}")
    ev_dir, m = phase(lab, "reinit")
    offset = log_size(lab, target)
    with m:
        t0 = writes_flow(lab, m, leader)
        base.say(f"backup: patronictl reinit {target}, from the repository")
        rc, out = patronictl(lab, target, "reinit", lab.topo.scope, target, "--force", "--wait", timeout=600)
        ck.check(f"patronictl reinit {target}", rc == 0, out.strip().splitlines()[-1] if out.strip() else "")
        base.wait_for(f"Patroni on {target} to log how it rebuilt the replica", 300,
                      lambda: "replica has been created using" in patroni_log_since(lab, target, offset), 0.5)
        netns.in_netns(lab.ns("client"), runlab.wait_healthy, lab, 300)
        t1 = time.time()
    log = patroni_log_since(lab, target, offset)
    used = re.findall(r"replica has been created using (\S+)", log)
    ck.check(f"Patroni rebuilt {target} with the pgbackrest method", used == ["pgbackrest"],
             f"'replica has been created using {', '.join(used) or '?'}' in logs/{target}-patroni.log")
    ck.check("no fallback to pg_basebackup", "Error creating replica using method pgbackrest" not in log
             and "basebackup" not in " ".join(used), "")
    state = {mm["name"]: mm.get("state") for mm in cluster_members(lab)}
    ck.check(f"{target} streams again", state.get(target) == "streaming", f"state {state.get(target)}")
    lost, why = m.lost_rows()
    ck.check("no acknowledged row lost (reinit)", lost == 0, why or f"{lost} missing")
    figures["phases"]["reinit"] = {"outage_ms": outage(m.load_log, t0, t1), "lost_rows": lost, "member": target}
    figures["loads"].append((m.load_log, f"{os.path.basename(ev_dir)}-{lab.rid}"))
    hook_follows(lab, ck, "after the reinit")


def pitr_patroni_yaml(lab, target_time):
    """The PITR node's patroni.yml: the lab's node settings for host `pitr`
    (no hook: the new cluster has no VIP and no PgBouncer), merged with
    patroni-conf/patroni-pitr.yml as shipped."""
    import yaml
    t = lab.topo
    with open(lab.path(t.db_nodes[0], "patroni.yml")) as f:
        doc = yaml.safe_load(f)
    addr = t.addr("pitr")
    doc["restapi"] = {"listen": f"{addr}:{t.api_port}", "connect_address": f"{addr}:{t.api_port}"}
    pg = doc["postgresql"]
    pg.update({"connect_address": f"{addr}:{t.pg_port}", "data_dir": lab.path("pitr", "data"),
               "pgpass": lab.path("pitr", "pgpass")})
    pg["parameters"]["unix_socket_directories"] = lab.path("pitr")
    pg.pop("callbacks", None)
    pg.pop("before_stop", None)
    if lab.consul_kind == "real":
        # The PITR host's own agent; Patroni's token for the new cluster's scope.
        with open(lab.path("consul", "tokens", "patroni-pitr")) as f:
            doc["consul"]["token"] = f.read().strip()
    pitr = kit_yaml("patroni-pitr.yml", [
        (f"scope: {KIT_SCOPE}-pitr", f"scope: {t.scope}-pitr"),
        ("name: pg-pitr1", "name: pitr"),
        (f"--stanza={KIT_SCOPE}", f"--stanza={t.scope}"),
        (f"target: {KIT_PITR_TARGET}", f"target: \"{target_time}\""),
    ])
    return merge(doc, pitr)


def phase_three(lab, ck, figures):
    """Point-in-time recovery into a new cluster between two marked writes."""
    t = lab.topo
    leader = lab.leader()
    ev_dir, m = phase(lab, "pitr")
    with m:
        t0 = writes_flow(lab, m, leader)
        mark(lab, "before-target")
        # The target: a moment of the server's clock after the first mark was
        # acknowledged and before the second is written (one clock: the lab's
        # namespaces share the machine's).
        time.sleep(0.3)
        target_time, target = sql(lab, leader, "SELECT clock_timestamp()::text, extract(epoch FROM clock_timestamp())")[0]
        target = float(target)
        time.sleep(0.3)
        mark(lab, "after-target")
        time.sleep(0.5)
        t1 = time.time()
    # Everything the client wrote reaches the repository (check switches the
    # WAL segment and waits until it is archived), so a row missing from the
    # new cluster is missing because recovery stopped at the target.
    rc, out = pgbackrest(lab, "repo", "check", timeout=180)
    ck.check("pgbackrest check after the client stopped: everything it wrote is archived", rc == 0,
             tail(out) if rc else "")
    lost, why = m.lost_rows()
    ck.check("no acknowledged row lost (marks)", lost == 0, why or f"{lost} missing")
    figures["phases"]["pitr-marks"] = {"outage_ms": outage(m.load_log, t0, t1), "lost_rows": lost}
    figures["loads"].append((m.load_log, f"{os.path.basename(ev_dir)}-{lab.rid}"))

    base.say(f"backup: point-in-time recovery into a new cluster {t.scope}-pitr on host pitr, target {target_time}")
    write_yaml(lab.path("pitr", "patroni.yml"), pitr_patroni_yaml(lab, target_time),
               "# Generated by scripts/lab/labkit/backup.py: the lab's node settings for host pitr,\n"
               "# merged with patroni-conf/patroni-pitr.yml.\n")
    log = open(lab.path("logs", "pitr-patroni.log"), "a")
    p = subprocess.Popen(["ip", "netns", "exec", lab.ns("pitr"), "setpriv", "--reuid=postgres", "--regid=postgres",
                          "--init-groups", "--", "env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                          f"HOME={lab.path('pitr')}", "USER=postgres", "LC_ALL=C.UTF-8",
                          f"PGBACKREST_CONFIG={lab.path('pitr', 'pgbackrest.conf')}",
                          os.path.join(base.VENV, "bin", "patroni"), lab.path("pitr", "patroni.yml")],
                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    with open(lab.path("pids", "pitr-patroni.pid"), "w") as f:
        f.write(f"{p.pid}\n")
    try:
        api = f"{t.addr('pitr')}:{t.api_port}"

        def primary():
            try:
                return dcs.http_get(api, "/primary", 2)[0] == 200
            except OSError:
                return False
        netns.in_netns(lab.ns("client"), base.wait_for, f"the new cluster's Patroni on pitr ({api}) to answer /primary", 300,
                       primary, 0.5)
        plog = "\n".join(base.load_lines(lab.path("logs", "pitr-patroni.log")))
        restored = re.search(r"restore backup set (\S+),", plog)
        stopped = re.search(r"recovery stopping before commit of transaction \d+, time (.+)", plog)
        ck.check("the new cluster runs: pgBackRest restored a backup from before the target", restored,
                 f"Patroni {t.scope}-pitr on pitr, bootstrap method pitr, backup set "
                 f"{restored.group(1) if restored else '?'}")
        ck.check("PostgreSQL stopped recovery at the target and promoted", stopped,
                 f"'recovery stopping before commit ... time {stopped.group(1) if stopped else '?'}', "
                 f"target {target_time}")
        rows = sql(lab, "pitr", "SELECT event, path, seq FROM lab_writes")
        present = {(e, pth, s) for e, pth, s in rows}
        marks = {r[0] for r in sql(lab, "pitr", "SELECT name FROM lab_marks")}
        ck.check("the mark written before the target is there", "before-target" in marks, f"marks: {sorted(marks)}")
        ck.check("the mark written after the target is not", "after-target" not in marks, f"marks: {sorted(marks)}")
        acked = [r for log_path, event in figures["loads"] for r in acked_rows(log_path, event)]
        before = [(e, pth, s) for e, pth, s, _t1, t2 in acked if t2 < target]
        after = [(e, pth, s) for e, pth, s, t_start, _t2 in acked if t_start > target]
        missing = [r for r in before if r not in present]
        found_after = [r for r in after if r in present]
        ck.check("every row acknowledged before the target is there", before and not missing,
                 f"{len(before)} acknowledged before it, {len(missing)} missing {missing[:5]}")
        ck.check("no row written after the target is there", after and not found_after,
                 f"{len(after)} acknowledged after it (all archived), {len(found_after)} found {found_after[:5]}")
        figures["rows_before_target"] = len(before)
        figures["rows_after_target_found"] = len(found_after)
        figures["rows_after_target"] = len(after)
        figures["pitr_target"] = target_time
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(60)
        except subprocess.TimeoutExpired:
            print(f"  Patroni of the PITR cluster (pid {p.pid}) did not stop within 60 s; SIGKILL", file=sys.stderr)
            p.kill()
            p.wait(10)
        os.unlink(lab.path("pids", "pitr-patroni.pid"))
    hook_follows(lab, ck, "after the point-in-time recovery")


def scenario_backup(topo, argv):
    """pgBackRest on a lab of its own (LAB_BACKUP=1): backups around a
    switchover, a replica rebuilt from the repository, a point-in-time
    recovery into a new cluster; target/lab-backup.{json,md}."""
    if argv:
        raise base.LabError(f"backup takes no arguments (got {' '.join(argv)})")
    ck = Checks("backup")
    figures = {"phases": {}, "loads": []}
    with runlab.lab_session(topo, "hook", rid=os.environ.get("LAB_RUN_ID"), extra_env={"LAB_BACKUP": "1"}) as lab:
        rc, out = pgbackrest(lab, "repo", "version", stanza=False, timeout=30)
        base.say(f"backup: {out.strip()}, repository host {topo.addr('repo')} over TLS; "
                 f"the hook runs as in every lab (callbacks, watches, timers)")
        sql(lab, lab.leader(), "CREATE TABLE lab_marks (name text PRIMARY KEY, at timestamptz DEFAULT clock_timestamp());"
                               "GRANT SELECT, INSERT ON lab_marks TO lab")
        try:
            phase_one(lab, ck, figures)
            phase_two(lab, ck, figures)
            phase_three(lab, ck, figures)
        except base.LabError as e:
            ck.check("the scenario ran to its end", False, str(e))
        phases = figures["phases"]
        worst, where = {}, {}
        for path in ("vip", "pgbouncer"):
            vs = [(p["outage_ms"][path], name) for name, p in phases.items() if p["outage_ms"].get(path) is not None]
            worst[path], where[path] = max(vs) if vs else (None, None)
        lost = [p["lost_rows"] for p in phases.values()]
        lost_total = sum(lost) if lost and None not in lost else None
        print(f"  the hook was unaffected: the VIP and pgbouncer.ini followed the leader in every phase "
              f"(checks above); longest write outage through the VIP {worst['vip']} ms ({where['vip']}), "
              f"through PgBouncer {worst['pgbouncer']} ms ({where['pgbouncer']})", flush=True)
        ck.finish(lab.rid, {
            "lost_rows": lost_total,
            "outage_ms": worst,
            "rows_before_target": figures.get("rows_before_target"),
            "rows_after_target_found": figures.get("rows_after_target_found"),
            "rows_after_target": figures.get("rows_after_target"),
            "pitr_target": figures.get("pitr_target"),
            "phases": figures["phases"],
        })
