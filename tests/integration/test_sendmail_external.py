#!/usr/bin/env python3
"""examples/external behind a real, private Sendmail (smtest.py), F=T:
- ASCII and RFC 2047 Subjects are tagged "[⚠️EXTERNAL] " (RFC 2047 on the
  wire), every other header and the body byte for byte as sent, under
  Sendmail's Received;
- two messages on one SMTP connection are both tagged;
- a 1 MiB body arrives byte for byte;
- mail to the spam trap in two A-label spellings (lower case beside a
  normal recipient; the domain in mixed case) is quarantined: the queue file is an hf
  file whose q line is the milter's reason, and nothing is delivered.
  The U-label form never reaches the milter: Debian's Sendmail has no
  SMTPUTF8 and refuses an 8-bit RCPT itself (501 5.1.3).
"""
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pftest  # noqa: E402
import smtest  # noqa: E402
from test_examples import TAG, TRAP_A, TRAP_U, decoded  # noqa: E402

D = smtest.Sendmail.domain
SENDER = "sender@" + D

# Same trap, domain in upper case: still the trap (domains compare caseless).
TRAP_A_UPPER = "spam-trap@XN--ZCK5B2B.Example.COM"


class External(unittest.TestCase):
    def assert_tagged(self, d, msg, subject):
        """d is msg with only its Subject tagged, under one Received."""
        subj = d.header("Subject")
        self.assertEqual(len(subj), 1, d.raw)
        self.assertTrue(subj[0].startswith("=?"), subj)
        self.assertEqual(decoded(subj[0]), TAG + subject)
        sent, body = pftest.split_message(msg)
        self.assertEqual(d.body, body)
        self.assertEqual(d.headers[0][0], "Received")
        got = d.headers[1:]
        self.assertEqual([n for n, _ in got], [n for n, _ in sent])
        for (n, v), (_, w) in zip(got, sent):
            if n != "Subject":
                self.assertEqual(v, w, n)

    def test_external(self):
        port = pftest.free_port()
        domains = [D, "スパム.example.com", "xn--zck5b2b.example.com"]
        with pftest.Milter([pftest.build_artifact("examples", "external"),
                            "inet:%d@127.0.0.1" % port],
                           ready_log=r"listening on", wrap=True) as m, \
                smtest.Sendmail(milter="inet:%d@127.0.0.1" % port, flags="T",
                                local_domains=domains) as sm:
            # 1. ASCII and RFC 2047 Subjects, two messages on one connection
            msg1 = pftest.message(subject="Lunch on Friday?",
                                  headers=[("X-Long", "a\n folded\n\tvalue")])
            enc = "=?UTF-8?Q?Gr=C3=BC=C3=9Fe_aus_K=C3=B6ln?="
            msg2 = pftest.message(subject=enc)
            with sm.client() as c:
                r = c.send(SENDER, ["ascii@" + D], msg1)
                self.assertTrue(r.ok, r)
                r = c.send(SENDER, ["mime@" + D], msg2)
                self.assertTrue(r.ok, r)
            self.assert_tagged(sm.wait_delivered("ascii@" + D)[0], msg1, "Lunch on Friday?")
            self.assert_tagged(sm.wait_delivered("mime@" + D)[0], msg2, "Grüße aus Köln")

            # 2. a 1 MiB body, byte for byte
            big = (b"0123456789abcdefghijklmnopqrstuvwxyz" * 29127)[:1 << 20]
            big = b"\n".join(big[i:i + 998] for i in range(0, len(big), 998)) + b"\n"
            msg3 = pftest.message(subject="big", body=big)
            r = sm.send(SENDER, ["big@" + D], msg3)
            self.assertTrue(r.ok, r)
            self.assert_tagged(sm.wait_delivered("big@" + D)[0], msg3, "big")

            # 3. the spam trap.  No SMTPUTF8: Sendmail refuses the U-label
            # itself (501 5.1.3 at RCPT); the milter sees two A-label
            # spellings (domain in upper case; beside a normal recipient).
            with sm.client() as c:
                self.assertFalse(c.has_ext("smtputf8"))
                c.smtp.command_encoding = "utf-8"
                r = c.send(SENDER, [TRAP_U], pftest.message(subject="trap u", to=TRAP_U))
                self.assertEqual((r.ok, r.refused[TRAP_U][0]), (False, 501), r)
                self.assertIn("8-bit character in mailbox address", r.text)
                r = c.send(SENDER, [TRAP_A_UPPER], pftest.message(subject="trap A", to=TRAP_U))
                self.assertTrue(r.ok, r)
                r = c.send(SENDER, [TRAP_A, "other@" + D],
                           pftest.message(subject="trap a", to=TRAP_A))
                self.assertTrue(r.ok, r)
            held = sm.wait_queue(lambda q: len([x for x in q if x["kind"] == "hf"]) == 2,
                                 what="two quarantined messages")
            # (a delivered message's qf may linger until its mailer has exited)
            held = [x for x in held if x["kind"] == "hf"]
            self.assertEqual([x["quarantine"] for x in held], ["spam trap"] * 2)
            rcpts = sorted(a for x in held for a in x["recipients"])
            self.assertEqual(rcpts, sorted([TRAP_A_UPPER, TRAP_A, "other@" + D]))
            for x in held:
                sm.wait_log(r"%s: milter=mf, quarantine=spam trap" % x["queue_id"])
            self.assertEqual(sm.deliveries(TRAP_A), [])
            self.assertEqual(sm.deliveries("other@" + D), [])
            self.assertEqual(sm.log_lines(r"Milter \(mf\).*(error|timeout)"), [])
        self.assertEqual(m.returncode, 0, m.log())
        self.assertNotRegex(m.log(), r"(?m): (error|warning): ")


if __name__ == "__main__":
    smtest.main()
