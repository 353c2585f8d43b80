#!/usr/bin/env python3
"""The fault matrix's end-state sampler (faults.py: Observer, Tracer,
relapse_problems) against a real pgbouncer.ini written by the simulated
operator (faults.Operator) and by a stand-in for the hook, with the lab's
other probes (the leader key, the VIP's holders, PgBouncer's pause) stubbed
to a converged cluster. Run by tests/fault_sampler.rs:

    python3 scripts/lab/test_faults.py

- a sample never falls inside the operator's in-place write (O_TRUNC, then
  the write): the operator's own non-atomic write does not fail the row;
- an ini the hook truncated, left without the managed entry, or pointing at
  a replica still fails the row.
"""

import os
import sys
import tempfile
import time
import unittest
from unittest import mock

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import faults  # noqa: E402
import labtool as lt  # noqa: E402

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
    """What Observer, Tracer and Operator use of labtool's Lab, on a
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
        return lt.ini_host(self.ini, self.topo.pgb_db)


def wait_until(what, cond, timeout=WAIT_S):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def holding_row():
    """A row that holds, but for the problems a test adds."""
    return {"fault": "ini-edits", "lost_rows": 0, "vip_two_nodes_ms": 0.0,
            "converged": {k: True for k in faults.CONVERGED_KEYS}, "problems": []}


class SamplerTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory(prefix="test-faults-")
        self.addCleanup(self.dir.cleanup)
        self.lab = Lab(self.dir.name)
        stubs = [(lt, "setns", lambda _ns: None), (lt, "db_sockets", lambda _lab: None),
                 (lt, "vip_holders", lambda lab, _socks: [lab.leader]), (faults.Admin, "paused", lambda _self: False)]
        for target, name, stub in stubs:
            patch = mock.patch.object(target, name, stub)
            patch.start()
            self.addCleanup(patch.stop)
        self.op = faults.Operator(self.lab)
        self.addCleanup(self.op.log.close)
        self.tracer = faults.Tracer(self.lab, ini_guard=self.op.lock)
        self.addCleanup(lambda: (self.tracer.stop.set(), self.tracer.thread.join(5)))
        # The cluster converged before anything happens.
        wait_until("a converged sample", lambda: any(faults.converged(s) for s in self.samples()))
        self.first = next(s for s in self.samples() if faults.converged(s))

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


if __name__ == "__main__":
    unittest.main(verbosity=2)
