#!/usr/bin/env python3
"""Beyond one process: a private Postfix -> HAProxy (TCP mode, the recipe
examples/haproxy/haproxy.cfg with this test's ports and a 200 ms check
interval) -> two filter processes (tests/integration/mfscen, each adding
"X-Filtered-By: f1" or "f2"), plus a third backend that accepts TCP but
does not speak the milter protocol.

- The milter health check (an OPTNEG sent, an 'O' packet expected) marks
  the non-milter backend DOWN (layer 7) and keeps both filters UP; the
  filters log the checks' connections at debug level only (no line at
  their default level).
- Four SMTP clients send a stream of messages, one SMTP session each (one
  milter connection each).  One message is held inside f1 (a gate that
  never opens), so that f1 has a message in flight for sure; then f1 is
  killed (SIGKILL) in the middle of the stream.
- Every message gets an answer: 250, delivered with exactly one
  X-Filtered-By header, or 451 4.7.1 -- Postfix's milter_default_action
  (tempfail here), with Postfix's own milter-reject line for its sender --
  and only sessions that were on f1 when it died get the latter (the held
  one among them).
- HAProxy logs f1 DOWN; every message whose session starts after that is
  accepted, delivered and filtered by f2.  The rates before and after are
  printed (not asserted).
- The survivor stays up, logs no warning or error, and exits 0 on SIGTERM.

A second case runs two filter processes on ONE port (MAILFILTER_REUSEPORT=1,
SO_REUSEPORT) straight behind Postfix, stops one with SIGTERM, and shows the
other serving every later message.
"""
import os
import re
import shutil
import signal
import socket
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pftest  # noqa: E402
from test_mailfilter_postfix import mfscen, scen_message  # noqa: E402

D = pftest.Postfix.domain
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
RECIPE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                      "examples", "haproxy", "haproxy.cfg")
MAIN = {"milter_default_action": "tempfail", "milter_command_timeout": "10s",
        "milter_content_timeout": "20s", "milter_connect_timeout": "5s"}
SENDERS = 4


def haproxy_cfg(front, servers):
    """The recipe with this test's addresses: the frontend on `front`, the
    backend servers [(name, port)] on 127.0.0.1, checks every 200 ms, the
    log on stdout.  Everything else (timeouts, redispatch, the milter
    check) as documented."""
    with open(RECIPE) as f:
        cfg = f.read()
    cfg = cfg.replace("log /dev/log local0", "log stdout format raw local0 info")
    cfg = re.sub(r"(?m)^(\s*bind) \S+", r"\1 127.0.0.1:%d" % front, cfg)
    cfg = re.sub(r"\binter \S+", "inter 200ms", cfg)
    cfg = re.sub(r"(?m)^\s*server .*\n", "", cfg)
    for name, port in servers:
        cfg += "    server %s 127.0.0.1:%d\n" % (name, port)
    path = os.path.join(pftest.session_dir(), "haproxy-%d.cfg" % front)
    with open(path, "w") as f:
        f.write(cfg)
    return path


class NotAMilter:
    """A TCP listener that answers every connection with an SMTP-like
    banner and closes it: alive to a bare connect check, not to a milter
    check."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with c:
                try:
                    c.sendall(b"220 not a milter\r\n")
                except OSError:
                    pass

    def close(self):
        self.stopping = True
        self.sock.close()


class Stream:
    """SENDERS threads sending messages on their own SMTP sessions until
    stopped; .results: [(start, end, sender, rcpt, SendResult)]."""

    def __init__(self, pf):
        self.pf = pf
        self.results = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(t,)) for t in range(SENDERS)]
        self.errors = []

    def _run(self, t):
        i = 0
        try:
            while not self.stop.is_set():
                sender = "s%d-%d@%s" % (t, i, D)
                rcpt = "r%d-%d@%s" % (t, i, D)
                start = time.monotonic()
                r = self.pf.send(sender, [rcpt], scen_message())
                with self.lock:
                    self.results.append((start, time.monotonic(), sender, rcpt, r))
                i += 1
        except Exception as e:  # noqa: BLE001 -- reported by the test
            self.errors.append(repr(e))

    def start(self):
        for th in self.threads:
            th.start()

    def count(self, pred=lambda res: True):
        with self.lock:
            return sum(1 for res in self.results if pred(res))

    def wait_count(self, n, pred=lambda res: True, what="messages"):
        pftest.wait_for(lambda: self.count(pred) >= n or self.errors, 60, what)
        self.assert_no_errors()

    def assert_no_errors(self):
        if self.errors:
            raise AssertionError("sender thread failed: %s" % self.errors)

    def finish(self):
        self.stop.set()
        for th in self.threads:
            th.join(120)
        self.assert_no_errors()


def rate(results, t0, t1):
    n = sum(1 for s, e, *_ in results if s >= t0 and e <= t1)
    return n, n / (t1 - t0) if t1 > t0 else 0.0


class HaproxyFailover(unittest.TestCase):
    def setUp(self):
        if not os.access(HAPROXY, os.X_OK):
            self.skipTest("haproxy is not installed (Debian package haproxy)")

    def test_one_filter_dies_mid_stream(self):
        p1, p2, front = pftest.free_port(), pftest.free_port(), pftest.free_port()
        sess = pftest.session_dir()
        gate_open = os.path.join(sess, "gate-open-%d" % p2)
        open(gate_open, "w").close()
        gate_shut = os.path.join(sess, "gate-never-%d" % p1)  # never created
        junk = NotAMilter()
        self.addCleanup(junk.close)
        cfg = haproxy_cfg(front, [("f1", p1), ("f2", p2), ("junk", junk.port)])
        with mfscen(p1, "--tag", "f1", "--gate", gate_shut) as f1, \
                mfscen(p2, "--tag", "f2", "--gate", gate_open) as f2, \
                pftest.Milter([HAPROXY, "-f", cfg, "-db"], ready_port=front) as hap, \
                pftest.Postfix(milter="inet:127.0.0.1:%d" % front, main=MAIN) as pf:
            # The milter check: the non-milter backend goes DOWN at layer 7,
            # the filters stay UP.
            hap.wait_log(r"Server mailfilters/junk is DOWN, reason: Layer7")
            time.sleep(0.5)  # a few more checks of f1 and f2
            self.assertNotRegex(hap.log(), r"Server mailfilters/f[12] is DOWN")

            stream = Stream(pf)
            t0 = time.monotonic()
            stream.start()
            stream.wait_count(40, what="40 messages before the stop")

            # One message held inside f1 (its gate never opens).  Sent
            # until f1 has one: the ones on f2 pass.
            held = []

            def hold():
                n = 0
                while not re.search(r"gate wait", f1.log()) and n < 50:
                    rcpt = "scen-gate-held%d@%s" % (n, D)
                    sender = "held%d@%s" % (n, D)
                    held.append((sender, rcpt, pf.send(sender, [rcpt], scen_message())))
                    n += 1
            holder = threading.Thread(target=hold)
            holder.start()
            f1.wait_log(r"mfscen: gate wait <(scen-gate-held\d+@[^>]+)>", 30)
            held_rcpt = re.search(r"gate wait <([^>]+)>", f1.log()).group(1)

            t_kill = time.monotonic()
            before = stream.count()
            f1.stop(signal.SIGKILL)
            hap.wait_log(r"Server mailfilters/f1 is DOWN", 10)
            t_down = time.monotonic()
            holder.join(60)
            self.assertFalse(holder.is_alive())
            print("\nf1 killed after %d messages; HAProxy marked it DOWN %.0f ms later"
                  % (before, (t_down - t_kill) * 1000), file=sys.stderr)

            # Mail keeps flowing through f2.
            stream.wait_count(150, lambda res: res[0] > t_down,
                              "150 messages started after f1 went DOWN")
            t_end = time.monotonic()
            stream.finish()
            results = list(stream.results)

            # Every message got an answer.
            ok = [res for res in results if res[4].ok]
            failed = [res for res in results if not res[4].ok]
            for res in failed:
                r = res[4]
                self.assertEqual(r.code, 451, res)
                self.assertIn("4.7.1", r.text, res)
                self.assertLess(res[0], t_down, "failed after f1 was DOWN: %r" % (res,))
                self.assertGreater(res[1], t_kill, "failed before f1 was killed: %r" % (res,))
            # The held message: Postfix's milter_default_action.
            hr = [r for s, rc, r in held if rc == held_rcpt]
            self.assertEqual(len(hr), 1, held)
            self.assertFalse(hr[0].ok, hr)
            self.assertEqual(hr[0].code, 451, hr)
            self.assertIn("4.7.1", hr[0].text, hr)
            # Postfix says why, for each of them (one reject line per
            # sender: its milter failed and the default action applied).
            pf.wait_log(r"warning: milter inet:127\.0\.0\.1:%d: " % front)
            rejects = pf.log_lines(r"milter-reject: .*4\.7\.1 Service unavailable")
            tempfailed = [res[2] for res in failed] + [s for s, rc, r in held if not r.ok]
            # A session whose smtpd met the dead filter before MAIL (at
            # CONNECT or EHLO) also gets a line for that command, naming no
            # sender yet; the sender lines are one per failed message.
            at_connect = [l for l in rejects if "from=<" not in l]
            rejects = [l for l in rejects if l not in at_connect]
            # ... from an smtpd that also rejected a failed message's sender.
            pids = {m.group(1) for m in (re.search(r"smtpd\[(\d+)\]", l) for l in rejects) if m}
            for l in at_connect:
                m = re.search(r"smtpd\[(\d+)\]", l)
                self.assertTrue(m and m.group(1) in pids, "%s\n%s" % (l, "\n".join(rejects)))
            for sender in tempfailed:
                self.assertEqual(len([l for l in rejects if "from=<%s>" % sender in l]), 1,
                                 "%s\n%s" % (sender, "\n".join(rejects)))
            self.assertEqual(len(rejects), len(tempfailed), "\n".join(rejects))
            # The other held attempts went through f2.
            for s, rc, r in held:
                if rc != held_rcpt:
                    self.assertTrue(r.ok, r)
                    ok.append((0, 0, s, rc, r))

            # Every accepted message is delivered, filtered exactly once;
            # after the DOWN, by f2 only; before the kill, by both.
            by = {}
            for start, end, sender, rcpt, r in ok:
                d = pf.wait_delivered(rcpt)
                self.assertEqual(len(d), 1, rcpt)
                tags = d[0].header("X-Filtered-By")
                self.assertEqual(len(tags), 1, d[0].raw)
                by[rcpt] = (start, tags[0])
            after = [tag for start, tag in by.values() if start > t_down]
            self.assertGreaterEqual(len(after), 150)
            self.assertEqual(set(after), {"f2"})
            self.assertEqual({tag for start, tag in by.values() if 0 < start < t_kill},
                             {"f1", "f2"})
            self.assertEqual(pf.deliveries(held_rcpt), [])

            n_before, r_before = rate(results, t0, t_kill)
            n_after, r_after = rate(results, t_down, t_end)
            print("messages: %d (%d delivered and filtered, %d answered 451 4.7.1 by "
                  "Postfix's milter_default_action, all sent before the DOWN)\n"
                  "rate with two filters: %d messages in %.1f s = %.0f/s; "
                  "after the DOWN, f2 alone: %d in %.1f s = %.0f/s"
                  % (len(results) + len(held), len(ok), len(tempfailed), n_before,
                     t_kill - t0, r_before, n_after, t_end - t_down, r_after),
                  file=sys.stderr)

            # The survivor is fine: no warning or error (the checks'
            # connections are logged at debug level only).
            self.assertTrue(f2.alive(), f2.log())
            self.assertNotRegex(f2.log(), r"(warning|error):", f2.log())
        self.assertEqual(f2.returncode, 0, f2.log())


class ReusePort(unittest.TestCase):
    def test_two_processes_one_port(self):
        port = pftest.free_port()
        env = {"MAILFILTER_REUSEPORT": "1"}
        argv = [pftest.build_artifact("tests", "integration", "mfscen"),
                "inet:%d@127.0.0.1" % port]
        with pftest.Milter(argv + ["--tag", "a"], ready_log=r"listening on", env=env,
                           wrap=True) as a, \
                pftest.Milter(argv + ["--tag", "b"], ready_log=r"listening on", env=env,
                              wrap=True) as b, \
                pftest.Postfix(milter="inet:127.0.0.1:%d" % port, main=MAIN) as pf:
            # Without the variable a third one cannot take the port.
            with pftest.Milter(argv, env={"MAILFILTER_REUSEPORT": "0"}) as c:
                pftest.wait_for(lambda: not c.alive(), 10, "the third filter to exit")
                self.assertRegex(c.log(), r"bind: Address already in use")
            self.assertEqual(c.returncode, 1)

            tags = set()
            for i in range(40):
                rcpt = "rp%d@%s" % (i, D)
                r = pf.send("s@" + D, [rcpt], scen_message())
                self.assertTrue(r.ok, r)
                tags.update(pf.wait_delivered(rcpt)[0].header("X-Filtered-By"))
            self.assertEqual(tags, {"a", "b"})  # odds of one alone: 2^-39

            a.stop()  # SIGTERM: a drains, closes its listener, exits 0
            self.assertEqual(a.returncode, 0, a.log())
            for i in range(20):
                rcpt = "rq%d@%s" % (i, D)
                r = pf.send("s@" + D, [rcpt], scen_message())
                self.assertTrue(r.ok, r)
                self.assertEqual(pf.wait_delivered(rcpt)[0].header("X-Filtered-By"), ["b"])
            self.assertNotRegex(b.log(), r"(warning|error):")
        self.assertEqual(b.returncode, 0, b.log())


if __name__ == "__main__":
    pftest.main()
