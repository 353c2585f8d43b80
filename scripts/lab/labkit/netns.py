"""Network namespaces: entering one on a thread (in_netns; the process itself
stays in the host's namespace, so lab.sh down can kill whatever is inside
the lab's), and the IPv4 addresses of each database node's namespace over
netlink (which nodes hold the VIP)."""

import ctypes
import os
import socket
import struct
import threading


CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL("libc.so.6", use_errno=True)


def setns(name):
    """Moves the calling thread into network namespace `name`."""
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into {name}: {os.strerror(err)}")
    finally:
        os.close(fd)


def in_netns(ns, fn, *args, **kw):
    """Runs fn(*args, **kw) on a new thread inside namespace `ns` and returns
    its result (or raises its exception). The process itself stays where it is."""
    box = {}

    def run():
        try:
            setns(ns)
            box["value"] = fn(*args, **kw)
        except BaseException as e:  # handed to the caller
            box["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box.get("value")

RTM_NEWADDR, RTM_GETADDR = 20, 22
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
IFA_LOCAL = 2


class AddrSocket:
    """A NETLINK_ROUTE socket opened inside one namespace; it stays bound to
    that namespace whatever namespace the thread is in later."""

    def __init__(self, ns):
        setns(ns)
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self.sock.bind((0, 0))
        self.sock.settimeout(1.0)
        self.seq = 0
        self.ns = ns

    def ipv4(self):
        """The set of local IPv4 addresses (strings) in the namespace."""
        self.seq += 1
        body = struct.pack("BBBBI", socket.AF_INET, 0, 0, 0, 0)
        hdr = struct.pack("IHHII", 16 + len(body), RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, self.seq, 0)
        self.sock.send(hdr + body)
        found = set()
        while True:
            data = self.sock.recv(65536)
            off = 0
            while off + 16 <= len(data):
                length, mtype, _flags, seq, _pid = struct.unpack_from("IHHII", data, off)
                if length < 16:
                    return found
                if seq == self.seq:
                    if mtype == NLMSG_DONE:
                        return found
                    if mtype == NLMSG_ERROR:
                        raise OSError(f"netlink error dumping addresses in {self.ns}")
                    if mtype == RTM_NEWADDR:
                        a = off + 16 + 8  # after nlmsghdr and ifaddrmsg
                        end = off + length
                        while a + 4 <= end:
                            alen, atype = struct.unpack_from("HH", data, a)
                            if alen < 4:
                                break
                            if atype == IFA_LOCAL and alen >= 8:
                                found.add(socket.inet_ntoa(data[a + 4:a + 8]))
                            a += (alen + 3) & ~3
                off += (length + 3) & ~3


def db_sockets(lab):
    """{node: AddrSocket} for every database namespace; the calling thread
    ends up back in the client namespace."""
    socks = {n: AddrSocket(lab.ns(n)) for n in lab.topo.db_nodes}
    setns(lab.ns("client"))
    return socks


def vip_holders(lab, socks):
    return sorted(n for n, s in socks.items() if lab.topo.vip in s.ipv4())
