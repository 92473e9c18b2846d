#!/usr/bin/env python3
"""Where Sendmail and Postfix differ as a milter sees them, each shown
against both real MTAs side by side (pftest.Postfix 3.7, smtest.Sendmail
8.17), one TestCase per difference.  The packets are read on the wire
(milterwire.py): a milter of our own (milterwire.Scripted, exact control
of the negotiation and of every action) or a recording proxy in front of
the library (milterwire.Spy + mfscen).  The README's "Sendmail and Postfix
side by side" table lists each difference with the test that shows it.

- AfterFinalReply: what follows an accept/reject at end of headers, an
  accepted message and a RSET: Postfix sends ABORT (two before QUIT),
  Sendmail none; what the library sends and how the next message on the
  connection is clean;
- LeadingSpace: header values sent and ADDHEADER values delivered, with
  and without SMFIP_HDR_LEADSPC (the same on both);
- AddressHeaders: Sendmail rewrites address headers at delivery, a
  milter's values too (From "1" -> "1@<host>", To "a b" -> "a, b", 8-bit
  bytes changed); Postfix rewrites only what the client sent;
- MissingHeaders: Date/From/Message-Id added when missing -- by Postfix at
  the end, sent to the milter; by Sendmail at the top, never sent -- and
  what a delete or an add of Date does then (the library: the filter's
  Dates on both, one on Sendmail);
- SpecialHeaders: Bcc, Return-Path, Resent-*, Content-Length, from the
  client and from a milter;
- InsertIndex: where INSHEADER k and an ADDHEADER of a name already there
  land;
- Macros: the macros each sends by default, and at which step;
- RejectedRecipients: with SMFIP_RCPT_REJ Postfix sends the recipients it
  refused, Sendmail does not;
- ConnectDecisions: after a reject or tempfail at connect Postfix answers
  MAIL with the milter's reply, Sendmail with its own;
- SameOnBoth: folded values, body chunks, MAIL arguments, CHGHEADER of a
  name not there: no difference.
"""
import os
import re
import struct
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import milterwire as mw  # noqa: E402
import pftest  # noqa: E402
import smtest  # noqa: E402
from test_mailfilter_postfix import mfscen  # noqa: E402

D = pftest.Postfix.domain
SENDER = "sender@" + D
MTAS = ("postfix", "sendmail")
SM_HOST = smtest.HOSTNAME

# A message with the fields every MTA would otherwise add.
FULL = (b"From: a@test.example\nTo: b@test.example\nSubject: s\nX-A: one\nX-B: b\n"
        b"Message-ID: <m@test.example>\nDate: Tue, 24 Nov 2026 12:00:00 +0000\n\nbody\n")
# Without Date and Message-ID.
NO_DATE = b"From: a@test.example\nTo: b@test.example\nSubject: s\n\nbody\n"


class _Any:
    """Equal to anything (a generated value in an expected table)."""

    def __eq__(self, other):
        return True

    def __repr__(self):
        return "ANY"


ANY = _Any()


def mta(kind, port):
    """A private MTA of that kind whose milter is 127.0.0.1:port."""
    if kind == "postfix":
        return pftest.Postfix(milter="inet:127.0.0.1:%d" % port)
    return smtest.Sendmail(milter="inet:%d@127.0.0.1" % port)


def queue_id(kind, r):
    """The queue id in a SendResult's final reply."""
    return r.text.split()[-1] if kind == "postfix" else r.text.split()[1]


def local(conn):
    """Local part of the last RCPT the milter was sent on conn."""
    rs = [x[1] for x in conn.seq(">") if x[0] == "R"]
    return rs[-1].strip("<>").split("@")[0] if rs else ""


def by_rcpt(actions):
    """A Scripted script: at end of message, the actions listed for the
    last recipient's local part, then ACCEPT."""
    def script(conn, cmd, data):
        if cmd == "E":
            return list(actions.get(local(conn), [])) + [("a", b"")]
        return None
    return script


def ins(index, name, value):
    return ("i", struct.pack(">I", index) + mw.nul(name, value))


def chg(nth, name, value):
    return ("m", struct.pack(">I", nth) + mw.nul(name, value))


def add(name, value):
    return ("h", mw.nul(name, value))


def head_lines(d):
    """The delivered header as raw lines (continuation lines joined)."""
    return re.sub(r"\n[ \t]", " ", d.raw.decode("utf-8").split("\n\n", 1)[0]).split("\n")


def names(d):
    return [n for n, _ in d.headers]


def transactions(conn):
    """conn's packets as one string per SMTP transaction (split before
    each MAIL; the first element is what came before the first MAIL):
    MTA commands upper case, milter replies lower case ('y' a custom
    reply), MACRO packets left out, a run of header packets 'L+' and of
    body chunks 'B+'."""
    s = "".join(c for _, c, _ in conn.packets if c != "D")
    s = re.sub(r"(Lc?)+", "L+", s)
    s = re.sub(r"(Bc?)+", "B+", s)
    return re.split(r"(?=M)", s)


class AfterFinalReply(unittest.TestCase):
    """After a final reply before end of message (accept or reject at end
    of headers, accept at RCPT), after an accepted message and after RSET: Postfix sends
    SMFIC_ABORT before the next MAIL (and two before QUIT), Sendmail sends
    none -- except on RSET to a milter that replied to MAIL.  Neither sends
    the body or end of message after an accept at end of headers.  Through
    the library (mfscen deciding at end of headers; it negotiates no
    replies before end of message, no DATA and no body): its one final
    reply per message comes at end of message, and the next message on the
    connection is clean on both."""

    def test_raw_milter(self):
        def script(conn, cmd, data):
            if cmd == "N" and local(conn) == "acc-eoh":
                return [("a", b"")]
            if cmd == "N" and local(conn) == "rej-eoh":
                return [("y", b"550 5.7.1 no\0")]
            if cmd == "R" and local(conn) == "acc-rcpt":
                return [("a", b"")]
            return None
        got = {}
        for kind in MTAS:
            with mw.Scripted(script) as sc, mta(kind, sc.port) as m:
                with m.client() as c:
                    r1 = c.send(SENDER, ["acc-eoh@" + D], FULL)
                    r2 = c.send(SENDER, ["rej-eoh@" + D], FULL)
                    r3 = c.send(SENDER, ["plain@" + D], FULL)
                    rs = (c.mail(SENDER)[0], c.rset()[0])
                    r4 = c.send(SENDER, ["acc-rcpt@" + D, "more@" + D], FULL)
                    r5 = c.send(SENDER, ["last@" + D], FULL)
                self.assertEqual([r1.ok, r2.code, r3.ok, rs, r4.ok, r5.ok],
                                 [True, 550, True, (250, 250), True, True], kind)
                self.assertEqual(len(m.wait_delivered("acc-eoh@" + D)), 1)
                got[kind] = transactions(sc.wait_closed(1)[0])
        self.assertEqual(got, {
            "postfix": ["OOCcHc",
                        "McRcTcL+NaA",        # accept at EOH: ABORT
                        "McRcTcL+NyA",        # reject at EOH: ABORT
                        "McRcTcL+NcB+EaA",    # accepted at EOM: ABORT
                        "McA",                # MAIL, RSET
                        "McRaA",              # accept at RCPT: no more RCPT
                        "McRcTcL+NcB+EaAAQ"],  # two ABORTs, QUIT
            "sendmail": ["OOCcHc",
                         "McRcTcL+Na",
                         "McRcTcL+Ny",
                         "McRcTcL+NcB+Ea",
                         "McA",
                         "McRa",
                         "McRcTcL+NcB+EaQ"]})

    def test_library(self):
        port = pftest.free_port()
        got, actions = {}, {}
        for kind in MTAS:
            with mfscen(port, "--stage", "eoh") as lib, mw.Spy(port) as spy, \
                    mta(kind, spy.port) as m:
                with m.client() as c:
                    r1 = c.send(SENDER, ["plain@" + D], FULL)
                    r2 = c.send(SENDER, ["scen-hdr-rcpt-count@" + D, "second@" + D], FULL)
                    rs = (c.mail(SENDER)[0], c.rset()[0])
                    r3 = c.send(SENDER, ["scen-hdr-rcpt-count@" + D], FULL)
                self.assertEqual([r1.ok, r2.ok, rs, r3.ok], [True, True, (250, 250), True])
                conn = spy.wait_closed(1)[0]
                got[kind] = transactions(conn)
                actions[kind] = [x for x in conn.seq("<") if x[0] in "hi"]
                self.assertEqual(m.wait_delivered("plain@" + D)[0].header("X-Rcpt-Count"), [])
                self.assertEqual(m.wait_delivered("second@" + D)[0].header("X-Rcpt-Count"),
                                 ["2"])
                self.assertEqual({d.envelope["queue_id"]: d.header("X-Rcpt-Count") for d in
                                  m.wait_delivered("scen-hdr-rcpt-count@" + D, 2)},
                                 {queue_id(kind, r2): ["2"], queue_id(kind, r3): ["1"]})
            self.assertEqual(lib.returncode, 0, lib.log())
            # exactly one final reply for each message
            for t in got[kind][1:]:
                if "N" in t:
                    self.assertEqual(len(re.findall(r"[acdrty]", t)), 1, got[kind])
        self.assertEqual(got, {
            "postfix": ["OOCH",
                        "MRL+NEaA",
                        "MRRL+NEhaA",
                        "MA",                 # MAIL, RSET
                        "MRL+NEhaAAQ"],
            # RSET: no ABORT to a milter that did not reply to MAIL
            "sendmail": ["OOCH",
                         "MRL+NEa",
                         "MRRL+NEia",
                         "M",
                         "MRL+NEiaQ"]})
        # the append: ADDHEADER on Postfix, INSHEADER past the end on Sendmail
        self.assertEqual(actions, {
            "postfix": [("h", "X-Rcpt-Count", " 2"), ("h", "X-Rcpt-Count", " 1")],
            "sendmail": [("i", 1000000, "X-Rcpt-Count", " 2"),
                         ("i", 1000000, "X-Rcpt-Count", " 1")]})


class LeadingSpace(unittest.TestCase):
    """Header values as sent to the milter and ADDHEADER values as
    delivered, with and without SMFIP_HDR_LEADSPC: identical on both MTAs.
    Without it one leading space is taken off each value sent ("X-A:  v"
    arrives as " v", "X-C: " as "") and one is put before each value added
    ("" is delivered "X-N3: "); with it both ways are byte for byte."""

    MSG = b"From: a@test.example\nTo: b@test.example\nSubject: s\n" \
          b"X-A: v\nX-A:v\nX-A:  v\nX-B:\nX-C: \n\nbody\n"
    ADD = [add("X-N1", "v"), add("X-N2", " v"), add("X-N3", "")]

    def test_values(self):
        got = {}
        for kind in MTAS:
            for proto in (0, mw.P_HDR_LEADSPC):
                with mw.Scripted(by_rcpt({"ls": self.ADD}), protocol=proto) as sc, \
                        mta(kind, sc.port) as m:
                    self.assertTrue(m.send(SENDER, ["ls@" + D], self.MSG).ok)
                    d = m.wait_delivered("ls@" + D)[0]
                    sent = [v for n, v in sc.wait_closed(1)[0].headers() if n.startswith("X-")]
                    lines = [x for x in head_lines(d) if x.startswith("X-")]
                got[kind, bool(proto)] = (sent, lines)
        delivered_x = ["X-A: v", "X-A:v", "X-A:  v", "X-B:", "X-C: "]
        without = (["v", "v", " v", "", ""],
                   delivered_x + ["X-N1: v", "X-N2:  v", "X-N3: "])
        with_ = ([" v", "v", "  v", "", " "],
                 delivered_x + ["X-N1:v", "X-N2: v", "X-N3:"])
        self.assertEqual(got, {("postfix", False): without, ("sendmail", False): without,
                               ("postfix", True): with_, ("sendmail", True): with_})


class AddressHeaders(unittest.TestCase):
    """Address headers as delivered, set by a milter (CHGHEADER) or sent by
    the client, for values that are not a qualified address.  Postfix never
    touches a milter's value; it rewrites the client's (a local client)
    in every address header: "1" -> "1@<myhostname>".  Sendmail rewrites
    both at delivery: sender headers (From, Sender, Reply-To) get
    "@<its host>" ("hello world" -> "hello.world@..."), recipient headers
    (To, Cc) commas ("hello world" -> "hello, world"; a milter's
    "Name <x>" -> "Name, <x>", the client's kept), and a byte in
    0x80-0x9f gets 0x7f put before it ("ß" C3 9F -> C3 7F 9F; "€…" tries
    0x82 and 0x80) in both."""

    VALUES = ["1", "hello world", "Name <x>", "grüße", "€…", "a@b.example"]
    FIELDS = ["From", "Sender", "Reply-To", "To", "Cc"]
    BASE = ("".join("%s: a@test.example\n" % f for f in FIELDS) + "Subject: s\n\nbody\n").encode()

    @staticmethod
    def values(d, fields):
        """{field: value bytes} of the delivered header, unfolded."""
        head = re.sub(rb"\n[ \t]", b" ", d.raw.split(b"\n\n", 1)[0])
        out = {}
        for line in head.split(b"\n"):
            n, _, v = line.partition(b":")
            if n.decode() in fields:
                out[n.decode()] = v[1:] if v.startswith(b" ") else v
        return out

    def expected(self, kind, who, field, value, host):
        v = value
        if kind == "postfix":
            if who == "milter" or "@" in v:
                return v.encode()
            q = {"hello world": "hello@H, world@H", "Name <x>": "Name <x@H>"}.get(v, v + "@H")
        elif field in ("To", "Cc"):
            q = {"hello world": "hello, world",
                 "Name <x>": "Name, <x>" if who == "milter" else v}.get(v, v)
        else:
            q = v if "@" in v else {"hello world": "hello.world@H",
                                    "Name <x>": "Name <x@H>"}.get(v, v + "@H")
        b = q.replace("H", host).encode()
        return b if kind == "postfix" else re.sub(rb"([\x80-\x9f])", b"\x7f\\1", b)

    def test_rewrites(self):
        def script(conn, cmd, data):
            if cmd == "E" and local(conn).startswith("milter"):
                v = self.VALUES[int(local(conn)[6:])]
                return [chg(1, f, " " + v) for f in self.FIELDS] + [("a", b"")]
            return None
        got, want = {}, {}
        port = pftest.free_port()
        for kind in MTAS:
            with mw.Scripted(script, protocol=mw.P_HDR_LEADSPC) as sc, mta(kind, sc.port) as m:
                with m.client() as c:
                    for i, v in enumerate(self.VALUES):
                        msg = "".join("%s: %s\n" % (f, v) for f in self.FIELDS)
                        msg += "Subject: s\n\nbody\n"
                        self.assertTrue(c.send(SENDER, ["milter%d@%s" % (i, D)], self.BASE).ok)
                        self.assertTrue(c.send(SENDER, ["client%d@%s" % (i, D)], msg.encode()).ok)
                host = m.main_cf()["myhostname"] if kind == "postfix" else SM_HOST
                for who in ("milter", "client"):
                    for i, v in enumerate(self.VALUES):
                        d = m.wait_delivered("%s%d@%s" % (who, i, D))[0]
                        got[kind, who, v] = self.values(d, self.FIELDS)
                        want[kind, who, v] = {f: self.expected(kind, who, f, v, host)
                                              for f in self.FIELDS}
            # the same edit through the library (mf_hdr_set_nth "From" "1")
            with mfscen(port) as lib, mta(kind, port) as m:
                self.assertTrue(m.send(SENDER, ["scen-hdr-from-bare@" + D], FULL).ok)
                d = m.wait_delivered("scen-hdr-from-bare@" + D)[0]
                got[kind, "library", "1"] = self.values(d, ["From"])
                want[kind, "library", "1"] = {"From": self.expected(kind, "milter", "From",
                                                                    "1", host)}
            self.assertEqual(lib.returncode, 0, lib.log())
        self.assertEqual(got, want)
        # spelled out, the first of each
        self.assertEqual([got[k, "milter", "1"]["From"] for k in MTAS],
                         [b"1", b"1@" + SM_HOST.encode()])


class MissingHeaders(unittest.TestCase):
    """A message without Date, Message-Id or From: Postfix appends them at
    the end of the header and sends them to the milter as the message's
    last fields; Sendmail puts them at the top, under its Received, and
    never sends them.  A Date deleted at end of message is not added again
    by either, even one the milter never saw (Sendmail's: CHGHEADER finds
    it by name).  A Date added where Sendmail made one: ADDHEADER takes
    the place of Sendmail's (one Date, at the top), INSHEADER keeps both,
    as on Postfix (which sent its Date to the milter); the same for a
    Resent-Date on a resent message without one.  The library
    (mf_hdr_add of a Date) delivers the Dates of the filter's list on
    both: on Postfix two (Postfix's, in the list, and the filter's
    appended after it); on Sendmail one, the filter's, in the place of
    Sendmail's template (right under its Received), since for a Date the
    message lacked it sends ADDHEADER, not INSHEADER."""

    DATE = "Mon, 1 Jan 2024 00:00:00 +0000"
    ACTIONS = {"del-date": [chg(1, "Date", "")], "del-date-nd": [chg(1, "Date", "")],
               "add-date-nd": [add("Date", " " + DATE)],
               "ins-date-nd": [ins(1000000, "Date", " " + DATE)],
               "add-rdate": [add("Resent-Date", " " + DATE)],
               "ins-rdate": [ins(1000000, "Resent-Date", " " + DATE)]}
    # resent (Resent-From), without Resent-Date: both MTAs add one
    RESENT = b"Resent-From: r@test.example\n" + FULL

    def dates(self, d, name="Date"):
        """Whose each delivered Date is: "milter" (DATE) or "mta"."""
        return ["milter" if v.strip() == self.DATE else "mta" for v in d.header(name)]

    def test_missing(self):
        got = {}
        port = pftest.free_port()
        for kind in MTAS:
            with mw.Scripted(by_rcpt(self.ACTIONS)) as sc, mta(kind, sc.port) as m:
                with m.client() as c:
                    self.assertTrue(c.send(SENDER, ["bare@" + D], b"Subject: bare\n\nbody\n").ok)
                    self.assertTrue(c.send(SENDER, ["del-date@" + D], FULL).ok)
                    for r in ("del-date-nd", "add-date-nd", "ins-date-nd"):
                        self.assertTrue(c.send(SENDER, [r + "@" + D], NO_DATE).ok)
                    for r in ("add-rdate", "ins-rdate"):
                        self.assertTrue(c.send(SENDER, [r + "@" + D], self.RESENT).ok)
                ps = sc.wait_closed(1)[0].seq(">")
                first = ps[:[i for i, x in enumerate(ps) if x[0] == "M"][1]]
                got[kind] = {"sent": [x[1] for x in first if x[0] == "L"],
                             "delivered": names(m.wait_delivered("bare@" + D)[0])}
                for r in self.ACTIONS:
                    got[kind][r] = self.dates(m.wait_delivered(r + "@" + D)[0],
                                              "Resent-Date" if "rdate" in r else "Date")
            # the library appends a Date to a message without one
            with mfscen(port) as lib, mta(kind, port) as m:
                self.assertTrue(m.send(SENDER, ["scen-hdr-add-date@" + D], NO_DATE).ok)
                d = m.wait_delivered("scen-hdr-add-date@" + D)[0]
                got[kind]["library"] = ([n for n in names(d) if n in ("Date", "Subject")],
                                        self.dates(d))
            self.assertEqual(lib.returncode, 0, lib.log())
        self.assertEqual(got, {
            "postfix": {"sent": ["Subject", "Message-Id", "Date", "From"],
                        "delivered": ["Received", "Subject", "Message-Id", "Date", "From"],
                        "del-date": [], "del-date-nd": [],
                        "add-date-nd": ["mta", "milter"], "ins-date-nd": ["mta", "milter"],
                        "add-rdate": ["mta", "milter"], "ins-rdate": ["mta", "milter"],
                        "library": (["Subject", "Date", "Date"], ["mta", "milter"])},
            "sendmail": {"sent": ["Subject"],
                         "delivered": ["Received", "Date", "From", "Message-Id", "Subject"],
                         "del-date": [], "del-date-nd": [],
                         "add-date-nd": ["milter"], "ins-date-nd": ["mta", "milter"],
                         "add-rdate": ["milter"], "ins-rdate": ["mta", "milter"],
                         "library": (["Date", "Subject"], ["milter"])}})


class SpecialHeaders(unittest.TestCase):
    """Fields an MTA treats by name.  A client's Bcc and Return-Path:
    Postfix drops them before the milter sees them (drop_headers); Sendmail
    sends both to the milter, delivers Bcc empty ("Bcc:") and drops
    Return-Path (its mailer here has no F=P).  A resent
    message (Resent-From): both add Resent-Date and Resent-Message-Id,
    Postfix sends them to the milter, Sendmail does not.  The same fields
    added by a milter (ADDHEADER, or INSHEADER past the end as the library
    sends on Sendmail) to a message that is not resent: Postfix delivers
    them all; Sendmail drops Resent-*, Return-Path and Content-Length and
    empties Bcc."""

    maxDiff = None
    NAMES = ["Resent-From", "Bcc", "Return-Path", "Content-Length", "X-Other"]
    CLIENT = (b"From: a@test.example\nResent-From: r@test.example\nBcc: b@test.example\n"
              b"Return-Path: <p@test.example>\nSubject: s\n\nbody\n")
    PLAIN = b"From: a@test.example\nSubject: s\n\nbody\n"

    def test_by_name(self):
        acts = {"add": [add(n, " v@test.example") for n in self.NAMES],
                "ins": [ins(1000000, n, " v@test.example") for n in self.NAMES]}
        got = {}
        for kind in MTAS:
            with mw.Scripted(by_rcpt(acts)) as sc, mta(kind, sc.port) as m:
                with m.client() as c:
                    self.assertTrue(c.send(SENDER, ["client@" + D], self.CLIENT).ok)
                    for r in acts:
                        self.assertTrue(c.send(SENDER, [r + "@" + D], self.PLAIN).ok)
                ps = sc.wait_closed(1)[0].seq(">")
                first = ps[:[i for i, x in enumerate(ps) if x[0] == "M"][1]]
                got[kind] = {"sent": [x[1] for x in first if x[0] == "L"]}
                for r in ["client"] + list(acts):
                    d = m.wait_delivered(r + "@" + D)[0]
                    got[kind][r] = [(n, v.strip()) for n, v in d.headers
                                    if n in self.NAMES or n.startswith("Resent-")]
        v = "v@test.example"
        self.assertEqual(got, {
            "postfix": {"sent": ["From", "Resent-From", "Subject", "Resent-Message-Id",
                                 "Resent-Date"],
                        "client": [("Resent-From", "r@test.example"),
                                   ("Resent-Message-Id", ANY), ("Resent-Date", ANY)],
                        "add": [(n, v) for n in self.NAMES],
                        "ins": [(n, v) for n in self.NAMES]},
            "sendmail": {"sent": ["From", "Resent-From", "Bcc", "Return-Path", "Subject"],
                         "client": [("Resent-Date", ANY), ("Resent-Message-Id", ANY),
                                    ("Resent-From", "r@test.example"), ("Bcc", "")],
                         "add": [("Bcc", ""), ("X-Other", v)],
                         "ins": [("Bcc", ""), ("X-Other", v)]}})


class InsertIndex(unittest.TestCase):
    """INSHEADER k on FULL (From To Subject X-A X-B Message-ID Date): on
    Postfix k counts its Received as 0, so 0 lands above it and k from 1
    before the message's field k; on Sendmail 0 lands above its Received
    too, but 1 to 8 all land right under it (its .cf's header templates
    count) and 9 after the first field.  ADDHEADER of a name already
    there: appended on Postfix, above the first field of that name on
    Sendmail.  (The library's own inserts and appends land where the
    filter put them on both: test_sendmail_headers.py and
    test_mailfilter_postfix.py's Changes.)"""

    INDEXES = (0, 1, 2, 8, 9)

    def test_positions(self):
        acts = {"ins%d" % k: [ins(k, "X-New", " n")] for k in self.INDEXES}
        acts["add-rep"] = [add("X-A", " two")]
        got = {}
        for kind in MTAS:
            with mw.Scripted(by_rcpt(acts)) as sc, mta(kind, sc.port) as m:
                with m.client() as c:
                    for r in acts:
                        self.assertTrue(c.send(SENDER, [r + "@" + D], FULL).ok)
                got[kind] = {}
                for r in acts:
                    d = m.wait_delivered(r + "@" + D)[0]
                    if r == "add-rep":
                        got[kind][r] = [v.strip() for v in d.header("X-A")]
                    else:  # what the new field lands after
                        n = names(d)
                        got[kind][r] = n[n.index("X-New") - 1] if n.index("X-New") else None
        self.assertEqual(got, {
            "postfix": {"ins0": None, "ins1": "Received", "ins2": "From", "ins8": "Date",
                        "ins9": "Date", "add-rep": ["one", "two"]},
            "sendmail": {"ins0": None, "ins1": "Received", "ins2": "Received",
                         "ins8": "Received", "ins9": "From", "add-rep": ["two", "one"]}})


class Macros(unittest.TestCase):
    """The macros each MTA sends to a milter that asks for none (no
    SETSYMLIST): at connect Postfix sends j {daemon_name} {daemon_addr} v
    _, Sendmail j _ {daemon_name} {if_name} (no v: the library asks for it,
    test_sendmail_macros.py); the queue id i comes with every step from
    DATA to end of message on Postfix, with MAIL only on Sendmail, which
    alone sends {msg_id} (at end of message)."""

    def test_defaults(self):
        got = {}
        for kind in MTAS:
            with mw.Scripted() as sc, mta(kind, sc.port) as m:
                r = m.send(SENDER, ["macros@" + D], FULL)
                self.assertTrue(r.ok, r)
                ms = sc.wait_closed(1)[0].macros()
            connect = dict(ms[0][1]) if ms[0][0] == "C" else {}
            qid = queue_id(kind, r)
            got[kind] = {
                "connect": sorted(connect),
                "i": "".join(c for c, m in ms if m.get("i") == qid),
                "msg_id": "".join(c for c, m in ms if "{msg_id}" in m),
                "v": connect.get("v")}
            if kind == "postfix":
                self.assertRegex(got[kind].pop("v"), r"^Postfix \d")
        self.assertEqual(got, {
            "postfix": {"connect": ["_", "j", "v", "{daemon_addr}", "{daemon_name}"],
                        "i": "TLLLLLLLNBE", "msg_id": ""},
            "sendmail": {"connect": ["_", "j", "{daemon_name}", "{if_name}"],
                         "i": "M", "msg_id": "E", "v": None}})



class RejectedRecipients(unittest.TestCase):
    """With SMFIP_RCPT_REJ negotiated, Postfix sends the milter every
    recipient it refused itself (after the accepted ones' order, with
    {rcpt_mailer} "error", {rcpt_host} the DSN code and {rcpt_addr} its
    reply text); Sendmail sends none of those its rulesets refused (ruleset
    0's $#error for another domain, check_rcpt for a local one).  (The
    library does not ask for SMFIP_RCPT_REJ.)"""

    def test_refused_rcpts(self):
        pf_main = {"smtpd_recipient_restrictions": "check_recipient_access "
                   "inline:{ { bad-rcpt@test.example = REJECT refused by access } }"}
        sm_mc = ("LOCAL_RULESETS\nSLocal_check_rcpt\n"
                 "R$* bad-rcpt $*\t$#error $@ 5.7.1 $: \"550 refused by check_rcpt\"\n")
        rcpts = ["r@" + D, "bad@elsewhere.example", "bad-rcpt@" + D]
        got = {}
        for kind in MTAS:
            with mw.Scripted(protocol=mw.P_RCPT_REJ) as sc:
                if kind == "postfix":
                    m = pftest.Postfix(milter="inet:127.0.0.1:%d" % sc.port, main=pf_main)
                else:
                    m = smtest.Sendmail(milter="inet:%d@127.0.0.1" % sc.port, mc=sm_mc)
                with m:
                    r = m.send(SENDER, rcpts, pftest.message())
                    self.assertTrue(r.ok, r)
                    self.assertEqual(sorted(r.refused), sorted(rcpts[1:]), r)
                    self.assertEqual(r.refused["bad-rcpt@" + D][1].split()[0], "5.7.1", r)
                ps = sc.wait_closed(1)[0].seq(">", skip="")
            got[kind] = [(x[1], ps[i - 1][2].get("{rcpt_mailer}"), ps[i - 1][2].get("{rcpt_host}"))
                         for i, x in enumerate(ps) if x[0] == "R"]
        self.assertEqual(got, {
            "postfix": [("<r@test.example>", "deliver", "test.example"),
                        ("<bad@elsewhere.example>", "error", "5.1.1"),
                        ("<bad-rcpt@test.example>", "error", "5.7.1")],
            "sendmail": [("<r@test.example>", "deliver", "test.example")]})


class ConnectDecisions(unittest.TestCase):
    """The library's reject or tempfail at connect (mfscen, with its
    custom reply): both MTAs refuse in the banner for a reject (554) and
    pass banner and EHLO for a tempfail, refusing MAIL; Postfix then
    answers MAIL with the milter's reply, Sendmail with its own text."""

    def test_connect(self):
        port = pftest.free_port()
        got = {}
        for kind in MTAS:
            got[kind] = {}
            with mta(kind, port) as m:
                for dec in ("reject", "tempfail"):
                    with mfscen(port, "--stage", "connect", "--decide", dec) as lib:
                        with m.client() as c:
                            mail = c.mail(SENDER)
                            got[kind][dec] = (c.banner[0], c.ehlo_reply and c.ehlo_reply[0],
                                              mail[0], mail[1].split("\n")[0])
                    self.assertEqual(lib.returncode, 0, lib.log())
                    if dec == "reject":
                        self.assertIn(" not accepting ", c.banner[1])
        self.assertEqual(got, {
            "postfix": {"reject": (554, None, 550, "5.7.1 scenario says no"),
                        "tempfail": (220, 250, 451, "4.7.1 scenario says later")},
            "sendmail": {"reject": (554, None, 550, "5.0.0 Command rejected"),
                         "tempfail": (220, 250, 451, "4.3.2 Please try again later")}})


class SameOnBoth(unittest.TestCase):
    """What does not differ, asserted so that the README's table can say
    so: a folded value is sent with its "\\n" line ends and the
    continuation's white space; the body comes in 65535-byte chunks with
    CRLF line ends; MAIL's ESMTP arguments are passed; a CHGHEADER of a
    name the message lacks adds the field; CHGHEADER Received 1 is the
    message's first Received, the MTA's own (never sent) not counted."""

    def test_same(self):
        body = "x" * 76 + "\n"
        msg = ("Received: from one by two; Tue, 24 Nov 2026 12:00:00 +0000\n"
               "From: a@test.example\nSubject: one\n\ttwo\n  three\n\n" + body * 2000).encode()
        acts = {"same": [chg(1, "X-Absent", " added"), chg(1, "Received", " changed")]}
        got = {}
        for kind in MTAS:
            with mw.Scripted(by_rcpt(acts), protocol=mw.P_HDR_LEADSPC) as sc, \
                    mta(kind, sc.port) as m:
                r = m.send(SENDER, ["same@" + D], msg, mail_options=["BODY=8BITMIME"])
                self.assertTrue(r.ok, r)
                d = m.wait_delivered("same@" + D)[0]
                ps = sc.wait_closed(1)[0].packets
            got[kind] = {
                "subject": [v for n, v in sc.connections()[0].headers() if n == "Subject"],
                "chunks": [len(b) for _, c, b in ps if c == "B"],
                "crlf": b"".join(b for _, c, b in ps if c == "B") == (body * 2000).replace(
                    "\n", "\r\n").encode(),
                "mail": [x for x in sc.connections()[0].seq(">") if x[0] == "M"],
                "absent": d.header("X-Absent"),
                "received": [v[:8] for v in d.header("Received")]}
        same = {"subject": [" one\n\ttwo\n  three"], "chunks": [65535, 65535, 24930],
                "crlf": True, "mail": [("M", "<%s>" % SENDER, "BODY=8BITMIME")],
                "absent": ["added"], "received": ["from cli", "changed"]}
        self.assertEqual(got, {"postfix": same, "sendmail": same})

if __name__ == "__main__":
    pftest.require_root()
    smtest.main()
