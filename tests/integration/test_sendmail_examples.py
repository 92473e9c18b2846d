#!/usr/bin/env python3
"""examples/logip and examples/rcptcount behind a real Sendmail (smtest.py,
F=T) -- the Sendmail twins of test_logip.py and test_examples.py's
RcptCount (examples/external: test_sendmail_external.py).

logip (accept at connect): a message (folded header, empty value, leading
spaces, dot-stuffed lines) arrives byte for byte under Sendmail's
Received; one log line per SMTP connection, whatever the number of
messages on it.
rcptcount (decision at end of message, body spooled past 200 KiB):
"X-Rcpt-Count: N" appended after the original fields for 1 and 3
recipients, two messages on one connection and after RSET, a 1 MiB body
byte for byte; the milter holds no more fds than before and left no file
in its spool directory.
"""
import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pftest  # noqa: E402
import smtest  # noqa: E402
from test_examples import fds, milter  # noqa: E402

D = smtest.Sendmail.domain
SENDER = "sender@" + D
RCPT = "rcpt@" + D


class Logip(unittest.TestCase):
    def test_logip_sees_client(self):
        port = pftest.free_port()
        with milter("logip", port) as m, \
                smtest.Sendmail(milter="inet:%d@127.0.0.1" % port) as sm:
            msg = pftest.read_data("plain.eml")
            r = sm.send(SENDER, [RCPT], msg)
            self.assertTrue(r.ok, r)
            d = sm.wait_delivered(RCPT)[0]
            self.assertEqual(d.headers[0][0], "Received")
            self.assertEqual(d.raw[-len(msg):], msg)
            self.assertEqual(d.raw[:-len(msg)].count(b"\n"), 3, d.raw[:300])  # Received only
            m.wait_log(r"logip: [^ ]+: client 127\.0\.0\.1 \[[^\]]*\]")
            self.assertEqual(m.log().count(": client "), 1, m.log())
            with sm.client(helo="second.test.example") as c:
                for i in range(2):
                    r = c.send(SENDER, [RCPT], pftest.message(subject="again %d" % i))
                    self.assertTrue(r.ok, r)
            self.assertEqual(len(sm.wait_delivered(RCPT, 3)), 3)
            m.wait_log(r"(?s)client 127\.0\.0\.1.*client 127\.0\.0\.1")
            self.assertEqual(m.log().count(": client "), 2, m.log())
            self.assertEqual(sm.log_lines(r"Milter \(mf\).*(error|timeout)"), [])
        self.assertEqual(m.returncode, 0, m.log())
        self.assertNotRegex(m.log(), r"(?m): (error|warning): ")


class RcptCount(unittest.TestCase):
    def test_rcptcount(self):
        port = pftest.free_port()
        spool = tempfile.mkdtemp(prefix="mf-spool-")
        with milter("rcptcount", port, env={"TMPDIR": spool}) as m, \
                smtest.Sendmail(milter="inet:%d@127.0.0.1" % port) as sm:
            pid = m.proc.pid
            with sm.client() as c:  # warm up: first connection
                r = c.send(SENDER, ["one@" + D], pftest.message(subject="one"))
                self.assertTrue(r.ok, r)
            sm.wait_delivered("one@" + D)
            fds0 = fds(pid)
            with sm.client() as c:
                r = c.send(SENDER, ["a@" + D, "b@" + D, "c@" + D],
                           pftest.message(subject="three"))
                self.assertTrue(r.ok, r)
                r = c.send(SENDER, ["d@" + D], pftest.message(subject="single"))
                self.assertTrue(r.ok, r)
                self.assertEqual(c.mail(SENDER)[0], 250)
                self.assertEqual(c.rset()[0], 250)
                big = (b"0123456789abcdefghijklmnopqrstuvwxyz" * 29127)[:1 << 20]
                big = b"\n".join(big[i:i + 998] for i in range(0, len(big), 998)) + b"\n"
                msg = pftest.message(subject="big", body=big)
                r = c.send(SENDER, ["e@" + D, "f@" + D], msg)
                self.assertTrue(r.ok, r)
            for rc, n in (("a", 3), ("b", 3), ("c", 3), ("d", 1), ("e", 2), ("f", 2)):
                d = sm.wait_delivered(rc + "@" + D)[0]
                self.assertEqual(d.header("X-Rcpt-Count"), [str(n)], rc)
                self.assertEqual(d.headers[-1], ("X-Rcpt-Count", " %d" % n), rc)
            e = sm.wait_delivered("e@" + D)[0]
            self.assertEqual(e.body, big)
            eoh = msg.index(b"\n\n")
            want = msg[:eoh] + b"\nX-Rcpt-Count: 2" + msg[eoh:]
            self.assertEqual(e.raw[-len(want):], want)
            sm.wait_log(r"stat=Sent", count=7)
            self.assertEqual(sm.log_lines(r"Milter \(mf\).*(error|timeout)"), [])
            pftest.wait_for(lambda: fds(pid) <= fds0, 5, "milter fds back to %d" % fds0)
            self.assertEqual(os.listdir(spool), [])
        self.assertEqual(m.returncode, 0, m.log())
        os.rmdir(spool)


if __name__ == "__main__":
    smtest.main()
