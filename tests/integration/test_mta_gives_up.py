#!/usr/bin/env python3
"""The MTA gives up: a decision that outlasts Postfix's
milter_content_timeout, PROGRESS off (mf_opts.progress_ms = 0), through the
scenario milter tests/integration/mfscen.c, which runs with SIGPIPE at its
default disposition (checked: subprocess restores it, the library leaves it).

For a decision at end of message and one at end of headers, and for
milter_default_action tempfail and accept, the decision (which wants to add
a header; once, a 1 MiB body) is held on a gate file until Postfix has timed
out and closed the milter connection.  Then:

- Postfix logs the timeout and applies milter_default_action: the SMTP
  client gets 451 4.7.1 (tempfail), or the message is delivered unchanged
  (accept: the header the late decision added is not there);
- while the decision still runs, the milter keeps the transaction (for end
  of message its body spool file is still open) and stays up;
- the library logs at once that the MTA closed the connection while the
  reply was pending, with the queue id; once the gate opens it logs that
  the decision was dropped and frees the transaction: the milter's file
  descriptors are back to the set it had before the message (no spool
  file, no socket);
- the milter stays up and the next message, on a new connection, gets the
  filter's normal change (an added header) and is otherwise unchanged, and
  a plain message is delivered unchanged;
- the milter exits 0 on SIGTERM (under ASan: no leak).
"""
import os
import re
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pftest  # noqa: E402
from test_mailfilter_postfix import (MSG_HEADERS, SENDER, decoded, mfscen,  # noqa: E402
                                     scen_message, visible)

D = pftest.Postfix.domain
TIMEOUT = "2s"  # milter_content_timeout of the private instance
# A body above the spool's memory threshold (200 KiB): the transaction
# holds a spool file until it is freed.
BIG_BODY = "".join("line %05d of a body kept in a spool file.\n" % i for i in range(6000))


def fields(d):
    """Delivered header fields after Postfix's Received:, decoded, without
    the leading space."""
    return [(n, decoded(v.lstrip(" "))) for n, v in visible(d)]


def sigpipe_ignored(m):
    """True if the milter process ignores SIGPIPE (SigIgn in /proc/PID/status)."""
    with open("/proc/%d/status" % m.proc.pid) as f:
        ign = [int(l.split()[1], 16) for l in f if l.startswith("SigIgn:")][0]
    return bool(ign & (1 << (13 - 1)))


class MtaGivesUp(unittest.TestCase):
    def run_case(self, stage, action, late="hdr-add"):
        port = pftest.free_port()
        sess = pftest.session_dir()
        case = "%s-%s-%s" % (stage, action, late)
        gate = os.path.join(sess, "gate-" + case)
        spool = os.path.join(sess, "spool-" + case)
        os.mkdir(spool)
        main = {"milter_content_timeout": TIMEOUT, "milter_default_action": action}
        with mfscen(port, "--stage", stage, "--progress-ms", "0", "--gate", gate,
                    "--spool", spool) as m, \
                pftest.Postfix(milter="inet:127.0.0.1:%d" % port, main=main) as pf:
            self.assertFalse(sigpipe_ignored(m), "SIGPIPE must keep its default disposition")
            listeners = {k: v for k, v in m.fds().items() if v.startswith("socket:")}

            def no_connection():
                f = m.fds()
                conns = {k: v for k, v in f.items()
                         if v.startswith("socket:") or v.startswith(spool + "/")}
                return f if conns == listeners else None

            # A normal message first: delivered, its connection closed.  What
            # is open then (the library may keep a reserve fd opened at the
            # first connection) is the baseline.
            r = pf.send(SENDER, ["warm@" + D], scen_message())
            self.assertTrue(r.ok, r)
            pf.wait_delivered("warm@" + D)
            baseline = pftest.wait_for(no_connection, 30, "the first connection to close")

            def back_to_baseline(what):
                try:
                    pftest.wait_for(lambda: m.fds() == baseline, 30, what)
                except pftest.HarnessError:
                    self.assertEqual(m.fds(), baseline, "%s: milter fds\n%s" % (what, m.log()))

            # The slow decision: Postfix gives up after milter_content_timeout.
            slow = "scen-gate-%s@%s" % (late, D)
            r = pf.send(SENDER, [slow], scen_message(BIG_BODY))
            # Postfix has NR_EOH: a decision at end of headers is answered
            # at end of message, where Postfix waits in both cases; the reply
            # the library owes is the one to the event it decides at.
            event = "BODYEOB" if stage == "eom" else "EOH"
            pf.wait_log(r"warning: milter inet:127\.0\.0\.1:%d: can't read SMFIC_BODYEOB "
                        r"reply packet header: Connection timed out" % port)
            if action == "tempfail":
                self.assertFalse(r.ok, r)
                self.assertEqual(r.code, 451, r)
                self.assertIn("4.7.1", r.text, r)
                pf.wait_log(r"milter-reject: END-OF-MESSAGE .*4\.7\.1 .*to=<%s>" % slow)
            else:
                self.assertTrue(r.ok, r)
            # Postfix has closed the milter connection while the decision
            # still runs: the library sees it at once (it reads on while a
            # reply is pending) and says so with the queue id, but keeps the
            # transaction until decide() returns.
            m.wait_log(r"mfscen: gate wait <%s>" % slow)
            gone = m.wait_log(r"warning: mailfilter: 127\.0\.0\.1:\d+: MTA closed the "
                              r"connection while the reply to SMFIC_%s was pending "
                              r"\(queue id ([0-9A-F]+)\)" % event)
            qid = gone.group(1)
            self.assertIn(qid + ":", pf.log(), "queue id %s is Postfix's" % qid)
            self.assertTrue(m.alive(), m.log())
            if stage == "eom":  # its body spool file is still open
                self.assertTrue(any(v.startswith(spool + "/") for v in m.fds().values()),
                                m.fds())

            # The decision returns: dropped, one line, the transaction freed.
            open(gate, "w").close()
            m.wait_log(r"mfscen: gate open <%s>" % slow)
            m.wait_log(r"info: mailfilter: 127\.0\.0\.1:\d+: queue id %s: decision "
                       r"\w+ dropped: the MTA has left" % qid)
            self.assertTrue(m.alive(), "milter died (%s):\n%s" % (m.proc.poll(), m.log()))
            back_to_baseline("after the late decision")
            self.assertEqual(os.listdir(spool), [])
            os.unlink(gate)
            self.assertTrue(m.alive(), m.log())

            if action == "accept":
                # delivered as sent: the late decision's header is not there
                d = pf.wait_delivered(slow)[0]
                self.assertEqual(fields(d), MSG_HEADERS)
                self.assertEqual(d.body, BIG_BODY.encode())
            else:
                self.assertEqual(pf.deliveries(slow), [])

            # The next messages, on new connections, go through.
            r = pf.send(SENDER, ["scen-hdr-add@" + D], scen_message())
            self.assertTrue(r.ok, r)
            d = pf.wait_delivered("scen-hdr-add@" + D)[0]
            self.assertEqual(fields(d), MSG_HEADERS + [("X-Added", "Grüße aus dem Filter")])
            self.assertEqual(d.body, b"body line\n")
            r = pf.send(SENDER, ["after@" + D], scen_message())
            self.assertTrue(r.ok, r)
            d = pf.wait_delivered("after@" + D)[0]
            self.assertEqual(fields(d), MSG_HEADERS)
            self.assertEqual(d.body, b"body line\n")
            back_to_baseline("after the next messages")
            self.assertFalse(sigpipe_ignored(m), "SIGPIPE must keep its default disposition")
            self.assertEqual(len(pf.log_lines(r"warning: milter .*timed out")), 1)
        self.assertEqual(m.returncode, 0, m.log())

    def test_eom_tempfail(self):
        self.run_case("eom", "tempfail")

    def test_eom_accept(self):
        self.run_case("eom", "accept")

    def test_eom_late_big_reply(self):
        # The late reply (a 1 MiB body replacement) is bigger than a socket
        # buffer: written in pieces to a socket the MTA has closed.
        self.run_case("eom", "tempfail", "body-1m")

    def test_eoh_tempfail(self):
        self.run_case("eoh", "tempfail")

    def test_eoh_accept(self):
        self.run_case("eoh", "accept")


if __name__ == "__main__":
    pftest.main()
