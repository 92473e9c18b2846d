#!/usr/bin/env python3
"""The transaction layer behind a real Sendmail (smtest.py), through
mfscen.c, at end of message -- the envelope and body half of
test_mailfilter_postfix.py's Changes, and its PROGRESS test:
- add a recipient (with NOTIFY=NEVER), delete one, change the sender;
- replace the body with 1 KiB, 100 KiB and 1 MiB, delivered byte for byte;
- a decision slower than the X line's read timeout (T=R:2s) survives thanks
  to PROGRESS and fails (451, F=T) without it.  Sendmail's overall
  end-of-message timeout (T=E:) is not extended by PROGRESS: it is checked
  before each read after end of message, so a PROGRESS that comes after E
  ends the filter ("EOM ACK/NAK timeout", 451) -- shown here too.
"""
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pftest  # noqa: E402
import smtest  # noqa: E402
from test_mailfilter_postfix import mfscen, scen_message  # noqa: E402

D = smtest.Sendmail.domain
SENDER = "sender@" + D


def replaced_body(n):
    """What mfscen's body-N scenario sends, as the prog mailer writes it."""
    want = bytes(13 if i % 78 == 76 else 10 if i % 78 == 77 else 97 + i % 26
                 for i in range(n - 2)) + b"\r\n"
    return want.replace(b"\r\n", b"\n")


class Envelope(unittest.TestCase):
    def test_envelope_and_body(self):
        port = pftest.free_port()
        with mfscen(port, "--stage", "eom") as m, \
                smtest.Sendmail(milter="inet:%d@127.0.0.1" % port) as sm:
            r = sm.send(SENDER, ["scen-rcpt-add@" + D], scen_message())
            self.assertTrue(r.ok, r)
            self.assertEqual(len(sm.wait_delivered("scen-rcpt-add@" + D)), 1)
            added = sm.wait_delivered("added@" + D)[0]
            self.assertEqual(added.envelope["sender"], SENDER)
            sm.wait_log(r"Milter \(mf\) add: rcpt: <added@%s>" % D)

            r = sm.send(SENDER, ["scen-rcpt-del@" + D, "gone@" + D, "kept@" + D],
                        scen_message())
            self.assertTrue(r.ok, r)
            sm.wait_delivered("kept@" + D)
            sm.wait_delivered("scen-rcpt-del@" + D)
            sm.wait_log(r"Milter \(mf\) delete: rcpt <gone@%s>" % D)
            self.assertEqual(sm.deliveries("gone@" + D), [])

            r = sm.send(SENDER, ["scen-from-change@" + D], scen_message())
            self.assertTrue(r.ok, r)
            d = sm.wait_delivered("scen-from-change@" + D)[0]
            self.assertEqual(d.envelope["sender"], "bounces@" + D)

            for name, n in (("1k", 1024), ("100k", 100 * 1024), ("1m", 1024 * 1024)):
                rcpt = "scen-body-%s@%s" % (name, D)
                r = sm.send(SENDER, [rcpt], scen_message())
                self.assertTrue(r.ok, r)
                d = sm.wait_delivered(rcpt)[0]
                want = replaced_body(n)
                self.assertEqual(len(d.body), len(want), name)
                self.assertEqual(d.body, want, name)
            self.assertEqual(sm.log_lines(r"Milter \(mf\).*(error|timeout)"), [])
        self.assertEqual(m.returncode, 0, m.log())


class Progress(unittest.TestCase):
    def run_slow(self, progress_ms, timeouts):
        port = pftest.free_port()
        with mfscen(port, "--progress-ms", str(progress_ms)) as m, \
                smtest.Sendmail(milter="inet:%d@127.0.0.1" % port, timeouts=timeouts) as sm:
            r = sm.send(SENDER, ["scen-slow3500@" + D], scen_message())
            if r.ok:
                sm.wait_delivered("scen-slow3500@" + D)
            log = sm.log()
        self.assertEqual(m.returncode, 0, m.log())
        return r, log

    def test_progress_resets_the_read_timeout(self):
        r, log = self.run_slow(500, "C:5s;S:5s;R:2s;E:30s")
        self.assertTrue(r.ok, r)
        # Without PROGRESS, the same decision times out: Sendmail tempfails.
        r, log = self.run_slow(0, "C:5s;S:5s;R:2s;E:30s")
        self.assertEqual((r.ok, r.stage, r.code), (False, "data", 451), r)
        self.assertRegex(log, r"Milter \(mf\): timeout before data read, where=eom")

    def test_progress_does_not_extend_the_eom_timeout(self):
        r, log = self.run_slow(500, "C:5s;S:5s;R:10s;E:2s")
        self.assertEqual((r.ok, r.stage, r.code), (False, "data", 451), r)
        self.assertRegex(log, r"milter_data\(mf\): EOM ACK/NAK timeout")


if __name__ == "__main__":
    smtest.main()
