#!/usr/bin/env python3
"""Tests of milter-check (core/tools) against the example milters and small
fake milters written here.

The example milters external and rcptcount run on unix sockets in a temporary
directory; the fake milters are threads speaking the milter protocol by hand
(what they receive is recorded, what they answer is scripted).  Needs the
build tree in MF_BUILD_DIR (default ./build) with milter-check, external and
rcptcount built; exits 77 (SKIP) when they are missing.
MF_CHECK_WRAPPER runs milter-check under a wrapper (valgrind).
"""
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

BUILD = os.environ.get("MF_BUILD_DIR") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "build")
CHECK = os.path.join(BUILD, "core", "tools", "milter-check")
EXTERNAL = os.path.join(BUILD, "examples", "external")
RCPTCOUNT = os.path.join(BUILD, "examples", "rcptcount")
# e.g. MF_CHECK_WRAPPER="valgrind -q --leak-check=full --error-exitcode=99"
WRAPPER = os.environ.get("MF_CHECK_WRAPPER", "").split()

MESSAGE = (b"From: Alice <alice@example.org>\n"
           b"To: Bob <bob@example.net>\n"
           b"Subject: Hello\n"
           b"\tthere\n"
           b"Received: from a by b; Mon, 1 Jan 2024 00:00:00 +0000\n"
           b"Received: from c by d; Mon, 1 Jan 2024 00:00:01 +0000\n"
           b"\n"
           b"line one\n"
           b"line two\n")

TRAP_A = "spam-trap@xn--zck5b2b.example.com"
TRAP_U = "spam-trap@スパム.example.com"


def run(args, stdin=b"", timeout=60):
    """Run milter-check; returns (exit status, stdout str, stderr str)."""
    p = subprocess.run(WRAPPER + [CHECK] + args, input=stdin, capture_output=True,
                       timeout=timeout)
    return (p.returncode, p.stdout.decode("utf-8", "replace"),
            p.stderr.decode("utf-8", "replace"))


def run_json(testcase, args, stdin=b"", expect=0):
    rc, out, err = run(["--json"] + args, stdin)
    testcase.assertEqual(rc, expect, "exit status; stderr: %s\nstdout: %s"
                         % (err, out))
    try:
        doc = json.loads(out)
    except ValueError as e:
        testcase.fail("not JSON (%s): %r" % (e, out))
    testcase.assertEqual(doc["exit"], expect)
    return doc


def wait_socket(path, proc, seconds=15):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("%s exited with %s" % (path, proc.returncode))
        if os.path.exists(path):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(path)
                return
            except OSError:
                pass
            finally:
                s.close()
        time.sleep(0.05)
    raise RuntimeError("no socket at %s" % path)


def headers(result):
    return [tuple(h) for h in result["headers"]]


# ---- A fake milter ---------------------------------------------------------

def recv_exact(conn, n):
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def recv_packet(conn):
    """(command, data) of the next packet, or None at EOF."""
    hdr = recv_exact(conn, 4)
    if hdr is None:
        return None
    body = recv_exact(conn, struct.unpack(">I", hdr)[0])
    if body is None:
        return None
    return body[:1], body[1:]


def accept_one(sock):
    """The one connection of a fake milter (30 s timeout), or None."""
    try:
        conn, _ = sock.accept()
    except OSError:
        return None
    conn.settimeout(30)
    return conn


def packet(code, data=b""):
    return struct.pack(">I", len(data) + 1) + code + data


def cstr(*parts):
    return b"".join(p.encode() + b"\0" if isinstance(p, str) else p + b"\0"
                    for p in parts)


class FakeMilter(threading.Thread):
    """Answers OPTNEG with (version, actions, protocol), then every command
    with handler(cmd, data) -> list of packets (None = CONTINUE).  Records
    every (cmd, data) it receives in self.got."""

    def __init__(self, path, handler, version=6, actions=0x1FF, protocol=0):
        super().__init__(daemon=True)
        self.path = path
        self.handler = handler
        self.optneg = struct.pack(">III", version, actions, protocol)
        self.got = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(4)
        self.sock.settimeout(30)

    def run(self):
        conn = accept_one(self.sock)
        if conn is None:
            return
        with conn:
            while True:
                p = recv_packet(conn)
                if p is None:
                    return
                cmd, data = p
                self.got.append((cmd, data))
                if cmd == b"O":
                    conn.sendall(packet(b"O", self.optneg))
                elif cmd in (b"D", b"A"):
                    continue
                elif cmd in (b"Q",):
                    return
                else:
                    replies = self.handler(cmd, data)
                    if replies is None:
                        replies = [packet(b"c")]
                    for r in replies:
                        conn.sendall(r)
                    if any(r[4:5] == b"!" for r in replies):
                        return

    def stop(self):
        self.sock.close()
        self.join(5)

    def received(self):
        """What came in, once the connection is over (QUIT or close)."""
        self.join(10)
        return self.got

    def cmds(self):
        return [c for c, _ in self.received()]


class LeavingMilter(threading.Thread):
    """A milter that stops reading (shutdown SHUT_RD: the client's next
    write fails with EPIPE, its read sees no EOF) at command `at`, answering
    CONTINUE to the commands before it ("O": at once, before its OPTNEG
    reply, so that milter-check's first command meets it).  It keeps the
    socket open until stop()."""

    def __init__(self, path, at, protocol=0):
        super().__init__(daemon=True)
        self.at = at
        self.optneg = struct.pack(">III", 6, 0x1FF, protocol)
        self.noreply = protocol
        self.left = threading.Event()
        self.done = threading.Event()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(4)
        self.sock.settimeout(30)

    def leave(self, conn):
        conn.shutdown(socket.SHUT_RD)
        conn.setblocking(False)
        try:
            while conn.recv(65536):
                pass
        except BlockingIOError:
            pass
        self.left.set()

    def run(self):
        conn = accept_one(self.sock)
        if conn is None:
            return
        with conn:
            while not self.left.is_set():
                p = recv_packet(conn)
                if p is None:
                    return
                cmd = p[0]
                if cmd == b"O":
                    if self.at == b"O":
                        self.leave(conn)
                    conn.sendall(packet(b"O", self.optneg))
                elif cmd == self.at:
                    self.leave(conn)
                elif cmd not in (b"D", b"B"):
                    conn.sendall(packet(b"c"))
            self.done.wait(60)

    def stop(self):
        self.done.set()
        self.sock.close()
        self.join(5)


# ---- Tests -------------------------------------------------------------------

class MilterCheckTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="mfcli")
        cls.procs = []
        cls.ext = "unix:" + cls.start(EXTERNAL, "external.sock")
        cls.rc = "unix:" + cls.start(RCPTCOUNT, "rcptcount.sock")
        cls.msgfile = os.path.join(cls.dir, "message.eml")
        with open(cls.msgfile, "wb") as f:
            f.write(MESSAGE)

    @classmethod
    def start(cls, prog, name):
        path = os.path.join(cls.dir, name)
        log = open(os.path.join(cls.dir, name + ".log"), "wb")
        p = subprocess.Popen([prog, "unix:" + path], stdout=log,
                             stderr=subprocess.STDOUT)
        log.close()
        cls.procs.append(p)
        wait_socket(path, p)
        return path

    @classmethod
    def tearDownClass(cls):
        for p in cls.procs:
            p.terminate()
        for p in cls.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        shutil.rmtree(cls.dir, ignore_errors=True)

    def fake(self, handler, **kw):
        path = os.path.join(self.dir, "fake%d.sock" % id(handler))
        if os.path.exists(path):
            os.unlink(path)
        m = FakeMilter(path, handler, **kw)
        m.start()
        self.addCleanup(m.stop)
        return m, "unix:" + path

    # -- external ------------------------------------------------------------

    def test_external_tags_subject(self):
        doc = run_json(self, [self.ext, self.msgfile])
        self.assertEqual(doc["decision"], "accept")
        self.assertEqual(doc["negotiation"]["version"], 6)
        self.assertEqual(len(doc["transactions"]), 1)
        t = doc["transactions"][0]
        self.assertEqual(t["decision"], "accept")
        self.assertEqual([a["type"] for a in t["actions"]], ["chgheader"])
        self.assertEqual(t["actions"][0]["name"], "Subject")
        self.assertEqual(t["actions"][0]["index"], 1)
        subj = [v for n, v in headers(t["result"]) if n == "Subject"]
        self.assertEqual(len(subj), 1)
        self.assertTrue(subj[0].startswith("=?UTF-8?"), subj)
        # the other fields untouched, in order
        self.assertEqual([n for n, _ in headers(t["result"])],
                         ["From", "To", "Subject", "Received", "Received"])
        self.assertEqual(t["result"]["rcpts"], ["<recipient@example.org>"])
        self.assertEqual(t["result"]["body_bytes"],
                         len(b"line one\r\nline two\r\n"))

    def test_external_authenticated_no_actions(self):
        doc = run_json(self, ["--macro", "mail:{auth_authen}=alice",
                              self.ext, self.msgfile])
        t = doc["transactions"][0]
        self.assertEqual(t["decision"], "accept")
        self.assertEqual(t["actions"], [])
        self.assertIn(("Subject", "Hello\n\tthere"), headers(t["result"]))
        macros = [e for e in t["events"] if e["event"] == "macro"]
        self.assertEqual(macros[0]["for"], "mail")
        self.assertEqual(macros[0]["arg"], "{auth_authen}=alice")

    def test_external_quarantine(self):
        for rcpt in (TRAP_A, TRAP_U, "<spam-trap@XN--ZCK5B2B.Example.COM>"):
            doc = run_json(self, ["--rcpt", "bob@example.net", "--rcpt", rcpt,
                                  self.ext, self.msgfile], expect=4)
            t = doc["transactions"][0]
            self.assertEqual(t["decision"], "quarantine")
            self.assertEqual(doc["decision"], "quarantine")
            q = [a for a in t["actions"] if a["type"] == "quarantine"]
            self.assertEqual(len(q), 1)
            self.assertEqual(q[0]["reason"], "spam trap")
            self.assertEqual(t["result"]["quarantine"], "spam trap")
        rc, out, err = run(["--quiet", "--rcpt", TRAP_A, self.ext,
                            self.msgfile])
        self.assertEqual(rc, 4, err)
        self.assertEqual(out, "")

    def test_not_quarantined_for_other_rcpt(self):
        doc = run_json(self, ["--rcpt", "spam-trap@example.com", self.ext,
                              self.msgfile])
        self.assertEqual(doc["decision"], "accept")

    def test_human_output(self):
        rc, out, err = run([self.ext, self.msgfile])
        self.assertEqual(rc, 0, err)
        self.assertIn("negotiated: version 6, actions 0x", out)
        self.assertIn("macros requested:", out)
        self.assertIn("action chgheader Subject[1]:", out)
        self.assertIn("decision: accept", out)
        self.assertIn("--- resulting message", out)
        self.assertIn("RCPT TO:<recipient@example.org>", out)
        self.assertIn("Subject: =?UTF-8?", out)
        self.assertIn("line two\n--- end of message", out)

    # -- rcptcount -----------------------------------------------------------

    def test_rcptcount_two(self):
        # v as Postfix sends it: an MTA not known gets INSHEADER past the
        # end instead of ADDHEADER (mailfilter.h, HEADER EDITS ON EACH MTA)
        doc = run_json(self, ["--macro", "connect:v=Postfix 3.7.11",
                              "--rcpt", "a@example.org", "--rcpt",
                              "b@example.org", self.rc, self.msgfile])
        t = doc["transactions"][0]
        self.assertEqual(t["actions"], [{"type": "addheader",
                                         "name": "X-Rcpt-Count",
                                         "value": t["actions"][0]["value"]}])
        self.assertEqual(t["actions"][0]["value"].strip(), "2")
        self.assertEqual(headers(t["result"])[-1], ("X-Rcpt-Count", "2"))
        self.assertEqual(t["result"]["rcpts"],
                         ["<a@example.org>", "<b@example.org>"])

    def test_rcptcount_count3(self):
        doc = run_json(self, ["--count", "3", "--rcpt", "a@example.org",
                              "--rcpt", "b@example.org", self.rc,
                              self.msgfile])
        self.assertEqual(len(doc["transactions"]), 3)
        for t in doc["transactions"]:
            self.assertEqual(t["decision"], "accept")
            self.assertEqual(headers(t["result"])[-1], ("X-Rcpt-Count", "2"))
            # reached end of message: no ABORT between transactions
            self.assertNotIn("abort", [e["event"] for e in t["events"]])

    def test_count3_early_accept_aborts(self):
        # external accepts at end of headers when authenticated.  An MTA
        # without NR_EOH gets that accept at end of headers: the next
        # transaction must be preceded by ABORT
        no_nr_eoh = "%x" % (0x001FFFFF & ~0x00040000)
        doc = run_json(self, ["--count", "3", "--steps", no_nr_eoh,
                              "--macro", "mail:auth_authen=alice", self.ext,
                              self.msgfile])
        ts = doc["transactions"]
        self.assertEqual(len(ts), 3)
        for i, t in enumerate(ts):
            evs = [e["event"] for e in t["events"]]
            self.assertNotIn("eom", evs)
            self.assertEqual(evs.count("abort"), 0 if i == 2 else 1, evs)

    def test_count3_eoh_accept_with_nr_eoh(self):
        # offered NR_EOH (the default, as Postfix), the same accept answers
        # end of message: no ABORT between transactions
        doc = run_json(self, ["--count", "3", "--macro",
                              "mail:auth_authen=alice", self.ext,
                              self.msgfile])
        ts = doc["transactions"]
        self.assertEqual(len(ts), 3)
        for t in ts:
            evs = [e["event"] for e in t["events"]]
            self.assertEqual(t["decision"], "accept")
            self.assertIn("eom", evs)
            self.assertNotIn("abort", evs)

    def test_stdin(self):
        for args in ([self.rc, "-"], [self.rc]):
            doc = run_json(self, args, stdin=MESSAGE)
            t = doc["transactions"][0]
            self.assertEqual(headers(t["result"])[-1], ("X-Rcpt-Count", "1"))
            self.assertEqual(headers(t["result"])[0],
                             ("From", "Alice <alice@example.org>"))

    # -- errors ----------------------------------------------------------------

    def test_bad_arguments(self):
        cases = [
            (["--protocol", "9", self.ext], "--protocol '9'"),
            (["--version", "6", self.ext], "--protocol 6"),
            (["--count", "0", self.ext], "--count '0'"),
            (["--macro", "nostage:x=y", self.ext], "nostage"),
            (["--macro", "mail:novalue", self.ext], "mail:novalue"),
            (["--client-addr", "1.2.3.999", self.ext], "1.2.3.999"),
            (["--data-size", "2m", self.ext], "--data-size '2m'"),
            (["--actions", "0x1000", self.ext], "--actions '0x1000'"),
            (["--rcpt-arg", "NOTIFY=NEVER", self.ext], "--rcpt-arg"),
            (["--no-such-option", self.ext], "--no-such-option"),
            (["--helo"], "--helo"),
            ([], "SOCKETSPEC"),
            ([self.ext, "a", "b"], "'b'"),
            (["nonsense:spec", self.msgfile], "nonsense:spec"),
        ]
        for args, needle in cases:
            rc, out, err = run(args)
            self.assertEqual(rc, 64, (args, out, err))
            self.assertIn(needle, err, args)
            self.assertTrue(err.startswith("milter-check: "), err)
            self.assertEqual(err.count("\n"), 1, err)

    def test_help(self):
        rc, out, err = run(["--help"])
        self.assertEqual(rc, 0)
        self.assertIn("usage: milter-check [options] SOCKETSPEC", out)

    def test_no_message_file(self):
        rc, out, err = run([self.ext, os.path.join(self.dir, "nope.eml")])
        self.assertEqual(rc, 66)
        self.assertIn("nope.eml", err)

    def test_no_socket(self):
        path = os.path.join(self.dir, "nobody.sock")
        rc, out, err = run(["unix:" + path, self.msgfile])
        self.assertEqual(rc, 70, err)
        self.assertIn("cannot connect", err)
        self.assertIn(path, err)
        rc, out, err = run(["--json", "unix:" + path, self.msgfile])
        self.assertEqual(rc, 70)
        doc = json.loads(out)
        self.assertEqual(doc["decision"], "error")
        self.assertIn("cannot connect", doc["error"])

    def test_protocol_breaker(self):
        def garbage(cmd, data):
            if cmd == b"C":
                return [packet(b"Z")]
            return None
        m, spec = self.fake(garbage)
        rc, out, err = run(["--timeout", "5", spec, self.msgfile])
        self.assertEqual(rc, 70, (out, err))
        self.assertIn("protocol", err)
        self.assertIn("CONNECT", err)
        self.assertEqual(m.cmds()[:2], [b"O", b"C"])

    def test_modification_before_eom_is_protocol_error(self):
        def early(cmd, data):
            if cmd == b"M":
                return [packet(b"h", cstr("X-Early", "1"))]
            return None
        m, spec = self.fake(early)
        doc = run_json(self, ["--timeout", "5", spec, self.msgfile],
                       expect=70)
        self.assertIn("protocol", doc["error"])

    # -- behaviour checked with fake milters -----------------------------------

    def test_wire_format(self):
        """Header values as Postfix sends them; body with CRLF."""
        for leadspc in (False, True):
            m, spec = self.fake(lambda c, d: None,
                                protocol=0x100000 if leadspc else 0)
            run_json(self, ["--client-addr", "2001:db8::1", "--client-port",
                            "4711", "--client-name", "mx.example",
                            "--helo", "helo.example", "--from",
                            "a@example.org", "--from-arg", "SIZE=100",
                            "--rcpt", "b@example.org", "--rcpt-arg",
                            "NOTIFY=NEVER", "--macro", "eom:i=ABC123",
                            spec, self.msgfile])
            got = m.received()
            conn = [d for c, d in got if c == b"C"][0]
            self.assertEqual(conn, b"mx.example\x00" + b"6" +
                             struct.pack(">H", 4711) + b"2001:db8::1\x00")
            self.assertEqual([d for c, d in got if c == b"H"],
                             [b"helo.example\x00"])
            self.assertEqual([d for c, d in got if c == b"M"],
                             [b"<a@example.org>\x00SIZE=100\x00"])
            self.assertEqual([d for c, d in got if c == b"R"],
                             [b"<b@example.org>\x00NOTIFY=NEVER\x00"])
            hdrs = [d for c, d in got if c == b"L"]
            sp = b" " if leadspc else b""
            self.assertEqual(hdrs[0], b"From\x00" + sp +
                             b"Alice <alice@example.org>\x00")
            self.assertEqual(hdrs[2], b"Subject\x00" + sp +
                             b"Hello\n\tthere\x00")
            self.assertEqual(len(hdrs), 5)
            self.assertEqual(b"".join(d for c, d in got if c == b"B"),
                             b"line one\r\nline two\r\n")
            # macros for end of message just before it
            i = m.cmds().index(b"E")
            self.assertEqual(got[i - 1], (b"D", b"Ei\x00ABC123\x00"))
            self.assertEqual(m.cmds()[-1], b"Q")

    def test_mbox_line_and_no_newline(self):
        m, spec = self.fake(lambda c, d: None)
        doc = run_json(self, [spec, "-"],
                       stdin=b"From a@b Mon Jan  1 00:00:00 2024\r\n"
                             b"Subject: s\r\n\r\nno newline")
        self.assertEqual(headers(doc["transactions"][0]["result"]),
                         [("Subject", "s")])
        self.assertEqual(b"".join(d for c, d in m.received() if c == b"B"),
                         b"no newline\r\n")

    def test_timeout(self):
        m, spec = self.fake(lambda c, d: [] if c == b"C" else None)
        t0 = time.time()
        rc, out, err = run(["--timeout", "1", spec, self.msgfile])
        self.assertEqual(rc, 70, err)
        self.assertIn("timed out", err)
        self.assertLess(time.time() - t0, 20)

    def test_rcpt_rejects(self):
        def rej(cmd, data):
            if cmd == b"R" and data.startswith(b"<bad@"):
                return [packet(b"y", cstr("550 5.1.1 no such user"))]
            if cmd == b"R" and data.startswith(b"<later@"):
                return [packet(b"t")]
            if cmd == b"E":
                return [packet(b"+", cstr("<added@example.org>")),
                        packet(b"a")]
            return None
        m, spec = self.fake(rej)
        doc = run_json(self, ["--rcpt", "bad@example.org", "--rcpt",
                              "good@example.org", "--rcpt",
                              "later@example.org", spec, self.msgfile])
        t = doc["transactions"][0]
        rc = [e for e in t["events"] if e["event"] == "rcpt"]
        self.assertEqual([e["rcpt_rejected"] for e in rc],
                         [True, False, True])
        self.assertEqual(rc[0]["text"], "550 5.1.1 no such user")
        self.assertEqual(t["decision"], "accept")
        self.assertIsNone(t["reply"])
        self.assertEqual(t["result"]["rcpts"],
                         ["<good@example.org>", "<added@example.org>"])

    def test_all_rcpts_rejected(self):
        def rej(cmd, data):
            if cmd == b"R":
                return [packet(b"y", cstr("450 4.2.0 try later"))]
            return None
        m, spec = self.fake(rej)
        doc = run_json(self, ["--rcpt", "x@example.org", spec, self.msgfile],
                       expect=2)
        t = doc["transactions"][0]
        self.assertEqual(t["decision"], "tempfail")
        self.assertEqual(t["reply"], "450 4.2.0 try later")
        self.assertIsNone(t["result"])
        # like an MTA: no DATA, no headers, no end of message
        self.assertFalse({b"T", b"L", b"E"} & set(m.cmds()))

    def test_reject_at_mail_and_count(self):
        n = {"mail": 0}

        def rej(cmd, data):
            if cmd == b"M":
                n["mail"] += 1
                if n["mail"] == 1:
                    return [packet(b"r")]
            if cmd == b"E":
                return [packet(b"d")]
            return None
        m, spec = self.fake(rej)
        doc = run_json(self, ["--count", "2", spec, self.msgfile], expect=3)
        t1, t2 = doc["transactions"]
        self.assertEqual(t1["decision"], "reject")
        self.assertEqual(t1["reply"], "550 5.7.1 Command rejected")
        self.assertEqual(t2["decision"], "discard")
        cmds = m.cmds()
        # ABORT after the early stop, before the second MAIL
        first_m = cmds.index(b"M")
        self.assertEqual(cmds[first_m + 1], b"A")
        self.assertEqual(cmds[first_m + 2], b"M")

    def test_tempfail_and_replycode_exit(self):
        for reply, code, name in ((packet(b"t"), 2, "tempfail"),
                                  (packet(b"y", cstr("554 5.7.0 nope")), 1,
                                   "reject"),
                                  (packet(b"y", cstr("421 4.3.0 busy")), 2,
                                   "tempfail")):
            m, spec = self.fake(lambda c, d, r=reply:
                                [r] if c == b"N" else None)
            doc = run_json(self, [spec, self.msgfile], expect=code)
            self.assertEqual(doc["decision"], name)
            # stopped at end of headers: no body, no end of message
            self.assertNotIn(b"B", m.cmds())
            self.assertNotIn(b"E", m.cmds())

    def test_actions_applied(self):
        def acts(cmd, data):
            if cmd != b"E":
                return None
            return [
                packet(b"m", struct.pack(">I", 2) + cstr("Received", "X")),
                packet(b"m", struct.pack(">I", 1) + cstr("subject", "")),
                packet(b"i", struct.pack(">I", 0) + cstr("X-First", "1")),
                packet(b"i", struct.pack(">I", 2) + cstr("X-Third", "3")),
                packet(b"h", cstr("X-Last", "z")),
                packet(b"m", struct.pack(">I", 1) + cstr("X-New", "n")),
                packet(b"-", cstr("<b@example.org>")),
                packet(b"2", cstr("<c@example.org>", "NOTIFY=NEVER")),
                packet(b"e", cstr("<new@example.org>", "SIZE=1")),
                packet(b"b", b"new body\r\n"),
                packet(b"q", cstr("held")),
                packet(b"c"),
            ]
        m, spec = self.fake(acts)
        doc = run_json(self, ["--rcpt", "a@example.org", "--rcpt",
                              "b@example.org", spec, self.msgfile], expect=4)
        t = doc["transactions"][0]
        self.assertEqual(t["decision"], "quarantine")
        self.assertEqual(len(t["actions"]), 11)
        r = t["result"]
        self.assertEqual(headers(r), [
            ("X-First", "1"),
            ("From", "Alice <alice@example.org>"),
            ("X-Third", "3"),
            ("To", "Bob <bob@example.net>"),
            ("Received", "from a by b; Mon, 1 Jan 2024 00:00:00 +0000"),
            ("Received", "X"),
            ("X-Last", "z"),
            ("X-New", "n"),
        ])
        self.assertEqual(r["rcpts"], ["<a@example.org>", "<c@example.org>"])
        self.assertEqual(r["from"], "<new@example.org>")
        self.assertEqual(r["from_args"], "SIZE=1")
        self.assertEqual(r["body_bytes"], len(b"new body\r\n"))
        self.assertEqual(r["quarantine"], "held")

    def test_json_escaping(self):
        m, spec = self.fake(lambda c, d: None)
        msg = ("Subject: q\" b\\ c\x01 t\t ü ⚠️\n\nx\n").encode()
        doc = run_json(self, [spec, "-"], stdin=msg)
        self.assertEqual(headers(doc["transactions"][0]["result"]),
                         [("Subject", "q\" b\\ c\x01 t\t ü ⚠️")])
        # invalid UTF-8 is replaced, the output stays JSON
        m, spec = self.fake(lambda c, d: None)
        doc = run_json(self, [spec, "-"], stdin=b"Subject: \xff\xfe\n\nx\n")
        self.assertEqual(headers(doc["transactions"][0]["result"]),
                         [("Subject", "\ufffd\ufffd")])

    def test_version_and_offer(self):
        m, spec = self.fake(lambda c, d: None, version=2, actions=0x1,
                            protocol=0)
        doc = run_json(self, ["--protocol", "2", "--data-size", "64k", spec,
                              self.msgfile])
        opt = m.received()[0][1]
        ver, act, proto = struct.unpack(">III", opt)
        self.assertEqual((ver, act, proto), (2, 0x3F, 0x3F))
        self.assertEqual(doc["negotiation"]["version"], 2)
        self.assertEqual(doc["negotiation"]["data_size"], 65535)
        # v2: no DATA command
        self.assertNotIn(b"T", m.cmds())
        m, spec = self.fake(lambda c, d: None, actions=0x21)
        run_json(self, ["--actions", "0x21", "--steps", "0x10", "--data-size",
                        "256k", spec, self.msgfile])
        ver, act, proto = struct.unpack(">III", m.received()[0][1])
        self.assertEqual((ver, act, proto), (6, 0x21, 0x10 | 0x10000000))

    def test_not_sent_steps(self):
        # NOHDRS | NOBODY | NR_RCPT
        m, spec = self.fake(lambda c, d: None, protocol=0x20 | 0x10 | 0x8000)
        doc = run_json(self, [spec, self.msgfile])
        evs = {e["event"]: e["status"]
               for e in doc["transactions"][0]["events"]}
        self.assertEqual(evs["header"], "not_sent")
        self.assertEqual(evs["rcpt"], "noreply")
        self.assertNotIn(b"L", m.cmds())
        self.assertNotIn(b"B", m.cmds())

    # -- a milter that has gone: an error, never SIGPIPE ----------------------

    def leaving(self, at, protocol=0):
        path = os.path.join(self.dir, "leaving.sock")
        if os.path.exists(path):
            os.unlink(path)
        m = LeavingMilter(path, at, protocol)
        m.start()
        self.addCleanup(m.stop)
        return m, "unix:" + path

    def test_write_to_gone_milter(self):
        # subprocess restores SIGPIPE's default disposition in the child
        # (restore_signals): a SIGPIPE would kill milter-check (-13).
        m, spec = self.leaving(b"O")
        rc, out, err = run(["--timeout", "10", spec, self.msgfile])
        self.assertEqual(rc, 70, (out, err))
        self.assertIn("closed the connection", err)
        self.assertIn("write", err)
        self.assertTrue(m.left.is_set())

    def test_body_to_gone_milter(self):
        # 8 MiB of body without replies (NR_BODY): most of it is left to
        # libuv, whose write in the loop meets the milter that stopped
        # reading at the first chunk.
        big = os.path.join(self.dir, "big.eml")
        with open(big, "wb") as f:
            f.write(b"Subject: big\n\n" + (b"x" * 1000 + b"\n") * 8192)
        m, spec = self.leaving(b"B", protocol=0x80000)
        rc, out, err = run(["--timeout", "10", spec, big])
        self.assertEqual(rc, 70, (out, err))
        self.assertIn("closed the connection", err)
        self.assertIn("write", err)
        self.assertTrue(m.left.is_set())


if __name__ == "__main__":
    for prog in (CHECK, EXTERNAL, RCPTCOUNT):
        if not os.access(prog, os.X_OK):
            print("SKIP: %s not built" % prog)
            sys.exit(77)
    unittest.main(verbosity=2)
