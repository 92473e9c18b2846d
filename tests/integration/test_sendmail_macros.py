#!/usr/bin/env python3
"""The macros a stock Sendmail configuration sends reach mf_trx_macro(),
through mfmacros.c (which prints what decide() sees), deciding at end of
message and at MAIL FROM:
- i is the queue id of the 250 reply; j the host name; _ the client as
  Sendmail names it; {daemon_name} the DAEMON_OPTIONS Name; {if_name};
  {mail_addr} and (at end of message) {rcpt_addr} and {msg_id};
- v, Sendmail's version: not in Sendmail's default connect list, the
  library asks for it (SETSYMLIST) to know the MTA;
- {auth_authen} is absent (no SMTP AUTH): mf_trx_macro() gives NULL;
- {client_addr} is in none of Sendmail's default lists: absent, unless the
  filter names it in mf_opts.macros (then the library asks for it);
- {if_addr} is not defined on loopback.
"""
import os
import re
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pftest  # noqa: E402
import smtest  # noqa: E402

D = smtest.Sendmail.domain
SENDER = "sender@" + D
NAMES = ["i", "j", "_", "v", "{daemon_name}", "{if_name}", "{if_addr}", "{client_addr}",
         "{mail_addr}", "{rcpt_addr}", "{auth_authen}", "{auth_type}", "{msg_id}"]


def seen(milter, rcpt):
    """{name: value or None} from mfmacros's line for rcpt (or "-")."""
    line = milter.wait_log(r"(?m)^mfmacros: %s .*$" % re.escape(rcpt)).group(0)
    values = re.findall(r" (\S+?)=(.*?)(?= \S+=|$)", " " + line.split(" ", 2)[2])
    return {n: (None if v == "-" else v) for n, v in values}


class Macros(unittest.TestCase):
    def test_default_macros(self):
        port = pftest.free_port()
        prog = pftest.build_artifact("tests", "integration", "mfmacros")
        for stage, ask in (("eom", None), ("mail", None), ("eom", "{client_addr}")):
            opts = ["--stage", stage] + (["--macros", ask] if ask else [])
            with pftest.Milter([prog, "inet:%d@127.0.0.1" % port] + opts + NAMES,
                               ready_log=r"listening on", wrap=True) as m, \
                    smtest.Sendmail(milter="inet:%d@127.0.0.1" % port) as sm:
                rcpt = "macros-%s-%d@%s" % (stage, bool(ask), D)
                msg = pftest.message(subject=stage)
                r = sm.send(SENDER, [rcpt], msg)
                self.assertTrue(r.ok, r)
                sm.wait_delivered(rcpt)
                got = seen(m, "<%s>" % rcpt if stage == "eom" else "-")
                self.assertEqual(set(got), set(NAMES), m.log())
                want = {"i": r.text.split()[1], "j": smtest.HOSTNAME, "v": sm.install.version,
                        "_": "localhost [127.0.0.1]", "{daemon_name}": "MTA",
                        "{if_name}": "localhost", "{if_addr}": None,
                        "{client_addr}": "127.0.0.1" if ask else None,
                        "{mail_addr}": SENDER, "{auth_authen}": None, "{auth_type}": None}
                if stage == "eom":
                    want["{rcpt_addr}"] = rcpt
                    want["{msg_id}"] = dict(pftest.split_message(msg)[0])["Message-ID"].strip()
                else:
                    want["{rcpt_addr}"] = want["{msg_id}"] = None
                self.assertEqual(got, want, m.log())
            self.assertEqual(m.returncode, 0, m.log())


if __name__ == "__main__":
    smtest.main()
