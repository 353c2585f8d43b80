"""The lab's layout: scripts/lab/topology.env, the one definition of hosts,
addresses, ports and names (lab.sh sources it, tests/e2e.rs parses it,
Topology reads it here), and the parser of its KEY=VALUE files (also the
lab.env a running lab records)."""

import re

from .base import LabError, TOPOLOGY


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
