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


def big_body():
    """1 MiB in lines of 998 characters."""
    big = (b"0123456789abcdefghijklmnopqrstuvwxyz" * 29127)[:1 << 20]
    return b"\n".join(big[i:i + 998] for i in range(0, len(big), 998)) + b"\n"


class RcptCount(unittest.TestCase):
    # One connection: (local parts, subject, body) per transaction; None =
    # MAIL then RSET.  Every recipient must get X-Rcpt-Count: len(parts).
    SESSION = [("a b c", "three", "x\n"), ("d", "single", "y\n"), None,
               ("e f", "big", big_body())]

    def test_rcptcount(self):
        port = pftest.free_port()
        spool = tempfile.mkdtemp(prefix="mf-spool-")
        with milter("rcptcount", port, env={"TMPDIR": spool}) as m, \
                smtest.Sendmail(milter="inet:%d@127.0.0.1" % port) as sm:
            pid = m.proc.pid
            self.assertTrue(sm.send(SENDER, ["one@" + D], pftest.message()).ok)
            sm.wait_delivered("one@" + D)  # warmed up: the first connection is over
            fds0 = fds(pid)
            sent = {}
            with sm.client() as c:
                for t in self.SESSION:
                    if t is None:
                        self.assertEqual((c.mail(SENDER)[0], c.rset()[0]), (250, 250))
                        continue
                    parts, subject, body = t
                    msg = pftest.message(subject=subject, body=body)
                    rcpts = ["%s@%s" % (p, D) for p in parts.split()]
                    self.assertTrue(c.send(SENDER, rcpts, msg).ok, subject)
                    sent.update((r, (msg, len(rcpts))) for r in rcpts)
            for rcpt, (msg, n) in sent.items():
                d = sm.wait_delivered(rcpt)[0]
                # appended after the original fields, all else byte for byte
                eoh = msg.index(b"\n\n")
                want = msg[:eoh] + b"\nX-Rcpt-Count: %d" % n + msg[eoh:]
                self.assertEqual(d.raw[-len(want):], want, rcpt)
                self.assertEqual(d.header("X-Rcpt-Count"), [str(n)], rcpt)
            sm.wait_log(r"stat=Sent", count=1 + len(sent))
            self.assertEqual(sm.log_lines(r"Milter \(mf\).*(error|timeout)"), [])
            pftest.wait_for(lambda: fds(pid) <= fds0, 5, "milter fds back to %d" % fds0)
            self.assertEqual(os.listdir(spool), [])
        self.assertEqual(m.returncode, 0, m.log())
        os.rmdir(spool)


if __name__ == "__main__":
    smtest.main()
