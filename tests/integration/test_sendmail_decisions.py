#!/usr/bin/env python3
"""The transaction layer (mailfilter/) behind a real Sendmail (smtest.py,
F=T), through the scenario milter mfscen.c: every decision (accept,
reject with a custom two-line reply, tempfail, discard, quarantine) at
every stage (connect ... end of message) -- the Sendmail twin of
test_mailfilter_postfix.py's Decisions.

What Sendmail does with them (8.17.1.9):
- reject at connect: its own "554 ... not accepting messages" banner, the
  milter's text is not used (as Postfix);
- tempfail at connect: banner and EHLO pass, then "451 4.3.2 Please try
  again later" at MAIL, again without the milter's text;
- reject/tempfail at HELO: EHLO passes, MAIL gets the milter's reply;
- discard: accepted, logged "stat=discarded", nothing delivered;
- quarantine at any stage: accepted, the queue file becomes an hf file whose
  q line is the reason.
"""
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pftest  # noqa: E402
import smtest  # noqa: E402
from test_mailfilter_postfix import STAGES, mfscen  # noqa: E402

D = smtest.Sendmail.domain
SENDER = "sender@" + D


class Decisions(unittest.TestCase):
    def test_each_decision_at_each_stage(self):
        port = pftest.free_port()
        discards = 0
        with smtest.Sendmail(milter="inet:%d@127.0.0.1" % port, flags="T") as sm:
            for stage in STAGES:
                for dec in ("accept", "reject", "tempfail", "discard", "quarantine"):
                    rcpt = "r-%s-%s@%s" % (stage, dec, D)
                    with mfscen(port, "--stage", stage, "--decide", dec) as m:
                        r = sm.send(SENDER, [rcpt], pftest.message(subject=rcpt))
                    what = "%s at %s: %r\n%s" % (dec, stage, r, m.log())
                    if dec == "accept":
                        self.assertTrue(r.ok, what)
                        d = sm.wait_delivered(rcpt)[0]
                        self.assertEqual(d.header("Subject"), [rcpt])
                    elif dec == "reject" and stage == "connect":
                        self.assertEqual((r.ok, r.stage, r.code), (False, "connect", 554), what)
                        self.assertNotIn("scenario", r.text, what)
                    elif dec == "tempfail" and stage == "connect":
                        self.assertEqual((r.ok, r.stage, r.code), (False, "mail", 451), what)
                        self.assertIn("4.3.2", r.text, what)
                    elif dec == "reject":
                        self.assertFalse(r.ok, what)
                        self.assertEqual(r.code, 550, what)
                        self.assertIn("scenario says no", r.text, what)
                        self.assertIn("second line", r.text, what)
                        if stage == "helo":
                            self.assertEqual(r.stage, "mail", what)
                    elif dec == "tempfail":
                        self.assertFalse(r.ok, what)
                        self.assertEqual(r.code, 451, what)
                        self.assertIn("scenario says later", r.text, what)
                        if stage == "helo":
                            self.assertEqual(r.stage, "mail", what)
                    elif dec == "discard":
                        self.assertTrue(r.ok, what)
                        discards += 1
                        sm.wait_log(r"to=<%s>, .*stat=discarded" % rcpt)
                    else:
                        self.assertTrue(r.ok, what)
                        q = sm.wait_queue(lambda q: any(
                            rcpt in x["recipients"] and x["kind"] == "hf" for x in q),
                            what="%s quarantined (an hf file)" % rcpt)
                        x = [x for x in q if rcpt in x["recipients"]][0]
                        self.assertEqual(x["quarantine"], "scenario quarantine", what)
                    if dec != "accept":
                        self.assertEqual(sm.deliveries(rcpt), [], what)
            self.assertEqual(len(sm.log_lines(r"stat=discarded")), discards)
            self.assertEqual(sm.log_lines(r"Milter \(mf\).*(error|timeout)"), [])


if __name__ == "__main__":
    smtest.main()
