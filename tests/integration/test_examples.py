#!/usr/bin/env python3
"""examples/external and examples/rcptcount behind a real Postfix.

external (decision at end of headers):
- an unauthenticated message is delivered with its Subject prefixed by
  "[⚠️EXTERNAL] " (RFC 2047-encoded in the delivered file), every other
  header and the body byte for byte as sent;
- a message without Subject gets one;
- mail to spam-trap@スパム.example.com (SMTPUTF8) or to its A-label form lands
  in the hold queue, not in the mailbox;
- a SASL-authenticated session (XCLIENT LOGIN=) is left untouched.
rcptcount (decision at end of message, body spooled past 200 KiB):
- "X-Rcpt-Count: N" appended for 1 and 3 recipients, two messages on one
  connection (no ABORT between them) and after RSET;
- a 1 MiB body passes through byte for byte;
- after the suite the milter holds no more fds than before and left no file
  in its spool directory.
"""
import email.header
import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pftest  # noqa: E402

D = pftest.Postfix.domain
SENDER = "sender@" + D
TRAP_U = "spam-trap@スパム.example.com"
TRAP_A = "spam-trap@xn--zck5b2b.example.com"
TAG = "[⚠️EXTERNAL] "


def decoded(value):
    parts = email.header.decode_header(value.replace("\n", ""))
    return "".join(p.decode(c or "ascii") if isinstance(p, bytes) else p
                   for p, c in parts)


def fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def milter(name, port, env=None):
    return pftest.Milter([pftest.build_artifact("examples", name),
                          "inet:%d@127.0.0.1" % port],
                         ready_log=r"listening on", wrap=True, env=env)


class External(unittest.TestCase):
    def test_external(self):
        port = pftest.free_port()
        main = {"mydestination": "%s, スパム.example.com, xn--zck5b2b.example.com, "
                                 "$myhostname, localhost" % D,
                "smtpd_authorized_xclient_hosts": "127.0.0.0/8"}
        with milter("external", port) as m, \
                pftest.Postfix(milter="inet:127.0.0.1:%d" % port, main=main) as pf:
            # 1. unauthenticated: tagged
            msg = pftest.message(subject="Lunch on Friday?",
                                 headers=[("X-Long", "a\n folded\n\tvalue")])
            r = pf.send(SENDER, ["user@" + D], msg)
            self.assertTrue(r.ok, r)
            d = pf.wait_delivered("user@" + D)[0]
            subj = d.header("Subject")
            self.assertEqual(len(subj), 1, d.raw)
            self.assertTrue(subj[0].startswith("=?"), subj)  # RFC 2047 on the wire
            self.assertEqual(decoded(subj[0]), TAG + "Lunch on Friday?")
            sent, body = pftest.split_message(msg)
            self.assertEqual(d.body, body)
            got = [(n, v) for n, v in d.headers if n != "Received"]
            want = [(n, v) for n, v in sent]
            # Same fields in the same order, only the Subject's value differs.
            self.assertEqual([n for n, _ in got], [n for n, _ in want])
            for (n, v), (_, w) in zip(got, want):
                if n != "Subject":
                    self.assertEqual(v, w, n)

            # 2. no Subject: one is added
            msg2 = b"From: " + SENDER.encode() + b"\nTo: x@" + D.encode() + \
                b"\nMessage-ID: <nosubj@test.example>\n\nno subject\n"
            r = pf.send(SENDER, ["nosubj@" + D], msg2)
            self.assertTrue(r.ok, r)
            d = pf.wait_delivered("nosubj@" + D)[0]
            self.assertEqual([decoded(s) for s in d.header("Subject")],
                             [TAG.rstrip()])

            # 3. spam trap, U-label with SMTPUTF8 and A-label: hold queue
            r = pf.send(SENDER, [TRAP_U], pftest.message(subject="trap u", to=TRAP_U),
                        mail_options=["SMTPUTF8"])
            self.assertTrue(r.ok, r)
            r = pf.send(SENDER, [TRAP_A, "other@" + D],
                        pftest.message(subject="trap a", to=TRAP_A))
            self.assertTrue(r.ok, r)
            held = pf.wait_queue(lambda q: len([x for x in q if x["queue_name"] == "hold"]) == 2,
                                 what="two messages in the hold queue")
            held = [x for x in held if x["queue_name"] == "hold"]
            rcpts = sorted(a["address"] for x in held for a in x["recipients"])
            self.assertEqual(rcpts, sorted([TRAP_U, TRAP_A, "other@" + D]))
            self.assertEqual(pf.deliveries(TRAP_U), [])
            self.assertEqual(pf.deliveries("other@" + D), [])
            for x in held:
                pf.wait_log(r"%s: milter-hold: END-OF-MESSAGE" % x["queue_id"])

            # 4. authenticated (XCLIENT LOGIN=): untouched
            with pf.client() as c:
                code, text = c.command("XCLIENT LOGIN=alice")
                if code == 220:
                    c.command("EHLO client.test.example")
                    r = c.send(SENDER, ["auth@" + D], pftest.message(subject="from alice"))
                    self.assertTrue(r.ok, r)
                    d = pf.wait_delivered("auth@" + D)[0]
                    self.assertEqual(d.header("Subject"), ["from alice"])
                else:
                    sys.stderr.write("XCLIENT LOGIN refused (%d %s): authenticated "
                                     "case covered by testtrx only\n" % (code, text))
            self.assertEqual(pf.log_lines(r"warning: .*milter"), [])
        self.assertEqual(m.returncode, 0, m.log())
        self.assertNotRegex(m.log(), r"(?m): (error|warning): ")


class RcptCount(unittest.TestCase):
    def test_rcptcount(self):
        port = pftest.free_port()
        spool = tempfile.mkdtemp(prefix="mf-spool-")
        with milter("rcptcount", port, env={"TMPDIR": spool}) as m, \
                pftest.Postfix(milter="inet:127.0.0.1:%d" % port) as pf:
            pid = m.proc.pid
            with pf.client() as c:  # warm up: first connection
                r = c.send(SENDER, ["one@" + D], pftest.message(subject="one"))
                self.assertTrue(r.ok, r)
            pf.wait_delivered("one@" + D)
            fds0 = fds(pid)
            with pf.client() as c:
                # two messages on one connection, then one after RSET
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
                d = pf.wait_delivered(rc + "@" + D)[0]
                self.assertEqual(d.header("X-Rcpt-Count"), [str(n)], rc)
                # appended after the original fields
                self.assertEqual(d.headers[-1], ("X-Rcpt-Count", " %d" % n), rc)
            self.assertEqual(pf.wait_delivered("e@" + D)[0].body, big)
            pf.wait_log(r"status=sent", count=7)
            self.assertEqual(pf.log_lines(r"warning: .*milter"), [])
            # nothing left behind by the spool (1 MiB body went to a file)
            pftest.wait_for(lambda: fds(pid) <= fds0, 5, "milter fds back to %d" % fds0)
            self.assertEqual(os.listdir(spool), [])
        self.assertEqual(m.returncode, 0, m.log())
        os.rmdir(spool)


if __name__ == "__main__":
    pftest.main()
