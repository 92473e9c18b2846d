#!/usr/bin/env python3
"""The transaction layer (mailfilter/) behind a real Postfix, through the
scenario milter tests/integration/mfscen.c.

- every decision (accept, reject with a custom two-line reply, tempfail,
  discard, quarantine) at every stage (connect ... end of message);
- header changes at end of headers and end of message: change / delete the
  first field, insert at 0, add, change and delete the 2nd of a repeated
  name, with non-ASCII values -- the delivered header compared field by
  field with what was sent;
- add a recipient with ESMTP args, delete one, change the sender;
- replace the body with 1 KiB, 100 KiB and 1 MiB;
- SMTPUTF8 and an IDN domain; two messages on one connection and after RSET;
- a decision slower than milter_content_timeout survives thanks to
  PROGRESS (and fails without it);
- a body over the configured limit gets 552 5.3.4.
"""
import email.header
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pftest  # noqa: E402

D = pftest.Postfix.domain
SENDER = "sender@" + D
STAGES = ["connect", "helo", "mail", "rcpt", "data", "eoh", "eom"]


def mfscen(port, *args):
    return pftest.Milter([pftest.build_artifact("tests", "integration", "mfscen"),
                          "inet:%d@127.0.0.1" % port] + list(args),
                         ready_log=r"listening on", wrap=True)


def decoded(value):
    parts = email.header.decode_header(value.replace("\n", ""))
    return "".join(p.decode(c or "ascii") if isinstance(p, bytes) else p
                   for p, c in parts)


def visible(d):
    """Delivered header fields without Postfix's own Received: (first)."""
    assert d.headers[0][0] == "Received", d.headers[:2]
    return d.headers[1:]


# The header edits of mfscen.c, delivered as expect() says; an empty
# value arrives as "Name:" with nothing after the colon (RAW_CHECKS).
SCENARIOS = ["hdr-change-first", "hdr-delete-first", "hdr-insert0", "hdr-add",
             "hdr-delete-rep", "hdr-change-rep", "hdr-insert2", "hdr-add-rep",
             "hdr-add-empty"]
RAW_CHECKS = {"hdr-add-empty": ("X-Empty", "")}


MSG_HEADERS = [("From", "Sender <sender@test.example>"), ("To", "rcpt@test.example"),
               ("Subject", "scenario"), ("X-Rep", "one"), ("X-Rep", "two"),
               ("X-Rep", "three"), ("Message-ID", "<scen@test.example>"),
               ("Date", "Tue, 24 Nov 2026 12:00:00 +0000")]


def scen_message(body="body line\n"):
    head = "".join("%s: %s\n" % hv for hv in MSG_HEADERS).encode()
    return head + b"\n" + body.encode()


class Decisions(unittest.TestCase):
    def test_each_decision_at_each_stage(self):
        port = pftest.free_port()
        discards = 0
        with pftest.Postfix(milter="inet:127.0.0.1:%d" % port) as pf:
            for stage in STAGES:
                for dec in ("accept", "reject", "tempfail", "discard", "quarantine"):
                    rcpt = "r-%s-%s@%s" % (stage, dec, D)
                    with mfscen(port, "--stage", stage, "--decide", dec) as m:
                        r = pf.send(SENDER, [rcpt], pftest.message(subject=rcpt))
                    what = "%s at %s: %r\n%s" % (dec, stage, r, m.log())
                    if dec == "accept":
                        self.assertTrue(r.ok, what)
                        d = pf.wait_delivered(rcpt)[0]
                        self.assertEqual(d.header("Subject"), [rcpt])
                    elif dec == "reject" and stage == "connect":
                        # Postfix answers a connect-time reject with its own
                        # 554 banner; the milter's text is not used there.
                        self.assertFalse(r.ok, what)
                        self.assertEqual(r.code, 554, what)
                    elif dec == "tempfail" and stage == "connect":
                        self.assertFalse(r.ok, what)
                        self.assertEqual(r.code // 100, 4, what)
                    elif dec == "reject":
                        self.assertFalse(r.ok, what)
                        self.assertEqual(r.code, 550, what)
                        self.assertIn("scenario says no", str(r), what)
                        self.assertIn("second line", str(r), what)
                    elif dec == "tempfail":
                        self.assertFalse(r.ok, what)
                        self.assertEqual(r.code, 451, what)
                        self.assertIn("scenario says later", str(r), what)
                    elif dec == "discard":
                        self.assertTrue(r.ok, what)
                        discards += 1
                        pf.wait_log(r"milter-discard: ", count=discards)
                    else:
                        self.assertTrue(r.ok, what)
                        q = pf.wait_queue(lambda q: any(
                            a["address"] == rcpt for x in q if x["queue_name"] == "hold"
                            for a in x["recipients"]), what="%s in hold" % rcpt)
                        for x in q:
                            if x["queue_name"] == "hold":
                                pf.postsuper("-d", x["queue_id"], "hold")
                    if dec != "accept":
                        self.assertEqual(pf.deliveries(rcpt), [], what)
            self.assertEqual(pf.log_lines(r"warning: .*milter"), [])


class Changes(unittest.TestCase):
    def expect(self, scen):
        h = list(MSG_HEADERS)
        if scen == "hdr-change-first":
            h[0] = ("From", "Changed First <first@test.example>")
        elif scen == "hdr-delete-first":
            h = h[1:]
        elif scen == "hdr-insert0":
            h.insert(0, ("X-Top", "inserted at 0 ☃"))
        elif scen == "hdr-add":
            h.append(("X-Added", "Grüße aus dem Filter"))
        elif scen == "hdr-delete-rep":
            del h[4]
        elif scen == "hdr-change-rep":
            h[4] = ("X-Rep", "zwei → ändert")
        elif scen == "hdr-insert2":
            h.insert(2, ("X-Mid", "inserted at 2"))
        elif scen == "hdr-add-rep":
            h.append(("X-Rep", "four"))
        elif scen == "hdr-add-empty":
            h.append(("X-Empty", ""))
        return h

    def test_headers_envelope_body(self):
        port = pftest.free_port()
        for stage in ("eoh", "eom"):
            with mfscen(port, "--stage", stage) as m, \
                    pftest.Postfix(milter="inet:127.0.0.1:%d" % port) as pf:
                for scen in SCENARIOS:
                    rcpt = "scen-%s@%s" % (scen, D)
                    r = pf.send(SENDER, [rcpt], scen_message())
                    self.assertTrue(r.ok, r)
                    d = pf.wait_delivered(rcpt)[0]
                    got = [(n, decoded(v.lstrip(" "))) for n, v in visible(d)]
                    self.assertEqual(got, self.expect(scen),
                                     "%s at %s:\n%s" % (scen, stage, d.raw.decode()))
                    # Untouched fields keep their exact bytes.
                    for n, v in visible(d):
                        if (n, v.lstrip(" ")) in MSG_HEADERS:
                            self.assertEqual(v, " " + v.lstrip(" "))
                    if scen in RAW_CHECKS:
                        self.assertIn(RAW_CHECKS[scen], visible(d), d.raw.decode())
                    self.assertEqual(d.body, b"body line\n")
                if stage == "eom":
                    self.envelope_and_body(pf)
            self.assertEqual(m.returncode, 0, m.log())

    def envelope_and_body(self, pf):
        # add a recipient (with NOTIFY=NEVER), delete one, change the sender
        r = pf.send(SENDER, ["scen-rcpt-add@" + D], scen_message())
        self.assertTrue(r.ok, r)
        self.assertEqual(len(pf.wait_delivered("scen-rcpt-add@" + D)), 1)
        added = pf.wait_delivered("added@" + D)[0]
        self.assertEqual(added.envelope["sender"], SENDER)
        r = pf.send(SENDER, ["scen-rcpt-del@" + D, "gone@" + D, "kept@" + D], scen_message())
        self.assertTrue(r.ok, r)
        pf.wait_delivered("kept@" + D)
        pf.wait_delivered("scen-rcpt-del@" + D)
        self.assertEqual(pf.deliveries("gone@" + D), [])
        r = pf.send(SENDER, ["scen-from-change@" + D], scen_message())
        self.assertTrue(r.ok, r)
        d = pf.wait_delivered("scen-from-change@" + D)[0]
        self.assertEqual(d.envelope["sender"], "bounces@" + D)
        # replace the body: 1 KiB, 100 KiB, 1 MiB (CRLF lines; pipe writes LF)
        for name, n in (("1k", 1024), ("100k", 100 * 1024), ("1m", 1024 * 1024)):
            r = pf.send(SENDER, ["scen-body-%s@%s" % (name, D)], scen_message())
            self.assertTrue(r.ok, r)
            d = pf.wait_delivered("scen-body-%s@%s" % (name, D))[0]
            want = bytes(13 if i % 78 == 76 else 10 if i % 78 == 77 else 97 + i % 26
                         for i in range(n - 2)) + b"\r\n"
            want = want.replace(b"\r\n", b"\n")
            self.assertEqual(len(d.body), len(want), name)
            self.assertEqual(d.body, want, name)

    def test_smtputf8_idn_and_sessions(self):
        port = pftest.free_port()
        idn = pftest.Postfix.idn_domain
        with mfscen(port) as m, pftest.Postfix(milter="inet:127.0.0.1:%d" % port) as pf:
            with pf.client() as c:
                # SMTPUTF8 sender, IDN recipient domain: the scenario runs
                r = c.send("sénder@" + D, ["scen-hdr-add@" + idn],
                           pftest.message(sender="sénder@" + D, subject="grüße"),
                           mail_options=["SMTPUTF8"])
                self.assertTrue(r.ok, r)
                # second message, same connection, no ABORT: nothing carried over
                r = c.send(SENDER, ["plain@" + D], pftest.message(subject="second"))
                self.assertTrue(r.ok, r)
                self.assertEqual(c.mail(SENDER)[0], 250)
                self.assertEqual(c.rset()[0], 250)
                r = c.send(SENDER, ["scen-hdr-insert0@" + D], pftest.message(subject="third"))
                self.assertTrue(r.ok, r)
            d = pf.wait_delivered("scen-hdr-add@" + idn)[0]
            self.assertEqual([decoded(v.strip()) for v in d.header("X-Added")],
                             ["Grüße aus dem Filter"])
            self.assertEqual(d.envelope["sender"], "sénder@" + D)
            d = pf.wait_delivered("plain@" + D)[0]
            self.assertEqual(d.header("X-Added"), [])
            self.assertEqual(d.header("X-Top"), [])
            d = pf.wait_delivered("scen-hdr-insert0@" + D)[0]
            self.assertEqual(visible(d)[0][0], "X-Top")
        self.assertEqual(m.returncode, 0, m.log())


class Limits(unittest.TestCase):
    def test_slow_decision_progress(self):
        port = pftest.free_port()
        main = {"milter_content_timeout": "2s", "milter_command_timeout": "2s",
                "milter_default_action": "tempfail"}
        with mfscen(port, "--progress-ms", "500") as m, \
                pftest.Postfix(milter="inet:127.0.0.1:%d" % port, main=main) as pf:
            r = pf.send(SENDER, ["scen-slow3500@" + D], scen_message())
            self.assertTrue(r.ok, r)
            pf.wait_delivered("scen-slow3500@" + D)
        # Without PROGRESS, the same decision times out: Postfix tempfails.
        with mfscen(port, "--progress-ms", "0") as m, \
                pftest.Postfix(milter="inet:127.0.0.1:%d" % port, main=main) as pf:
            r = pf.send(SENDER, ["scen-slow3500@" + D], scen_message())
            self.assertFalse(r.ok, r)
            self.assertEqual(r.code // 100, 4, r)
            pf.wait_log(r"warning: milter .*timed out")
        self.assertEqual(m.returncode, 0, m.log())

    def test_body_over_limit(self):
        port = pftest.free_port()
        with mfscen(port, "--max-body", "1000") as m, \
                pftest.Postfix(milter="inet:127.0.0.1:%d" % port) as pf:
            r = pf.send(SENDER, ["big@" + D], scen_message("x" * 5000 + "\n"))
            self.assertFalse(r.ok, r)
            self.assertEqual(r.code, 552, r)
            self.assertIn("5.3.4", str(r))
            r = pf.send(SENDER, ["small@" + D], scen_message("small\n"))
            self.assertTrue(r.ok, r)
            pf.wait_delivered("small@" + D)
            m.wait_log(r"body over the limit")


if __name__ == "__main__":
    pftest.main()
