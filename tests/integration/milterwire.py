"""milterwire -- the milter protocol on the wire, for tests that must see
exactly what an MTA sends (Python 3 standard library only).

Two tools, each a listening socket on 127.0.0.1 served by threads of the
test process:

  Spy(upstream_port)   a recording proxy: the MTA connects to spy.port, the
                       bytes go on unchanged to a milter on upstream_port
                       (ours, e.g. mfscen) and back; every packet of both
                       directions is kept, per MTA connection.
  Scripted(script)     a milter of its own: negotiates the protocol steps
                       it is told (e.g. with or without SMFIP_HDR_LEADSPC),
                       answers CONTINUE to everything except what
                       script(conn, cmd, data) returns, and keeps every
                       packet it receives.

A packet is (direction, cmd, data): direction ">" MTA to milter, "<" milter
to MTA; cmd one character ("L", "N", "E", "a", "h"...); data the bytes
after it.  conn.packets is the list of one connection; decode() turns
the common ones into readable tuples.
"""

import socket
import struct
import threading
import time

# SMFIP_* (protocol steps) and SMFIF_* (actions) used by the tests
P_SKIP = 0x400
P_RCPT_REJ = 0x800
P_HDR_LEADSPC = 0x100000
P_ALL_STEPS = 0x1FFFFF
ACT_ALL = 0x1FF

# commands the MTA does not wait a reply for
NO_REPLY = set("DAQK")


def pack(cmd, data=b""):
    return struct.pack(">I", len(data) + 1) + cmd.encode() + data


def nul(*parts):
    """name\\0value\\0... (str or bytes parts)."""
    return b"".join((p.encode() if isinstance(p, str) else p) + b"\0" for p in parts)


def read_packet(f):
    """(cmd, data) of the next packet read from f (a socket's binary
    makefile), or None at EOF."""
    head = f.read(4)
    if len(head) < 4:
        return None
    n = struct.unpack(">I", head)[0]
    body = f.read(n)
    if n == 0 or len(body) < n:
        return None
    return chr(body[0]), body[1:]


def packets(sock):
    """Yield the (cmd, data) packets read from sock until EOF or an
    error."""
    f = sock.makefile("rb")
    try:
        while True:
            p = read_packet(f)
            if p is None:
                return
            yield p
    except OSError:
        return
    finally:
        f.close()


def decode(cmd, data):
    """A readable form of one packet: ("L", name, value) for a header,
    ("D", for_cmd, {name: value}) for macros, ("h", name, value) and
    ("i"/"m", index, name, value) for header actions, (cmd, text...) for
    the NUL-separated others, (cmd,) when empty.  Names and values are
    str (UTF-8, errors replaced), values byte for byte otherwise."""
    def parts(b):
        return [p.decode("utf-8", "replace") for p in b.split(b"\0")[:-1]]
    if cmd == "O":
        return ("O",) + struct.unpack(">III", data[:12])
    if cmd == "D":
        p = parts(data[1:])
        return ("D", chr(data[0]), dict(zip(p[0::2], p[1::2])))
    if cmd in ("i", "m"):
        return (cmd, struct.unpack(">I", data[:4])[0]) + tuple(parts(data[4:]))
    if cmd in ("B", "b"):
        return (cmd, len(data))
    if cmd == "C":
        host, rest = data.split(b"\0", 1)
        return ("C", host.decode("utf-8", "replace"), chr(rest[0]))
    if not data:
        return (cmd,)
    return (cmd,) + tuple(parts(data))


class Conn:
    """One MTA connection: .packets [(direction, cmd, data)], .closed (an
    Event set when it ended)."""

    def __init__(self):
        self.packets = []
        self.closed = threading.Event()
        self.lock = threading.Lock()

    def add(self, direction, cmd, data):
        with self.lock:
            self.packets.append((direction, cmd, data))

    def seq(self, direction=None, skip="D"):
        """The decoded packets (of one direction, ">" or "<", or both as
        (direction,) + decoded), without the commands in skip."""
        with self.lock:
            ps = list(self.packets)
        out = []
        for d, c, b in ps:
            if c in skip or (direction and d != direction):
                continue
            out.append(decode(c, b) if direction else (d,) + decode(c, b))
        return out

    def headers(self):
        """The HEADER packets' (name, value) as sent, in order."""
        return [x[1:] for x in self.seq(">") if x[0] == "L"]

    def macros(self):
        """[(for_cmd, {name: value})] of every MACRO packet."""
        return [x[1:] for x in self.seq(">", skip="") if x[0] == "D"]


class _Server:
    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self):
        while True:
            try:
                s, _ = self.sock.accept()
            except OSError:
                return
            conn = Conn()
            with self._lock:
                self.conns.append(conn)
            threading.Thread(target=self._serve, args=(s, conn), daemon=True).start()

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def connections(self):
        with self._lock:
            return list(self.conns)

    def wait_closed(self, count=1, timeout=30.0):
        """Wait until count connections have ended; returns them all."""
        end = time.monotonic() + timeout
        while True:
            cs = self.connections()
            if len(cs) >= count and all(c.closed.is_set() for c in cs[:count]):
                return cs
            if time.monotonic() > end:
                raise AssertionError("%d milter connection(s) not ended after %.0fs: %r"
                                     % (count, timeout, [c.seq() for c in cs]))
            time.sleep(0.05)


class Spy(_Server):
    """A recording proxy in front of a milter on upstream_port."""

    def __init__(self, upstream_port):
        self.upstream = upstream_port
        super().__init__()

    def _serve(self, mta, conn):
        try:
            up = socket.create_connection(("127.0.0.1", self.upstream), timeout=10)
        except OSError:
            mta.close()
            conn.closed.set()
            return
        up.settimeout(None)

        def pump(src, dst, direction):
            for p in packets(src):
                conn.add(direction, *p)
                try:
                    dst.sendall(pack(*p))
                except OSError:
                    break
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        t = threading.Thread(target=pump, args=(up, mta, "<"), daemon=True)
        t.start()
        pump(mta, up, ">")
        t.join(30)
        mta.close()
        up.close()
        conn.closed.set()


class Scripted(_Server):
    """A milter of its own.  protocol: the steps it asks for (masked by
    what the MTA offers; default none: every event, with replies, and no
    leading space); actions: the actions it asks for.  script(conn, cmd,
    data) -> None (CONTINUE; ACCEPT at end of message) or a list of (cmd,
    data) replies, the last one the final reply."""

    def __init__(self, script=None, protocol=0, actions=ACT_ALL):
        self.script = script or (lambda conn, cmd, data: None)
        self.protocol = protocol
        self.actions = actions
        super().__init__()

    def _serve(self, s, conn):
        s.settimeout(60)
        for cmd, data in packets(s):
            conn.add(">", cmd, data)
            if cmd == "O":
                _, act, prot = struct.unpack(">III", data[:12])
                out = [("O", struct.pack(">III", 6, act & self.actions,
                                         prot & self.protocol))]
            elif cmd == "Q":
                break
            elif cmd in NO_REPLY:
                continue
            else:
                out = self.script(conn, cmd, data) or [("a" if cmd == "E" else "c", b"")]
            try:
                for c, b in out:
                    conn.add("<", c, b)
                    s.sendall(pack(c, b))
            except OSError:
                break
        s.close()
        conn.closed.set()
