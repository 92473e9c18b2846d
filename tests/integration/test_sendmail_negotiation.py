#!/usr/bin/env python3
"""What each MTA side offers in its option negotiation (SMFIC_OPTNEG:
version, actions, protocol steps and data-size bits), captured by a
milter that records what it receives (milterwire.Scripted):
- a stock Sendmail (smtest) and the private Postfix (pftest) offer the
  same thing;
- milter-check and the libuv client (bench/mfload) offer what the MTAs
  offer, so that a filter tried with them negotiates as in production --
  the data-size bits aside: milter-check also offers 256 KiB and 1 MiB
  packets (its --data-size, default 1m), which Postfix 3.7 and Sendmail
  8.17 do not (they offer version 6, actions 0x1ff, steps 0x1fffff).
"""
import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import milterwire  # noqa: E402
import pftest  # noqa: E402
import smtest  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))

MDS_MASK = 0x10000000 | 0x20000000  # SMFIP_MDS_256K | SMFIP_MDS_1M


def offer_of(start):
    """(version, actions, protocol) of the first OPTNEG that start(spec,
    port) makes reach a milter (milterwire.Scripted) on spec/port."""
    with milterwire.Scripted() as m:
        start("inet:%d@127.0.0.1" % m.port, m.port)
        conn = m.wait_closed(1)[0]
    offers = [x[1:] for x in conn.seq(">") if x[0] == "O"]
    return offers[0] if offers else None


class Negotiation(unittest.TestCase):
    def test_offers(self):
        def sendmail(spec, port):
            with smtest.Sendmail(milter=spec) as sm:
                sm.send("a@" + sm.domain, ["b@" + sm.domain], pftest.message())

        def postfix(spec, port):
            with pftest.Postfix(milter="inet:127.0.0.1:%d" % port,
                                main={"milter_default_action": "accept"}) as pf:
                pf.send("a@" + pf.domain, ["b@" + pf.domain], pftest.message())

        def milter_check(spec, port):
            subprocess.run([pftest.build_artifact("core", "tools", "milter-check"),
                            spec, os.path.join(HERE, "..", "..", "examples", "message.eml")],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)

        def libuv_client(spec, port):
            subprocess.run([pftest.build_artifact("bench", "mfload"), "-s", spec,
                            "-c", "1", "-n", "1"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)

        offers = {name: offer_of(f) for name, f in
                  (("sendmail", sendmail), ("postfix", postfix),
                   ("milter-check", milter_check), ("libuv client", libuv_client))}
        for name, o in offers.items():
            self.assertIsNotNone(o, "%s sent no OPTNEG" % name)
        sm = offers["sendmail"]
        self.assertEqual(sm[0], 6, offers)
        self.assertEqual(offers["postfix"], sm, offers)
        for name in ("milter-check", "libuv client"):
            v, act, prot = offers[name]
            self.assertEqual((v, act, prot & ~MDS_MASK), sm,
                             "%s offers %s, Sendmail %s" % (name, offers[name], sm))


if __name__ == "__main__":
    smtest.main()
