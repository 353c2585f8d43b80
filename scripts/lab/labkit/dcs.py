"""The lab's DCS as its clients read it: Consul's KV (the double over HTTP,
or real Consul over HTTPS with a token; a token makes a read blocking),
etcd's v3 API through its JSON gateway (the hook's lab on etcd3) or etcd's
v2 keys API (the vip-manager variant), both on the three members over HTTPS
with the lab's root client certificate; and plain HTTP GETs (Patroni's
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

    tls = None

    def __init__(self, hostport):
        self.hostport = hostport

    def read(self, key, token=None, wait_s=2.0):
        if token is None:
            status, resp, body = http_get(self.hostport, f"/v2/keys/{key}", 5.0, self.tls)
            nxt = int(resp.getheader("X-Etcd-Index", "0")) + 1
            if status == 404:
                return None, nxt
            if status != 200:
                raise OSError(f"GET /v2/keys/{key}: HTTP {status}")
            return json.loads(body)["node"].get("value"), nxt
        try:
            status, _resp, body = http_get(self.hostport, f"/v2/keys/{key}?wait=true&waitIndex={token}", wait_s, self.tls)
        except (TimeoutError, socket.timeout):
            return self.read(key)  # nothing changed meanwhile: a plain read
        if status != 200:  # 400 "event index cleared" and the like: a plain read
            return self.read(key)
        ev = json.loads(body)
        node = ev.get("node", {})
        value = None if ev.get("action") in ("delete", "expire", "compareAndDelete") else node.get("value")
        return value, int(node.get("modifiedIndex", token)) + 1


class _Hosts:
    """Members tried in turn (the one that answered last first), each over
    HTTPS with the lab's CA and a client certificate (etcd's
    --client-cert-auth; with auth on, the certificate's CN is the user)."""

    def __init__(self, hostports, tls):
        self.hostports = list(hostports)
        self.tls = tls

    def each(self, fn):
        """fn(hostport) on the first member that answers; the last error when none does."""
        err = None
        for hp in list(self.hostports):
            try:
                got = fn(hp)
            except (OSError, http.client.HTTPException) as e:
                err = e
                continue
            if hp != self.hostports[0]:
                self.hostports.remove(hp)
                self.hostports.insert(0, hp)
            return got
        raise err if err else OSError("no etcd member to ask")


class EtcdV2Tls(EtcdV2):
    """EtcdV2 on the three members over HTTPS (the vip-manager variant)."""

    def __init__(self, hostports, tls):
        self.hosts = _Hosts(hostports, tls)
        self.tls = tls

    def read(self, key, token=None, wait_s=2.0):
        def on(hp):
            self.hostport = hp
            return EtcdV2.read(self, key, token, wait_s)
        return self.hosts.each(on)


class EtcdV3:
    """etcd's v3 API through its JSON gateway (POST /v3/kv/range, /v3/watch),
    the one Patroni's etcd3 backend and the hook use; keys are Patroni's
    etcd3 layout, /<namespace>/<scope>/<name> (a key given without its
    leading slash gets one). A token (a revision) makes the read a watch from
    that revision, bounded by wait_s. `auth`: (user, password), sent to
    /v3/auth/authenticate for a token (again when etcd forgot it): through
    the gateway a client certificate cannot name the user."""

    def __init__(self, hostports, tls, auth=None):
        self.hosts = _Hosts(hostports, tls)
        self.tls = tls
        self.auth = auth
        self.token = None

    def _headers(self, hp, timeout):
        h = {"Content-Type": "application/json"}
        if self.auth and self.token is None:
            out = self._request(hp, "/v3/auth/authenticate", {"name": self.auth[0], "password": self.auth[1]},
                                timeout, {"Content-Type": "application/json"})
            self.token = out["token"]
        if self.token:
            h["Authorization"] = self.token
        return h

    def _request(self, hp, path, body, timeout, headers):
        host, port = hp.rsplit(":", 1)
        conn = http.client.HTTPSConnection(host, int(port), timeout=timeout, context=self.tls)
        try:
            conn.request("POST", path, body=json.dumps(body), headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            if resp.status != 200:
                if b"token" in data and self.auth:
                    self.token = None  # expired or unknown: authenticate again next time
                raise OSError(f"POST {path} on {hp}: HTTP {resp.status}: {data[:200]!r}")
            return json.loads(data)
        finally:
            conn.close()

    @staticmethod
    def _key(key):
        return key if key.startswith("/") else "/" + key

    def _post(self, hp, path, body, timeout):
        return self._request(hp, path, body, timeout, self._headers(hp, timeout))

    def range(self, key, timeout=3.0):
        """(value or None, revision of the store) of one key."""
        k = base64.b64encode(self._key(key).encode()).decode()
        out = self.hosts.each(lambda hp: self._post(hp, "/v3/kv/range", {"key": k}, timeout))
        rev = int(out.get("header", {}).get("revision", 0))
        kvs = out.get("kvs") or []
        value = base64.b64decode(kvs[0].get("value", "")).decode() if kvs else None
        return value, rev

    def read(self, key, token=None, wait_s=2.0):
        if token is None:
            value, rev = self.range(key)
            return value, rev + 1
        try:
            got = self.hosts.each(lambda hp: self._watch(hp, key, token, wait_s))
        except (OSError, http.client.HTTPException, ValueError):
            got = None
        if got is None:  # nothing within wait_s, or the watch failed: a plain read
            return self.read(key)
        return got

    def _watch(self, hp, key, start, wait_s):
        """The first change of `key` at or after revision `start`: (value, next
        token); None when nothing changed within wait_s or the revision was compacted."""
        host, port = hp.rsplit(":", 1)
        conn = http.client.HTTPSConnection(host, int(port), timeout=wait_s, context=self.tls)
        k = base64.b64encode(self._key(key).encode()).decode()
        try:
            conn.request("POST", "/v3/watch", body=json.dumps({"create_request": {"key": k, "start_revision": start}}),
                         headers=self._headers(hp, wait_s))
            resp = conn.getresponse()
            if resp.status != 200:
                raise OSError(f"POST /v3/watch on {hp}: HTTP {resp.status}")
            while True:
                try:
                    line = resp.readline()
                except (TimeoutError, socket.timeout):
                    return None
                if not line:
                    raise OSError(f"the watch on {hp} ended")
                if not line.strip():
                    continue
                msg = json.loads(line)
                if "error" in msg:
                    raise OSError(f"watch on {hp}: {msg['error']}")
                res = msg.get("result", {})
                if res.get("compact_revision") not in (None, "0", 0) or res.get("canceled"):
                    return None
                for ev in res.get("events") or []:
                    kv = ev.get("kv", {})
                    nxt = int(kv.get("mod_revision", start)) + 1
                    if ev.get("type") == "DELETE":
                        return None, nxt
                    return base64.b64decode(kv.get("value", "")).decode(), nxt
        finally:
            conn.close()
