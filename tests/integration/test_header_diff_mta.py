#!/usr/bin/env python3
"""Differential test of header edits (issue 15 item 4): random header
blocks with random edit sequences, delivered through a real Postfix
(pftest.py) and a real Sendmail (smtest.py), compared field by field with
what testtrx predicts for the same message on the same MTA.

Each message has a seed.  The seed makes the header block here (repeated
names in any case, folded values, raw 8-bit UTF-8, RFC 2047 words, empty
values, values without a leading space) and, through the recipient's local
part ("d<seed>@test.example"), the edits mfdiff.c's decide() applies: the
same decide() runs as the milter (mfdiff serve, the MTA detected from
macro v as in production) and in testtrx (mfdiff predict, the MTA named).
Each MTA runs twice: recognised (its own actions), and with its macro v
changed to an unknown MTA's (the actions that are safe on both; Postfix's
milter_macro_v, a "Dv" line in Sendmail's .cf).  In these four, testtrx's
prediction must also equal the filter's final list (the engine exact).
A fifth run sends Sendmail Postfix's actions (mf_opts.mta forced): what is
delivered then differs from the list, and must match testtrx's Sendmail
model all the same, fields above Sendmail's Received included.
The delivered fields below the MTA's own Received must equal the
prediction byte for byte (LF line ends), and the body must be untouched.

Knobs (environment):
  MFDIFF_COUNT  messages per run and stage (default 50: 500 in all)
  MFDIFF_SEED   first seed (default: random; printed at the start)
  MFDIFF_MTAS   "postfix,sendmail" (default both)
Every failure prints its seed; MFDIFF_SEED=<seed> MFDIFF_COUNT=1 replays
one message.  Thousands outside CI: MFDIFF_COUNT=2000.

Fields the generator never makes: address fields other than one fixed
From and To (Sendmail rewrites address fields it delivers, see
test_mta_differences.py), and a message without Date, Message-ID, From or
To (both MTAs add missing ones; see the same file).
"""
import os
import random
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pftest  # noqa: E402
import smtest  # noqa: E402

D = "test.example"
SENDER = "sender@" + D
COUNT = int(os.environ.get("MFDIFF_COUNT", "50"))
SEED = int(os.environ.get("MFDIFF_SEED") or random.SystemRandom().randrange(1, 1 << 40))
MTAS = os.environ.get("MFDIFF_MTAS", "postfix,sendmail").split(",")
MTA_CODE = {"postfix": 1, "sendmail": 2}  # mf_mta

NAMES = ["Subject", "X-A", "x-a", "X-A", "X-B", "Keywords", "Comments",
         "Received", "X-Empty", "X-Long", "X-Spam-Flag", "MIME-Version"]
WORDS = ["alpha", "beta", "Grüße", "Köln", "☃", "=?UTF-8?Q?Gr=C3=BC=C3=9Fe?=",
         "=?ISO-8859-1?Q?K=F6ln?=", "=?UTF-8?B?4piD?=", "x", "two  spaces", "tab\there"]


def field_value(rng):
    """A raw value: the bytes after the colon."""
    kind = rng.randrange(8)
    if kind == 0:
        return ""
    if kind == 1:
        return " "
    words = [rng.choice(WORDS) for _ in range(rng.randrange(1, 6))]
    lead = "" if kind == 2 else " "
    if kind == 3:  # folded
        out = lead + words[0]
        for w in words[1:]:
            out += rng.choice(["\n ", "\n\t", " "]) + w
        return out
    return lead + " ".join(words)


def header_block(seed):
    """(text, the fields) of message seed: LF line ends."""
    rng = random.Random(seed)
    fields = [("Date", " Tue, 1 Dec 2026 21:00:00 +0000"),
              ("Message-ID", " <%d@test.example>" % seed),
              ("To", " d%d@test.example" % seed)]
    for _ in range(rng.randrange(0, 12)):
        fields.insert(rng.randrange(len(fields) + 1),
                      (rng.choice(NAMES), field_value(rng)))
    fields.insert(rng.randrange(2), ("From", " a@test.example"))
    text = "".join("%s:%s\n" % f for f in fields)
    return text + "\nbody of %d\n" % seed


def predict(mta, stage, engine, files):
    """{path: (above, fields, filter's list)} and the action counts: what
    testtrx says mta delivers (above: how many of the fields it puts above
    its own Received), the filter's final list, and how many INSHEADER,
    ADDHEADER, CHGHEADER and deleting CHGHEADER actions were sent.
    engine: what the engine is told ("unknown", another MTA; None: mta)."""
    prog = pftest.build_artifact("tests", "integration", "mfdiff")
    out = subprocess.run([prog, "predict", mta, "--stage", stage]
                         + (["--engine", engine] if engine else [])
                         + ["<%s>" % SENDER, "<%%s@%s>" % D] + files,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    if out.returncode != 0:
        raise AssertionError("mfdiff predict failed: %s" % out.stderr.decode())
    res, kinds = {}, [0, 0, 0, 0]
    for chunk in (b"\n" + out.stdout).split(b"\n== ")[1:]:
        first, _, rest = chunk.partition(b"\n")
        text, _, flist = rest.partition(b"-- list\n")
        path, *fields = first.decode().split(" ")
        kv = dict(f.split("=", 1) for f in fields)  # above, unmatched, actions
        if int(kv["unmatched"]) and engine in (None, "unknown"):
            raise AssertionError("testtrx: %s: %s CHGHEADER found no field"
                                 % (path, kv["unmatched"]))
        kinds = [k + int(n) for k, n in zip(kinds, kv["actions"].split(","))]
        res[path] = (int(kv["above"]), pftest.split_message(text + b"\n")[0],
                     pftest.split_message(flist + b"\n")[0])
    return res, kinds


def show(fields):
    return "".join("  %s:%s\n" % (n, v.replace("\n", "\n  ")) for n, v in fields)


class Differential:
    mta = None
    unknown = False  # the MTA's macro v made unrecognisable: the fallback actions
    force = None  # the engine forced to this MTA's actions (mf_opts.mta)

    def start_mta(self, port):
        raise NotImplementedError

    def test_random_edits(self):
        how = " (not recognised)" if self.unknown else \
            " (sent %s's actions)" % self.force if self.force else ""
        sys.stderr.write("mfdiff: %s%s, seeds %d..%d per stage (MFDIFF_SEED=%d)\n"
                         % (self.mta, how, SEED, SEED + COUNT - 1, SEED))
        failures = []
        for stage in ("eoh", "eom"):
            failures += self.run_stage(stage)
        if failures:
            self.fail("%d of %d messages differ from testtrx on %s (MFDIFF_SEED=%d); first:\n%s"
                      % (len(failures), 2 * COUNT, self.mta, SEED, "\n".join(failures[:5])))

    def run_stage(self, stage):
        seeds = range(SEED, SEED + COUNT)
        port = pftest.free_port()
        tmp = tempfile.mkdtemp(prefix="mfdiff-", dir=pftest.session_dir())
        files = {}
        for s in seeds:
            p = os.path.join(tmp, "d%d.eml" % s)
            with open(p, "w", encoding="utf-8") as f:
                f.write(header_block(s))
            files[s] = p
        engine = "unknown" if self.unknown else self.force
        want, kinds = predict(self.mta, stage, engine, [files[s] for s in seeds])
        if COUNT >= 20:  # the edits must exercise every kind of header action used
            # (appends are ADDHEADER only with Postfix's actions; INSHEADER
            # 1000000 for Sendmail and the fallback)
            pf = (self.force or self.mta) == "postfix" and not self.unknown
            used = kinds if pf else kinds[:1] + kinds[2:]
            self.assertTrue(all(used), "INSHEADER, ADDHEADER, CHGHEADER, deletes: %r" % kinds)
        if not self.force:  # the engine exact: the MTA delivers the filter's list
            for s in seeds:
                above, fields, flist = want[files[s]]
                self.assertEqual((above, fields), (0, flist),
                                 "seed %d at %s: testtrx does not deliver the filter's list"
                                 % (s, stage))
        elif COUNT >= 20:  # some of them must show the other MTA's rules at work
            off = sum(1 for s in seeds if want[files[s]][:2] != (0, want[files[s]][2]))
            sys.stderr.write("mfdiff: %d of %d not delivered as the filter's list\n"
                             % (off, COUNT))
            self.assertGreater(off, 0, "Postfix's actions right on Sendmail every time?")
        prog = pftest.build_artifact("tests", "integration", "mfdiff")
        failures = []
        argv = [prog, "serve", "inet:%d@127.0.0.1" % port, "--stage", stage]
        with pftest.Milter(argv + (["--engine", self.force] if self.force else []),
                           ready_log=r"listening on", wrap=True) as m, \
                self.start_mta(port) as mta:
            for k in range(0, COUNT, 50):  # 50 messages per connection
                with mta.client() as c:
                    for s in seeds[k:k + 50]:
                        with open(files[s], "rb") as f:
                            r = c.send(SENDER, ["d%d@%s" % (s, D)], f.read())
                        self.assertTrue(r.ok, "seed %d at %s: %r\n%s" % (s, stage, r, m.log()))
            for s in seeds:
                d = mta.wait_delivered("d%d@%s" % (s, D))[0]
                what = "seed %d (%s, %s)" % (s, self.mta, stage)
                above, exp, _ = want[files[s]]
                # the MTA's own Received, below the fields testtrx puts above it
                self.assertEqual(d.headers[above][0], "Received", what)
                self.assertIn(" with ESMTP id ", d.headers[above][1], what)
                self.assertEqual(d.body, b"body of %d\n" % s, what)
                got = d.headers[:above] + d.headers[above + 1:]
                if got != exp:
                    i = next((i for i, (a, b) in enumerate(zip(got, exp)) if a != b),
                             min(len(got), len(exp)))
                    failures.append("%s: first difference at field %d\n--sent\n%s--delivered\n%s"
                                    "--testtrx\n%s" % (what, i, header_block(s).split("\n\n")[0]
                                                       + "\n", show(got), show(exp)))
            log = m.log()
        for s in seeds:
            code = 0 if self.unknown else MTA_CODE[self.force or self.mta]
            self.assertIn("mfdiff: <d%d@%s> mta=%d" % (s, D, code), log,
                          "seed %d: the engine's MTA is not %d" % (s, code))
        self.assertEqual(m.returncode, 0, log)
        return failures


@unittest.skipUnless("postfix" in MTAS, "MFDIFF_MTAS")
class Postfix(Differential, unittest.TestCase):
    mta = "postfix"

    def start_mta(self, port):
        main = {"milter_macro_v": "Other MTA 1.0"} if self.unknown else {}
        return pftest.Postfix(milter="inet:127.0.0.1:%d" % port, main=main)


@unittest.skipUnless("postfix" in MTAS, "MFDIFF_MTAS")
class PostfixUnknown(Postfix):
    unknown = True


@unittest.skipUnless("sendmail" in MTAS, "MFDIFF_MTAS")
class Sendmail(Differential, unittest.TestCase):
    mta = "sendmail"

    def start_mta(self, port):
        mc = "LOCAL_CONFIG\nDvOther MTA 1.0\n" if self.unknown else ""
        return smtest.Sendmail(milter="inet:%d@127.0.0.1" % port, flags="T", mc=mc)


@unittest.skipUnless("sendmail" in MTAS, "MFDIFF_MTAS")
class SendmailUnknown(Sendmail):
    unknown = True


@unittest.skipUnless("sendmail" in MTAS, "MFDIFF_MTAS")
class SendmailSentPostfixActions(Sendmail):
    """The engine forced to Postfix's rules in front of Sendmail: the
    delivered header is not the filter's list (fields above Sendmail's
    Received, appends above an earlier field of the name...), and must
    still be what testtrx's Sendmail model says -- the model checked where
    the engine does not make the MTA's rules harmless."""
    force = "postfix"


if __name__ == "__main__":
    smtest.main()
