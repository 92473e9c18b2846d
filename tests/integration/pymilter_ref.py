#!/usr/bin/python3
"""A reference milter on python3-milter (Sendmail's libmilter underneath).

It proves that the harness's milter settings and log reading work without
our library, and serves as an interop peer: Postfix <-> libmilter here, and
later our MTA-side client <-> libmilter.

    pymilter_ref.py SOCKETSPEC [options]

    --at STAGE=ACTION   reply ACTION at STAGE instead of continue
                        STAGE:  connect helo envfrom envrcpt header eoh eom
                        ACTION: continue accept reject tempfail discard
    --reply CODE:XCODE:TEXT  setreply() before every reject/tempfail
    --addheader NAME:VALUE   add a header at eom
    --quarantine REASON      quarantine at eom
    --eom-sleep SECONDS      sleep in eom (milter timeouts)

Every callback prints one line on stdout ("connect host=... addr=...",
"envfrom <a@b>", "header Name: value", "eom", ...), flushed at once, for
the tests to read.  SIGTERM/SIGINT stop it (libmilter's signal thread).
"""
import argparse
import sys
import time

import Milter

STAGES = ("connect", "helo", "envfrom", "envrcpt", "header", "eoh", "eom")
ACTIONS = {"continue": Milter.CONTINUE, "accept": Milter.ACCEPT,
           "reject": Milter.REJECT, "tempfail": Milter.TEMPFAIL,
           "discard": Milter.DISCARD}

OPTS = None


def say(*words):
    sys.stdout.write(" ".join(str(w) for w in words) + "\n")
    sys.stdout.flush()


class RefMilter(Milter.Base):
    def __init__(self):
        self.id = Milter.uniqueID()

    def _reply(self, stage):
        act = OPTS.at.get(stage, "continue")
        if act in ("reject", "tempfail") and OPTS.reply:
            code, xcode, text = OPTS.reply
            self.setreply(code, xcode or None, text)
        if act != "continue":
            say("reply", stage, act)
        return ACTIONS[act]

    def connect(self, hostname, family, hostaddr):
        addr = hostaddr[0] if isinstance(hostaddr, tuple) else hostaddr
        say("connect", "host=%s" % hostname, "addr=%s" % addr)
        return self._reply("connect")

    def hello(self, helo):
        say("helo", helo)
        return self._reply("helo")

    def envfrom(self, f, *args):
        say("envfrom", f, *args)
        return self._reply("envfrom")

    def envrcpt(self, to, *args):
        say("envrcpt", to, *args)
        return self._reply("envrcpt")

    def header(self, name, value):
        say("header", "%s: %s" % (name, value))
        return self._reply("header")

    def eoh(self):
        say("eoh")
        return self._reply("eoh")

    def body(self, chunk):
        say("body", len(chunk))
        return Milter.CONTINUE

    def eom(self):
        say("eom", "queue_id=%s" % self.getsymval("i"))
        if OPTS.eom_sleep:
            time.sleep(OPTS.eom_sleep)
        for nv in OPTS.addheader:
            n, v = nv.split(":", 1)
            self.addheader(n, v)
        if OPTS.quarantine:
            self.quarantine(OPTS.quarantine)
        return self._reply("eom")

    def abort(self):
        say("abort")
        return Milter.CONTINUE

    def close(self):
        say("close")
        return Milter.CONTINUE


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("socket")
    p.add_argument("--at", action="append", default=[])
    p.add_argument("--reply")
    p.add_argument("--addheader", action="append", default=[])
    p.add_argument("--quarantine")
    p.add_argument("--eom-sleep", type=float, default=0)
    o = p.parse_args(argv)
    at = {}
    for s in o.at:
        stage, _, act = s.partition("=")
        if stage not in STAGES or act not in ACTIONS:
            p.error("bad --at %s" % s)
        at[stage] = act
    o.at = at
    if o.reply:
        parts = o.reply.split(":", 2)
        if len(parts) != 3:
            p.error("--reply wants CODE:XCODE:TEXT")
        o.reply = parts
    return o


def main():
    global OPTS
    OPTS = parse(sys.argv[1:])
    Milter.factory = RefMilter
    Milter.set_flags(Milter.ADDHDRS | Milter.QUARANTINE | Milter.CHGHDRS |
                     Milter.ADDRCPT | Milter.DELRCPT | Milter.CHGBODY)
    say("pymilter_ref starting on", OPTS.socket)
    Milter.runmilter("pymilter_ref", OPTS.socket, 240)
    say("pymilter_ref stopped")


if __name__ == "__main__":
    main()
