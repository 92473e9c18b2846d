#!/usr/bin/env python3
"""Self-test of the pftest harness, independent of our library: Postfix
alone, and Postfix with pymilter_ref.py (Sendmail's libmilter through
python3-milter).  If one of these fails, the integration tests of our
milters cannot be trusted either."""
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pftest  # noqa: E402

D = pftest.Postfix.domain
SENDER = "sender@" + D
PYMILTER = pftest.pymilter_python()


def ref_milter(port, *args):
    """pymilter_ref.py on 127.0.0.1:port as a pftest.Milter."""
    script = os.path.join(pftest.HERE, "pymilter_ref.py")
    return pftest.Milter([PYMILTER, "-u", script, "inet:%d@127.0.0.1" % port] + list(args),
                         ready_port=port)


class PostfixAlone(unittest.TestCase):
    def test_session_rset_smtputf8_relay_denied(self):
        with pftest.Postfix() as pf:
            with pf.client() as c:
                self.assertEqual(c.banner[0], 220)
                self.assertTrue(c.has_ext("smtputf8"))
                r1 = c.send(SENDER, ["one@" + D], pftest.message(subject="first"))
                self.assertTrue(r1.ok, r1)
                self.assertEqual(c.mail(SENDER)[0], 250)
                self.assertEqual(c.rset()[0], 250)
                # Other domains go to error(8): refused at RCPT, nothing leaves.
                r2 = c.send(SENDER, ["x@elsewhere.example"], pftest.message())
                self.assertFalse(r2.ok)
                self.assertEqual(r2.stage, "rcpt")
                code, text = r2.refused["x@elsewhere.example"]
                self.assertEqual(code, 550, r2)
                self.assertIn("no mail leaves this instance", text)
                # SMTPUTF8 to the IDN domain, UTF-8 local part and body.
                to = "jürgen@" + pftest.Postfix.idn_domain
                msg = pftest.message(sender="sénder@" + D, to=to,
                                     subject="grüße", body="Grüße, ☃.\n")
                r3 = c.send("sénder@" + D, [to], msg, mail_options=["SMTPUTF8"])
                self.assertTrue(r3.ok, r3)
            one = pf.wait_delivered("one@" + D)[0]
            self.assertEqual(one.header("Subject"), ["first"])
            got = pf.wait_delivered(to)[0]
            self.assertEqual(got.body, "Grüße, ☃.\n".encode())
            self.assertEqual(got.header("Subject"), ["grüße"])
            self.assertEqual(got.envelope["sender"], "sénder@" + D)
            pf.wait_log(r"status=sent", count=2)
            self.assertEqual(pf.queue(), [])
            self.assertEqual(pf.log_lines(r"status=(bounced|deferred)"), [])

    def test_two_instances_at_once(self):
        with pftest.Postfix() as a, pftest.Postfix() as b:
            self.assertNotEqual(a.port, b.port)
            self.assertTrue(a.send(SENDER, ["r@" + D], pftest.message(subject="A")).ok)
            self.assertTrue(b.send(SENDER, ["r@" + D], pftest.message(subject="B")).ok)
            self.assertEqual(a.wait_delivered("r@" + D)[0].header("Subject"), ["A"])
            self.assertEqual(b.wait_delivered("r@" + D)[0].header("Subject"), ["B"])
            self.assertEqual(len(a.deliveries("r@" + D)), 1)
            self.assertNotIn(b.name, a.log())

    def test_reload_adds_dead_milter(self):
        with pftest.Postfix() as pf:
            self.assertTrue(pf.send(SENDER, ["r@" + D], pftest.message()).ok)
            dead = pftest.free_port()
            pf.reload({"smtpd_milters": "inet:127.0.0.1:%d" % dead,
                       "milter_default_action": "tempfail"})
            r = pf.send(SENDER, ["r@" + D], pftest.message())
            self.assertFalse(r.ok)
            self.assertEqual(r.code // 100, 4, r)
            self.assertEqual(len(pf.wait_delivered("r@" + D)), 1)


@unittest.skipIf(PYMILTER is None, "python3-milter not installed")
class WithPymilter(unittest.TestCase):
    def test_sees_transaction_and_adds_header(self):
        port = pftest.free_port()
        with ref_milter(port, "--addheader", "X-Ref:yes") as m, \
                pftest.Postfix(milter="inet:127.0.0.1:%d" % port) as pf:
            msg = pftest.message(subject="via libmilter", body="body\n")
            r = pf.send(SENDER, ["r@" + D], msg)
            self.assertTrue(r.ok, r)
            got = pf.wait_delivered("r@" + D)[0]
            self.assertEqual(got.header("X-Ref"), ["yes"])
            self.assertEqual(got.body, b"body\n")
            m.wait_log(r"connect host=%s addr=127\.0\.0\.1"
                       % pftest.LOOPBACK_HOSTNAME)
            m.wait_log(r"envfrom <%s>" % SENDER)
            m.wait_log(r"header Subject: via libmilter")
            m.wait_log(r"eom queue_id=%s" % got.envelope["queue_id"])
            m.wait_log(r"close")

    def test_local_submission_goes_through_non_smtpd_milters(self):
        port = pftest.free_port()
        with ref_milter(port, "--addheader", "X-Ref:local") as m, \
                pftest.Postfix(milter="inet:127.0.0.1:%d" % port) as pf:
            r = pf.submit(SENDER, ["local@" + D], pftest.message(subject="submitted"))
            self.assertEqual(r.returncode, 0, r.stderr)
            got = pf.wait_delivered("local@" + D)[0]
            self.assertEqual(got.header("X-Ref"), ["local"])
            self.assertEqual(got.header("Subject"), ["submitted"])
            m.wait_log(r"connect host=localhost addr=127\.0\.0\.1")  # Postfix fakes it

    def test_custom_reply_at_mail(self):
        port = pftest.free_port()
        with ref_milter(port, "--at", "envfrom=reject",
                        "--reply", "550:5.7.1:Go away, says the milter") as m, \
                pftest.Postfix(milter="inet:127.0.0.1:%d" % port) as pf:
            r = pf.send(SENDER, ["r@" + D], pftest.message())
            self.assertFalse(r.ok)
            self.assertEqual(r.stage, "mail")
            self.assertEqual(r.code, 550)
            self.assertEqual(r.text, "5.7.1 Go away, says the milter")
            m.wait_log(r"reply envfrom reject")
            pf.wait_log(r"milter-reject: MAIL from %s: 550 5\.7\.1 Go away"
                        % pftest.LOOPBACK_CLIENT)

    def test_tempfail_at_rcpt(self):
        port = pftest.free_port()
        with ref_milter(port, "--at", "envrcpt=tempfail"), \
                pftest.Postfix(milter="inet:127.0.0.1:%d" % port) as pf:
            r = pf.send(SENDER, ["r@" + D], pftest.message())
            self.assertFalse(r.ok)
            self.assertEqual(r.stage, "rcpt")
            self.assertEqual(r.refused["r@" + D][0] // 100, 4, r)

    def test_quarantine_goes_to_hold_queue(self):
        port = pftest.free_port()
        with ref_milter(port, "--quarantine", "suspicious"), \
                pftest.Postfix(milter="inet:127.0.0.1:%d" % port) as pf:
            msg = pftest.message(subject="hold me", body="held body\n")
            r = pf.send(SENDER, ["r@" + D], msg)
            self.assertTrue(r.ok, r)
            held = pf.wait_queue(lambda q: any(m["queue_name"] == "hold" for m in q),
                                 what="a message in the hold queue")
            self.assertEqual(len(held), 1)
            qid = held[0]["queue_id"]
            self.assertEqual(held[0]["sender"], SENDER)
            self.assertEqual([x["address"] for x in held[0]["recipients"]], ["r@" + D])
            text = pf.postcat(qid)
            self.assertIn(b"Subject: hold me", text)
            self.assertIn(b"held body", text)
            # Postfix logs the hold, not the milter's reason.
            pf.wait_log(r"%s: milter-hold: END-OF-MESSAGE from %s: "
                        r"milter triggers HOLD action"
                        % (qid, pftest.LOOPBACK_CLIENT))
            self.assertEqual(pf.deliveries("r@" + D), [])
            pf.postsuper("-d", qid, "hold")
            self.assertEqual(pf.queue(), [])

    def test_milter_vanishes_default_action_accept(self):
        port = pftest.free_port()
        m = ref_milter(port)
        with pftest.Postfix(milter="inet:127.0.0.1:%d" % port,
                            main={"milter_default_action": "accept"}) as pf:
            with m:
                self.assertTrue(pf.send(SENDER, ["r@" + D], pftest.message()).ok)
                m.wait_log(r"connect host=")
            self.assertEqual(m.returncode, 0, m.log())
            self.assertTrue(pf.send(SENDER, ["r@" + D], pftest.message()).ok)
            self.assertEqual(len(pf.wait_delivered("r@" + D, 2)), 2)


if __name__ == "__main__":
    pftest.main()
