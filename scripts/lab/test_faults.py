#!/usr/bin/env python3
"""The fault matrix's end-state sampler (labkit/measure.py: Sampler,
Tracer; labkit/faults.py: relapse_problems) against a real pgbouncer.ini
written by the simulated operator (faults.Operator) and by a stand-in for
the hook, with the lab's other probes (the leader key, the VIP's holders, PgBouncer's pause) stubbed
to a converged cluster. Run by tests/fault_sampler.rs:

    python3 scripts/lab/test_faults.py

- a sample never falls inside the operator's in-place write (O_TRUNC, then
  the write): the operator's own non-atomic write does not fail the row;
- an ini the hook truncated, left without the managed entry, or pointing at
  a replica still fails the row.

And the matrix's choices of what a row acts on, on each Consul (no lab
needed): which Consul it runs on, which rows run or are skipped (and why),
which processes "Consul frozen" stops and which addresses "cut from Consul"
blackholes, which server a /v1/status/leader answer names, which servers a
quorum loss stops, how the agents' watch tokens are replaced, and which hook
runs count against token-revoked.
"""

import os
import sys
import tempfile
import time
import unittest
from unittest import mock

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from labkit import faults  # noqa: E402
from labkit import base, measure, netns, runlab, topology  # noqa: E402

ADDR = {"db1": "198.51.100.11", "db2": "198.51.100.12"}
INI = ("[databases]\n"
       "appdb = host=198.51.100.11 port=5432 dbname=postgres\n"
       "\n"
       "[pgbouncer]\n"
       "listen_port = 6432\n")
WAIT_S = 10.0


class Topo:
    db_nodes = ["db1", "db2"]
    pgb_db, pgb_port, pg_port = "appdb", 6432, 5432

    @staticmethod
    def addr(node):
        return ADDR[node]


class Lab:
    """What Sampler, Tracer and Operator use of runlab.Lab, on a
    temporary directory; db1 leads and holds the VIP."""

    def __init__(self, root):
        self.root, self.topo, self.leader = root, Topo(), "db1"
        self.leader_key = "service/lab/leader"
        os.makedirs(self.path("pgbouncer"))
        os.makedirs(self.path("events"))
        with open(self.ini, "w") as f:
            f.write(INI)

    @property
    def ini(self):
        return self.path("pgbouncer", "pgbouncer.ini")

    def path(self, *parts):
        return os.path.join(self.root, *parts)

    def ns(self, name):
        return f"test-{name}"

    def dcs(self):
        lab = self

        class Dcs:
            def read(self, key):
                return lab.leader, 1
        return Dcs()

    def ini_host(self):
        return runlab.ini_host(self.ini, self.topo.pgb_db)


def wait_until(what, cond, timeout=WAIT_S):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def holding_row():
    """A row that holds, but for the problems a test adds."""
    return {"fault": "ini-edits", "lost_rows": 0, "vip_two_nodes_ms": 0.0,
            "converged": {k: True for k in measure.CONVERGED_KEYS}, "problems": []}


class SamplerTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory(prefix="test-faults-")
        self.addCleanup(self.dir.cleanup)
        self.lab = Lab(self.dir.name)
        stubs = [(netns, "setns", lambda _ns: None), (netns, "db_sockets", lambda _lab: None),
                 (netns, "vip_holders", lambda lab, _socks: [lab.leader]), (measure.Admin, "paused", lambda _self: False)]
        for target, name, stub in stubs:
            patch = mock.patch.object(target, name, stub)
            patch.start()
            self.addCleanup(patch.stop)
        self.op = faults.Operator(self.lab)
        self.addCleanup(self.op.log.close)
        self.tracer = measure.Tracer(self.lab, ini_guard=self.op.lock)
        self.addCleanup(lambda: (self.tracer.stop.set(), self.tracer.thread.join(5)))
        # The cluster converged before anything happens.
        wait_until("a converged sample", lambda: any(measure.converged(s) for s in self.samples()))
        self.first = next(s for s in self.samples() if measure.converged(s))

    def samples(self):
        with self.tracer.lock:
            return list(self.tracer.samples)

    def sampled_after(self, t):
        """Waits for a sample that started after `t` (its ini read later still)."""
        wait_until(f"a sample after {t:.6f}", lambda: any(s["t"] > t for s in self.samples()))

    def problems(self):
        self.sampled_after(time.time())
        relapses, n = self.tracer.finish(self.first["t"])
        return faults.relapse_problems(relapses, n, self.first["t"])

    def test_a_sample_never_falls_inside_the_operators_in_place_write(self):
        """The operator's in-place edit held open between its truncate and
        its write for as long as it takes the sampler to sample twice (1 s
        at most: a sampler that waits for the operator's lock never does)."""
        tracer, path = self.tracer, self.op.path
        inside, written = [], []

        class SlowWrite:
            def __init__(self, f):
                self.f = f

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.f.close()
                return False

            def write(self, text):
                # The file is truncated; a second sample surely read it so.
                with tracer.lock:
                    n0 = len(tracer.samples)
                deadline = time.monotonic() + 1.0
                while time.monotonic() < deadline:
                    with tracer.lock:
                        if len(tracer.samples) > n0 + 1:
                            inside.append(len(tracer.samples) - n0)
                            break
                    time.sleep(0.005)
                written.append(text)
                return self.f.write(text)

        real_open = open

        def opener(file, mode="r", *args, **kwargs):
            f = real_open(file, mode, *args, **kwargs)
            return SlowWrite(f) if file == path and "w" in mode else f

        self.op.edit()  # an add: a new file renamed over the old one
        with mock.patch.object(faults, "open", opener, create=True):
            self.op.edit()  # a comment, in place: truncated, then written
        self.assertEqual(len(written), 1, "the operator's in-place write went through the slow writer")
        with open(path) as f:
            self.assertIn("; operator note: edit 2", f.read())
        problems = self.problems()
        self.assertEqual(problems, [], "a sample read the operator's half-made write")
        self.assertEqual(inside, [], "samples were taken between the operator's truncate and write")
        with open(self.lab.path("events", "operator-edits.log")) as f:
            log = f.read()
        self.assertRegex(log, r"\d+\.\d+ edit 2 comment \(written from \d+\.\d+\)")

    def replace(self, content):
        """pgbouncer.ini replaced the hook's way: a new file renamed over it."""
        tmp = self.lab.path("pgbouncer", ".hook-tmp")
        with open(tmp, "w") as f:
            f.write(content)
        os.rename(tmp, self.lab.ini)

    def hook_leaves(self, content, shown):
        """A stand-in for the hook leaves `content` in the file (renamed over
        it, or, when `content` is empty, truncated in place, as a hook that
        wrote the file in place would), holding no operator lock, after the
        operator's edits, until it has been sampled. The row must not hold."""
        self.op.edit()
        self.op.edit()
        if content:
            self.replace(content)
        else:
            with open(self.lab.ini, "w"):
                pass
        self.sampled_after(time.time())
        self.replace(INI)  # the hook's next run puts it right
        problems = self.problems()
        self.assertEqual(len(problems), 1, problems)
        self.assertIn(f"ini host {shown},", problems[0])
        row = holding_row()
        self.assertTrue(faults.holds(row))
        row["problems"] += problems
        self.assertFalse(faults.holds(row))

    def test_an_ini_the_hook_truncated_fails_the_row(self):
        self.hook_leaves("", "-")

    def test_an_ini_the_hook_left_without_the_managed_entry_fails_the_row(self):
        self.hook_leaves(INI.replace("appdb = host=198.51.100.11 port=5432 dbname=postgres\n",
                                     "op1 = host=198.51.100.11 port=5432 dbname=postgres\n"), "-")

    def test_an_ini_the_hook_left_on_a_replica_fails_the_row(self):
        self.hook_leaves(INI.replace("198.51.100.11", "198.51.100.12"), "198.51.100.12")


class ConsulChoicesTest(unittest.TestCase):
    """What each row acts on, on real Consul and on the double (the lab's own topology.env)."""

    topo = topology.Topology()
    servers = topo.get("LAB_CONSUL_SERVERS").split()

    def test_the_matrix_runs_on_the_consul_asked_for_else_the_labs_default(self):
        self.assertEqual(faults.consul_kind("double", "real", "real"), "double")
        self.assertEqual(faults.consul_kind(None, "double", "real"), "double")
        self.assertEqual(faults.consul_kind(None, None, "real"), "real")
        self.assertEqual(faults.consul_kind(None, "", "double"), "double")
        with self.assertRaisesRegex(base.LabError, "real or double"):
            faults.consul_kind("etcd", None, "real")

    def test_rows_only_one_consul_has_are_skipped_on_the_other_saying_why(self):
        real_only = ["consul-leader-loss", "consul-quorum-loss", "agent-restart", "token-revoked"]
        todo, skipped = faults.plan_for("", "double")
        self.assertEqual([f for f, _, _ in skipped], real_only)
        for f, _, why in skipped:
            self.assertTrue(why.startswith("real Consul only: ") or why.startswith("real Consul and etcd only: "), why)
        self.assertIn(("slow-consul", "-"), todo)
        self.assertEqual(len(todo) + len(skipped), sum(len(v) for v in faults.FAULTS.values()))
        todo, skipped = faults.plan_for("", "real")
        self.assertEqual([(f, v) for f, v, _ in skipped], [("slow-consul", "-")])
        self.assertIn("--delay-file", skipped[0][2])
        for f in real_only:
            self.assertIn((f, "-"), todo)
        self.assertEqual(todo[:2], [("isolation", "-"), ("consul-cut", "failsafe-off")])
        todo, skipped = faults.plan_for("token-revoked,consul-down:failsafe-on", "double")
        self.assertEqual(todo, [("consul-down", "failsafe-on")])
        self.assertEqual([f for f, _, _ in skipped], ["token-revoked"])
        self.assertIn("without ACLs", skipped[0][2])
        with self.assertRaisesRegex(base.LabError, "unknown fault"):
            faults.plan_for("raft-leader", "real")

    def test_on_etcd_the_raft_rows_run_and_the_consul_only_ones_are_skipped(self):
        todo, skipped = faults.plan_for("", "etcd3")
        self.assertEqual([f for f, _, _ in skipped], ["slow-consul", "agent-restart", "token-revoked"])
        self.assertIn("sch_netem", skipped[0][2])
        for f in ("isolation", "consul-cut", "consul-down", "consul-leader-loss", "consul-quorum-loss", "killed-runs"):
            self.assertIn(f, [t for t, _ in todo])
        self.assertEqual(faults.row_name("consul-down", "etcd3"), "etcd-down")
        self.assertEqual(faults.row_name("consul-down", "real"), "consul-down")
        members = ["es1", "es2", "es3"]
        self.assertEqual(faults.consul_pid_names("etcd3", members), ["etcd-es1", "etcd-es2", "etcd-es3"])
        self.assertEqual(faults.consul_routes("etcd3", members, {"es1": "198.51.100.21", "es2": "198.51.100.22",
                                                                  "es3": "198.51.100.23"}.get),
                         ["198.51.100.21/32", "198.51.100.22/32", "198.51.100.23/32"])
        self.assertEqual(faults.quorum_loss_victims("es2", members), ["es2", "es1"])

    def test_frozen_means_every_server_on_real_consul_and_the_one_double(self):
        self.assertEqual(self.servers, ["cs1", "cs2", "cs3"])
        self.assertEqual(faults.consul_pid_names("real", self.servers), ["consul-cs1", "consul-cs2", "consul-cs3"])
        self.assertEqual(faults.consul_pid_names("double", self.servers), ["consul"])
        with self.assertRaises(base.LabError):
            faults.consul_pid_names("", self.servers)

    def test_a_host_cut_from_consul_loses_every_server_or_the_double(self):
        self.assertEqual(faults.consul_routes("real", self.servers, self.topo.addr),
                         ["198.51.100.5/32", "198.51.100.6/32", "198.51.100.7/32"])
        self.assertEqual(faults.consul_routes("double", self.servers, self.topo.addr), ["198.51.100.2/32"])

    def test_the_raft_leader_is_the_server_whose_address_status_leader_names(self):
        addrs = {h: self.topo.addr(h) for h in self.servers}
        self.assertEqual(faults.raft_leader_host('"198.51.100.6:8300"', addrs), "cs2")
        self.assertEqual(faults.raft_leader_host(b'"198.51.100.7:8300"\n', addrs), "cs3")
        self.assertIsNone(faults.raft_leader_host('""', addrs))
        self.assertEqual(faults.raft_leader_host('"[2001:db8::6]:8300"', {"cs1": "2001:db8::5", "cs2": "2001:db8::6"}),
                         "cs2")
        with self.assertRaisesRegex(base.LabError, "none of the servers"):
            faults.raft_leader_host('"198.51.100.11:8300"', addrs)
        with self.assertRaisesRegex(base.LabError, "none of the servers"):
            faults.raft_leader_host('"198.51.100.55:8300"', addrs)  # not a prefix match
        with self.assertRaisesRegex(base.LabError, "not a string"):
            faults.raft_leader_host("null", addrs)

    def test_a_quorum_loss_stops_the_leader_and_as_few_others_as_it_takes(self):
        self.assertEqual(faults.quorum_loss_victims("cs2", self.servers), ["cs2", "cs1"])
        self.assertEqual(faults.quorum_loss_victims("cs1", self.servers), ["cs1", "cs2"])
        self.assertEqual(faults.quorum_loss_victims(None, self.servers), ["cs1", "cs2"])
        self.assertEqual(faults.quorum_loss_victims("s5", ["s1", "s2", "s3", "s4", "s5"]), ["s5", "s1", "s2"])
        self.assertEqual(faults.quorum_loss_victims("s1", ["s1"]), ["s1"])

    def test_new_tokens_replace_only_the_revoked_watch_tokens(self):
        config = {"node_name": "db1", "acl": {"tokens": {"agent": "agent-secret"}},
                  "watches": [{"key": "a", "token": "old-hook"}, {"key": "b", "token": "glue"},
                              {"key": "c", "token": "old-hook"}, {"key": "d"}]}
        new, n = faults.with_watch_tokens(config, {"old-hook": "new-hook"})
        self.assertEqual(n, 2)
        self.assertEqual([w.get("token") for w in new["watches"]], ["new-hook", "glue", "new-hook", None])
        self.assertEqual(new["acl"], config["acl"])
        self.assertEqual(config["watches"][0]["token"], "old-hook", "the argument was changed")
        self.assertEqual(faults.with_watch_tokens({"node_name": "cs1"}, {"old-hook": "x"}), ({"node_name": "cs1"}, 0))

    def test_only_runs_exiting_75_while_their_hosts_agent_refused_the_token_count(self):
        runs = [{"host": "db1", "t": 10.0, "signal": 0, "exit": 75},    # before db1's agent refused it
                {"host": "db1", "t": 12.0, "signal": 0, "exit": 75},    # counts
                {"host": "db1", "t": 13.0, "signal": 0, "exit": 1},     # the token's own exit
                {"host": "db2", "t": 12.0, "signal": 9, "exit": 0},     # killed
                {"host": "pgbouncer", "t": 16.0, "signal": 0, "exit": 75},  # counts
                {"host": "pgbouncer", "t": 30.0, "signal": 0, "exit": 75},  # after the new token
                {"host": "db3", "t": 12.0, "signal": 0, "exit": 75}]    # db3 never refused it
        bad = faults.exit_75_while_refused(runs, {"db1": 11.0, "db2": 11.0, "pgbouncer": 15.0}, 20.0)
        self.assertEqual([(r["host"], r["t"]) for r in bad], [("db1", 12.0), ("pgbouncer", 16.0)])

    def test_the_table_lists_what_was_skipped_and_each_rows_load(self):
        row = dict(faults.failed_row("isolation", "link down 30 s", "x"), load=2.345)
        md = faults.markdown([row], "title", [("token-revoked", "-", "real Consul only: no ACLs")])
        self.assertIn("| NO | 2.3 |", md)
        self.assertIn("Skipped on this DCS:\n\n- token-revoked: real Consul only: no ACLs", md)
        self.assertNotIn("Skipped", faults.markdown([row], "title"))


if __name__ == "__main__":
    unittest.main(verbosity=2)
