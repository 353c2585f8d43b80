"""run-unit: a systemd service unit run the way systemd would run it, for a
lab that has no systemd (scripts/lab.sh starts the kit's
patroni-hook-etcd-watch@.service on the etcd3 lab's hosts through it). What
it reads from the unit file, nothing else: Environment= and
EnvironmentFile= (the latter overriding the former, a leading `-` making the
file optional; `--env-file UNIT_PATH=LAB_PATH` reads the lab's rendering of
a path the unit names), User= and Group=, ExecStartPre=, ExecStart= (one,
Type=simple) and ExecStartPost= (`-` ignores a failure), Restart= (always,
on-failure, no) and RestartSec=; %i (and %I, %%) and ${VAR} / $VAR expanded
as systemd does. ExecStartPost starts right after ExecStart, as systemd does
for Type=simple. The sandboxing options are not emulated (the lab's
namespaces are the isolation); `--no-new-privs` applies NoNewPrivileges=.
`--replace OLD=NEW` swaps a path in the command lines, also inside a quoted
word (the lab's copy of
the binary for /usr/bin/patroni-hook); `--setenv K=V` adds to the
environment (what the host's files would give, e.g. PATRONI_HOOK_CONFIG for
/etc/patroni-hook/config.yml).

Runs until SIGTERM, then stops the running command's process group. Every
start, exit and restart is logged on stdout (the host's watch log)."""

import argparse
import os
import re
import shlex
import signal
import subprocess
import threading
import time

from .base import LabError


def parse_unit(path):
    """{section: [(key, value), ...]} of a unit file (continuation lines joined)."""
    sections, cur = {}, None
    with open(path) as f:
        lines = f.read().splitlines()
    buf = ""
    for raw in lines:
        line = buf + raw
        if line.endswith("\\"):
            buf = line[:-1] + " "
            continue
        buf = ""
        s = line.strip()
        if not s or s[0] in "#;":
            continue
        if s.startswith("[") and s.endswith("]"):
            cur = sections.setdefault(s[1:-1], [])
            continue
        if cur is None or "=" not in s:
            raise LabError(f"{path}: cannot read line {s[:60]!r}")
        k, v = s.split("=", 1)
        cur.append((k.strip(), v.strip()))
    return sections


def seconds(v):
    """A systemd time span (1s, 100ms, 2min, plain seconds)."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*(ms|s|sec|min|m)?\s*", v or "")
    if not m:
        raise LabError(f"cannot read the time span {v!r}")
    n = float(m.group(1))
    return {"ms": n / 1000, "min": n * 60, "m": n * 60}.get(m.group(2), n)


def specifiers(s, instance):
    return re.sub(r"%([%iI])", lambda m: "%" if m.group(1) == "%" else instance, s)


def env_file(path):
    env = {}
    with open(path) as f:
        for line in f:
            s = line.strip()
            if not s or s[0] in "#;" or "=" not in s:
                continue
            k, v = s.split("=", 1)
            v = v.strip()
            if len(v) >= 2 and v[0] == v[-1] and v[0] in "\"'":
                v = v[1:-1]
            env[k.strip()] = v
    return env


def command(line, env, instance, replace):
    """(ignore_failure, argv) of an Exec line: prefixes, %i, then words with
    ${VAR} expanded inside a word and a lone $VAR split into words."""
    ignore = False
    while line and line[0] in "-@:+!":
        ignore |= line[0] == "-"
        line = line[1:]
    argv = []
    for word in shlex.split(specifiers(line, instance)):
        m = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", word)
        if m:
            argv += env.get(m.group(1), "").split()
            continue
        argv.append(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: env.get(m.group(1), ""), word))
    # Also inside a word: the watch's command is one `sh -c "..."` word.
    for old, new in replace.items():
        argv = [w.replace(old, new) for w in argv]
    return ignore, argv


def cmd_run_unit(_lab, argv):
    ap = argparse.ArgumentParser(prog="labtool run-unit")
    ap.add_argument("--unit", required=True)
    ap.add_argument("--instance", default="")
    ap.add_argument("--env-file", action="append", default=[], help="UNIT_PATH=LAB_PATH")
    ap.add_argument("--setenv", action="append", default=[], help="K=V")
    ap.add_argument("--replace", action="append", default=[], help="OLD=NEW")
    ap.add_argument("--no-new-privs", action="store_true")
    a = ap.parse_args(argv)
    unit = parse_unit(a.unit)
    svc = unit.get("Service", [])
    files = dict(x.split("=", 1) for x in a.env_file)
    replace = dict(x.split("=", 1) for x in a.replace)

    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
    for k, v in svc:
        if k == "Environment":
            for assignment in shlex.split(v):
                name, _, value = assignment.partition("=")
                env[name] = value
    for k, v in svc:
        if k == "EnvironmentFile":
            optional = v.startswith("-")
            path = specifiers(v.lstrip("-"), a.instance)
            path = files.get(path, path)
            if os.path.exists(path):
                env.update(env_file(path))
            elif not optional:
                raise LabError(f"{a.unit}: EnvironmentFile {path} is missing")
    env.update(dict(x.split("=", 1) for x in a.setenv))

    values = {}
    for k, v in svc:
        values.setdefault(k, []).append(v)
    user = (values.get("User") or [None])[-1]
    group = (values.get("Group") or [user])[-1]
    restart = (values.get("Restart") or ["no"])[-1]
    restart_sec = seconds((values.get("RestartSec") or ["100ms"])[-1])
    start_timeout = seconds((values.get("TimeoutStartSec") or ["90s"])[-1])
    pre = [command(x, env, a.instance, replace) for x in values.get("ExecStartPre", [])]
    mains = [command(x, env, a.instance, replace) for x in values.get("ExecStart", [])]
    post = [command(x, env, a.instance, replace) for x in values.get("ExecStartPost", [])]
    if len(mains) != 1:
        raise LabError(f"{a.unit}: expected one ExecStart (Type=simple), found {len(mains)}")

    wrap = []
    if user:
        wrap = ["setpriv", f"--reuid={user}", f"--regid={group}", "--init-groups"]
        if a.no_new_privs:
            wrap.append("--no-new-privs")
        wrap.append("--")
    elif a.no_new_privs:
        wrap = ["setpriv", "--no-new-privs", "--"]

    name = os.path.basename(a.unit).replace("@.", f"@{a.instance}.")

    def log(msg):
        t = time.time()
        print(time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z run-unit {name}: {msg}",
              flush=True)

    stop = threading.Event()
    running = {}

    def on_term(*_):
        stop.set()
        p = running.get("main")
        if p is not None and p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)

    def run_once(ignore, cmd, what):
        try:
            rc = subprocess.run(wrap + cmd, env=env, stdin=subprocess.DEVNULL, timeout=start_timeout).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
        if rc != 0:
            log(f"{what} {' '.join(cmd)}: exit {rc}" + (" (ignored: '-')" if ignore else ""))
        return rc == 0 or ignore

    while not stop.is_set():
        ok = all(run_once(ign, cmd, "ExecStartPre") for ign, cmd in pre)
        rc = None
        if ok:
            main = subprocess.Popen(wrap + mains[0][1], env=env, stdin=subprocess.DEVNULL, start_new_session=True)
            running["main"] = main
            log(f"started: {' '.join(mains[0][1])} (pid {main.pid})")
            for ign, cmd in post:
                run_once(ign, cmd, "ExecStartPost")
            rc = main.wait()
            running.pop("main", None)
            if stop.is_set():
                break
            log(f"ExecStart exited with {rc}")
        if restart == "no" or (restart == "on-failure" and rc == 0):
            log(f"Restart={restart}: not restarting")
            return
        log(f"restarting in {restart_sec:g} s (Restart={restart})")
        stop.wait(restart_sec)
    log("stopped (SIGTERM)")
