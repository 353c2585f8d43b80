"""The lab's DCS as its clients read it: Consul's KV (the double over HTTP,
or real Consul over HTTPS with a token; a token makes a read blocking) or
etcd's v2 keys API (the vip-manager variant), and plain HTTP GETs (Patroni's
REST API)."""

import base64
import http.client
import json
import socket


def http_get(hostport, path, timeout, tls=None, headers=None):
    """(status, headers, body) of one GET; over HTTPS with the `tls` context."""
    host, port = hostport.rsplit(":", 1)
    if tls is not None:
        conn = http.client.HTTPSConnection(host, int(port), timeout=timeout, context=tls)
    else:
        conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp, resp.read()
    finally:
        conn.close()


def http_json(hostport, path, timeout=2.0):
    return json.loads(http_get(hostport, path, timeout)[2])


class Consul:
    """KV reads; a token makes the read a blocking query (tests/consul-double/SPEC.md).
    Real Consul: `tls` (an ssl context with the lab's CA) and an ACL `token`."""

    def __init__(self, hostport, tls=None, token=None):
        self.hostport = hostport
        self.tls = tls
        self.headers = {"X-Consul-Token": token} if token else {}

    def request(self, method, path, body=None, timeout=5.0):
        """(status, body) of one request (writes: the adopt scenarios' operator)."""
        host, port = self.hostport.rsplit(":", 1)
        if self.tls is not None:
            conn = http.client.HTTPSConnection(host, int(port), timeout=timeout, context=self.tls)
        else:
            conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=self.headers)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def read(self, key, token=None, wait_s=2.0):
        """(value or None, token for the next blocking read)."""
        path = f"/v1/kv/{key}"
        if token is not None:
            path += f"?index={token}&wait={wait_s:g}s"
        status, resp, body = http_get(self.hostport, path, wait_s + 3.0, self.tls, self.headers)
        idx = int(resp.getheader("X-Consul-Index", "0"))
        # An index that went backwards means a reset; start over.
        nxt = idx if (token is None or idx >= token) else None
        if status == 404:
            return None, nxt
        if status != 200:
            raise OSError(f"GET {path}: HTTP {status}")
        raw = json.loads(body)[0].get("Value")
        return (base64.b64decode(raw).decode() if raw else ""), nxt


class EtcdV2:
    """etcd's v2 keys API, the one Patroni's etcd backend and vip-manager
    1.0.2 use; a token makes the read a watch (wait=true&waitIndex)."""

    def __init__(self, hostport):
        self.hostport = hostport

    def read(self, key, token=None, wait_s=2.0):
        if token is None:
            status, resp, body = http_get(self.hostport, f"/v2/keys/{key}", 5.0)
            nxt = int(resp.getheader("X-Etcd-Index", "0")) + 1
            if status == 404:
                return None, nxt
            if status != 200:
                raise OSError(f"GET /v2/keys/{key}: HTTP {status}")
            return json.loads(body)["node"].get("value"), nxt
        try:
            status, _resp, body = http_get(self.hostport, f"/v2/keys/{key}?wait=true&waitIndex={token}", wait_s)
        except (TimeoutError, socket.timeout):
            return self.read(key)  # nothing changed meanwhile: a plain read
        if status != 200:  # 400 "event index cleared" and the like: a plain read
            return self.read(key)
        ev = json.loads(body)
        node = ev.get("node", {})
        value = None if ev.get("action") in ("delete", "expire", "compareAndDelete") else node.get("value")
        return value, int(node.get("modifiedIndex", token)) + 1
