#!/usr/bin/env python3
"""examples/logip behind a real Postfix.

- logip up: a message is delivered unchanged and logip logged the SMTP
  client's address (so Postfix really talked to it).
- logip down, milter_default_action=tempfail: the client gets a 4xx.
- logip down, milter_default_action=accept: the message is delivered.
"""
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pftest  # noqa: E402

RCPT = "rcpt@" + pftest.Postfix.domain
SENDER = "sender@" + pftest.Postfix.domain


def logip():
    return pftest.build_artifact("examples", "logip")


class LogipTest(unittest.TestCase):
    def assert_delivered_unchanged(self, pf, msg):
        got = pf.wait_delivered(RCPT)
        self.assertEqual(len(got), 1)
        d = got[0]
        sent_headers, sent_body = pftest.split_message(msg)
        self.assertEqual(d.body, sent_body)
        # Every header we sent arrives, in order, after Postfix's Received:.
        self.assertEqual(d.headers[-len(sent_headers):], sent_headers)
        self.assertEqual([n for n, _ in d.headers[:-len(sent_headers)]], ["Received"])
        # Byte for byte: Postfix's Received: header, then exactly what we sent.
        self.assertTrue(d.raw.startswith(b"Received: "), d.raw[:200])
        self.assertEqual(d.raw[-len(msg):], msg)
        self.assertEqual(d.envelope["sender"], SENDER)
        self.assertEqual(d.envelope["recipient"], RCPT)

    def test_logip_sees_client(self):
        port = pftest.free_port()
        spec = "inet:%d@127.0.0.1" % port
        with pftest.Milter([logip(), spec], ready_log=r"listening on",
                           wrap=True) as m, \
                pftest.Postfix(milter="inet:127.0.0.1:%d" % port,
                               main={"milter_default_action": "tempfail"}) as pf:
            # Folded header, empty value, dot-stuffed lines, trailing spaces.
            msg = pftest.read_data("plain.eml")
            r = pf.send(SENDER, [RCPT], msg)
            self.assertTrue(r.ok, r)
            self.assert_delivered_unchanged(pf, msg)
            # logip's line: "...: logip: <peer>: client 127.0.0.1 [localhost]"
            line = m.wait_log(r"logip: [^ ]+: client 127\.0\.0\.1 \[[^\]]*\]")
            self.assertIn("info", m.log()[:line.end()].splitlines()[-1])
            # Exactly one SMTP connection, so exactly one log line.
            self.assertEqual(m.log().count(": client "), 1, m.log())
            # Postfix reports no milter trouble.
            self.assertEqual(pf.log_lines(r"milter|warning"), [])

            # ACCEPT at connect covers the whole SMTP session: two more
            # messages on a second connection, one more log line.
            with pf.client(helo="second.test.example") as c:
                for i in range(2):
                    r = c.send(SENDER, [RCPT], pftest.message(subject="again %d" % i))
                    self.assertTrue(r.ok, r)
            self.assertEqual(len(pf.wait_delivered(RCPT, 3)), 3)
            m.wait_log(r"(?s)client 127\.0\.0\.1.*client 127\.0\.0\.1")
            pf.wait_log(r"disconnect from .* mail=2 rcpt=2 data=2")
            self.assertEqual(m.log().count(": client "), 2, m.log())
            self.assertEqual(pf.log_lines(r"milter|warning"), [])
        # SIGTERM from the harness: clean exit, nothing to complain about.
        self.assertEqual(m.returncode, 0, m.log())
        self.assertNotRegex(m.log(), r"(?m): (error|warning): ")

    def test_milter_down_tempfail(self):
        port = pftest.free_port()  # nothing listens there
        with pftest.Postfix(milter="inet:127.0.0.1:%d" % port,
                            main={"milter_default_action": "tempfail"}) as pf:
            r = pf.send(SENDER, [RCPT], pftest.message())
            self.assertFalse(r.ok, r)
            self.assertIsNotNone(r.code, r)
            self.assertTrue(400 <= r.code < 500, r)
            pf.wait_log(r"warning: connect to Milter service inet:127\.0\.0\.1:%d" % port)
            self.assertEqual(pf.deliveries(RCPT), [])

    def test_milter_down_accept(self):
        port = pftest.free_port()
        with pftest.Postfix(milter="inet:127.0.0.1:%d" % port,
                            main={"milter_default_action": "accept"}) as pf:
            msg = pftest.message(subject="milter down, accept")
            r = pf.send(SENDER, [RCPT], msg)
            self.assertTrue(r.ok, r)
            self.assert_delivered_unchanged(pf, msg)
            pf.wait_log(r"warning: connect to Milter service inet:127\.0\.0\.1:%d" % port)


if __name__ == "__main__":
    pftest.main()
