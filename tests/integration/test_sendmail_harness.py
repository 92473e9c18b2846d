#!/usr/bin/env python3
"""Self-test of the smtest harness (a private Sendmail), independent of our
library: Sendmail alone delivers byte for byte, refuses what must not
leave, carries two transactions and RSET on one connection; with a milter
that is down it answers as its X line's F= says (T: 451 at MAIL, R: 554
in the banner, none: accepts without the filter).  If this fails, the Sendmail tests of our
milters cannot be trusted either."""
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pftest  # noqa: E402
import smtest  # noqa: E402

D = smtest.Sendmail.domain
SENDER = "sender@" + D


class SendmailAlone(unittest.TestCase):
    def test_byte_for_byte_relay_denied_session(self):
        body = ("Grüße, 8-bit body.\n.leading dot\nFrom the start of a line\n"
                "trailing space \n\n\nlast line\n")
        msg = pftest.message(subject="exact", body=body,
                             headers=[("X-Folded", "one\n two\n\tthree"),
                                      ("X-Empty", "")])
        with smtest.Sendmail() as sm:
            with sm.client() as c:
                self.assertEqual(c.banner[0], 220)
                self.assertIn("Sendmail", c.banner[1])
                self.assertFalse(c.has_ext("smtputf8"))  # Debian's build: no EAI
                r = c.send(SENDER, ["one@" + D, "x@elsewhere.example"], msg)
                self.assertTrue(r.ok, r)
                self.assertEqual(r.refused["x@elsewhere.example"][0], 550)
                # second transaction on the same connection, then RSET
                self.assertTrue(c.send(SENDER, ["two@" + D], pftest.message(subject="2nd")).ok)
                self.assertEqual(c.mail(SENDER)[0], 250)
                self.assertEqual(c.rset()[0], 250)
                self.assertTrue(c.send(SENDER, ["Three@" + D],
                                       pftest.message(subject="3rd")).ok)
            d = sm.wait_delivered("one@" + D)[0]
            # Sendmail puts exactly one Received on top; the rest is as sent.
            self.assertEqual(d.headers[0][0], "Received")
            self.assertRegex(d.headers[0][1], r"by %s .* with ESMTP id \S+\n\tfor <one@%s>;"
                             % (smtest.HOSTNAME.replace(".", r"\."), D))
            received, rest = d.raw.split(b"\n", 1)
            while rest[:1] == b"\t":
                rest = rest.split(b"\n", 1)[1]
            self.assertEqual(rest, msg)
            self.assertEqual(d.envelope["sender"], SENDER)
            self.assertEqual(d.envelope["recipient"], "one@" + D)
            self.assertEqual(d.envelope["queue_id"], r.text.split()[1])
            self.assertEqual(sm.wait_delivered("two@" + D)[0].header("Subject"), ["2nd"])
            self.assertEqual(sm.wait_delivered("three@" + D)[0].header("Subject"), ["3rd"])
            sm.wait_log(r"stat=Sent", count=3)
            self.assertEqual(sm.all_deliveries().keys(),
                             {"one@" + D, "two@" + D, "three@" + D})
            # the queue file goes once the mailer has exited (after the .eml)
            pftest.wait_for(lambda: sm.queue() == [], 10, "an empty queue")


class MilterDown(unittest.TestCase):
    """Nothing listens on the milter's port: F= decides."""

    def run_down(self, flags):
        port = pftest.free_port()
        with smtest.Sendmail(milter="inet:%d@127.0.0.1" % port, flags=flags) as sm:
            r = sm.send(SENDER, ["down@" + D], pftest.message(subject="down " + flags))
            sm.wait_log(r"Milter \(mf\): (to error state|error connecting)")
            return sm, r

    def test_tempfail(self):
        sm, r = self.run_down("T")
        # Sendmail answers at MAIL, not at connect or EHLO.
        self.assertEqual((r.ok, r.stage, r.code), (False, "mail", 451), r)
        self.assertIn("4.3.2", r.text)

    def test_reject(self):
        sm, r = self.run_down("R")
        # Unlike F=T, Sendmail refuses the whole session in its banner.
        self.assertEqual((r.ok, r.stage, r.code), (False, "connect", 554), r)
        self.assertIn("not accepting messages", r.text)

    def test_continue(self):
        port = pftest.free_port()
        with smtest.Sendmail(milter="inet:%d@127.0.0.1" % port, flags="") as sm:
            r = sm.send(SENDER, ["down@" + D], pftest.message(subject="down, continue"))
            self.assertTrue(r.ok, r)
            self.assertEqual(sm.wait_delivered("down@" + D)[0].header("Subject"),
                             ["down, continue"])


if __name__ == "__main__":
    smtest.main()
