"""The events a scenario runs on a lab (switchover, failover, kill-patroni,
stop-primary; EVENTS) and run_event(): the load and the sampler on (measure),
act, wait for convergence, bring the old node back, analyse into a timeline
and a result (analysis). Also the waits the fault matrix shares with it
(leader_now, a switchover on a thread)."""

import contextlib
import json
import os
import signal
import subprocess
import threading
import time

from .analysis import analyze, print_timeline
from .base import LabError, PATRONICTL, alive, kill, say, wait_for
from .measure import Measurement, Sampler, ok_lines, wait_writes
from .netns import in_netns
from .reports import with_consul
from .runlab import wait_healthy


def wait_converged(lab, old, since, log, timeout):
    """After an event: a new leader other than `old`; the VIP on it alone;
    for the hook, pgbouncer.ini pointing at it and vip-holder naming it;
    writes acknowledged by it through PgBouncer and through the VIP.
    Runs in the client namespace; returns the new leader."""
    deadline = time.time() + timeout
    sampler = Sampler(lab)
    t = lab.topo

    def step(what, cond):
        return wait_for(what, max(1.0, deadline - time.time()), cond, 0.02)

    new = step(f"a leader other than {old} in {lab.leader_key}",
               lambda: (lambda v: v if v and v != old else None)(sampler.leader()))
    step(f"the VIP {t.vip} on {new} and on no other node", lambda: sampler.holders() == [new])
    if lab.manager == "hook":
        step(f"pgbouncer.ini to point {t.pgb_db} at {new} ({t.addr(new)})", lambda: lab.ini_host() == t.addr(new))

        def holder():
            raw = sampler.read(lab.holder_key)[0]
            try:
                return raw and json.loads(raw).get("member") == new
            except ValueError:
                return False
        step(f"{lab.holder_key} to name {new}", holder)

    def writes():
        return {"pgbouncer", "vip"} <= {p[4] for p in ok_lines(log, since) if p[6] == new}
    step(f"acknowledged writes through PgBouncer and the VIP on {new}", writes)
    return new


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


def leader_now(lab, timeout=60):
    """The leader key's value, waited for (bounded)."""
    return wait_for(f"a leader in {lab.leader_key}", timeout,
                    lambda: (lambda v: v if v in lab.topo.db_nodes else None)(lab.leader()), 0.2)


def switchover_async(lab, old, ev_dir):
    """patronictl switchover on a thread; join() returns its error, if any."""
    box = {}

    def run():
        try:
            act_switchover(lab, old, ev_dir)
        except LabError as e:
            box["error"] = str(e)
    t = threading.Thread(target=run, daemon=True)
    t.start()

    def join():
        t.join(120)
        return box.get("error") or (None if not t.is_alive() else "patronictl switchover still running after 120 s")
    return join
