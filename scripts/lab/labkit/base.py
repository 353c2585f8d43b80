"""What every module of the lab uses: its paths (the repository, lab.sh, the
entry point labtool.py, the Patroni virtualenv), LabError, bounded waits
(wait_for: every wait has a deadline and fails naming what it waited for),
signals and processes. Times are wall-clock seconds since the epoch (float),
so they line up with the hook's RFC 3339 log lines."""

import contextlib
import os
import signal
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


def kill(pid, sig, what):
    if not alive(pid):
        raise LabError(f"{what} is not running (pid {pid})")
    os.kill(pid, sig)


def load_lines(path):
    try:
        with open(path) as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


def ms(x):
    return None if x is None else round(x * 1000.0, 1)
