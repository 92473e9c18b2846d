#!/usr/bin/env python3
"""Header edits of the transaction layer through a real Sendmail
(smtest.py), by mfscen.c at end of headers and at end of message -- the
header half of test_mailfilter_postfix.py's Changes: change and delete the
first field, insert at 0 and at 2 (Sendmail's own index 2 is not the
message's: its .cf header templates count), add, add a second of a
repeated name, add an empty value (delivered as "X-Empty:"), change and
delete the 2nd of a repeated name, with non-ASCII values.  The delivered header is compared field by
field with what was sent (under Sendmail's one Received), untouched fields
keep their exact bytes, and the body is unchanged.
"""
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pftest  # noqa: E402
import smtest  # noqa: E402
import test_mailfilter_postfix as pfscen  # noqa: E402 (not its TestCases: unittest would run them)
from test_mailfilter_postfix import (MSG_HEADERS, RAW_CHECKS, SCENARIOS,  # noqa: E402
                                     decoded, mfscen, scen_message)

D = smtest.Sendmail.domain
SENDER = "sender@" + D
EXPECT = pfscen.Changes().expect  # the fields each scenario should deliver


class Headers(unittest.TestCase):
    def test_header_edits(self):
        port = pftest.free_port()
        for stage in ("eoh", "eom"):
            with mfscen(port, "--stage", stage) as m, \
                    smtest.Sendmail(milter="inet:%d@127.0.0.1" % port) as sm:
                with sm.client() as c:
                    for scen in SCENARIOS:
                        r = c.send(SENDER, ["scen-%s@%s" % (scen, D)], scen_message())
                        self.assertTrue(r.ok, r)
                for scen in SCENARIOS:
                    d = sm.wait_delivered("scen-%s@%s" % (scen, D))[0]
                    what = "%s at %s:\n%s" % (scen, stage, d.raw.decode())
                    self.assertEqual(d.headers[0][0], "Received", what)
                    got = [(n, decoded(v.lstrip(" "))) for n, v in d.headers[1:]]
                    self.assertEqual(got, EXPECT(scen), what)
                    for n, v in d.headers[1:]:
                        if (n, v.lstrip(" ")) in MSG_HEADERS:
                            self.assertEqual(v, " " + v.lstrip(" "), what)
                    if scen in RAW_CHECKS:
                        self.assertIn(RAW_CHECKS[scen], d.headers[1:], what)
                    self.assertEqual(d.body, b"body line\n", what)
                self.assertEqual(sm.log_lines(r"Milter \(mf\).*(error|timeout)"), [])
            self.assertEqual(m.returncode, 0, m.log())


if __name__ == "__main__":
    smtest.main()
