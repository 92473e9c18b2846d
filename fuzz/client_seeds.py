#!/usr/bin/env python3
"""client_seeds.py -- write the seed corpus of fuzz_client (fuzz/corpus/client):
milter byte streams for the conversation fuzz_client.c plays (OPTNEG,
CONNECT, HELO, UNKNOWN, then MAIL, 2 RCPT, DATA, 4 headers, EOH, BODY, EOM
per transaction).  Each file: 3 option bytes (see fuzz_client.c) + the
milter's packets.  Run: python3 fuzz/client_seeds.py fuzz/corpus/client"""
import os
import struct
import sys

ACT_ALL = 0x1FF
P_SKIP, P_NR_HDR, P_LEADSPC = 0x400, 0x80, 0x100000
P_NR_ALL = 0x1000 | 0x2000 | 0x4000 | 0x8000 | 0x10000 | 0x20000 | 0x40000 \
    | 0x80000 | 0x80
MDS_1M = 0x20000000


def pkt(cmd, payload=b""):
    return struct.pack(">I", len(payload) + 1) + cmd.encode() + payload


def z(*strs):
    return b"".join(s.encode() + b"\0" for s in strs)


def optneg(version=6, actions=ACT_ALL, protocol=0, symlists=()):
    body = struct.pack(">III", version, actions, protocol)
    for stage, names in symlists:
        body += struct.pack(">I", stage) + z(names)
    return pkt("O", body)


C = pkt("c")
# the events answered by default, before end of message
CONN = [C, C, C]                  # CONNECT, HELO, UNKNOWN
TRX = [C] * 9 + [C]               # MAIL, RCPT x2, DATA, 4 headers, EOH, BODY


def trx(eom):
    return b"".join(TRX) + eom


def actions():
    return (pkt("h", z("X-Added", "yes")) +
            pkt("i", struct.pack(">I", 0) + z("X-First", "1")) +
            pkt("i", struct.pack(">I", 99) + z("X-Late", "2")) +
            pkt("m", struct.pack(">I", 2) + z("Subject", "changed")) +
            pkt("m", struct.pack(">I", 1) + z("Subject", "")) +
            pkt("m", struct.pack(">I", 0) + z("X-None", "")) +
            pkt("+", z("<new@example.org>")) +
            pkt("2", z("<par@example.org>", "NOTIFY=NEVER")) +
            pkt("-", z("<b@example.org>")) +
            pkt("e", z("<from@example.org>")) +
            pkt("e", z("<from2@example.org>", "SIZE=1")) +
            pkt("q", z("held for review")) +
            pkt("b", b"new body\r\n") + pkt("b", b"") + pkt("b", b"more\r\n") +
            pkt("p"))


N = optneg()
seeds = {
    "optneg-only": b"\0\0\0" + N,
    "optneg-symlists": b"\0\0\0" + optneg(6, ACT_ALL, MDS_1M, [
        (0, "j {daemon_name}"), (1, "{tls_version}"), (2, "i {auth_authen}"),
        (3, "{rcpt_addr}"), (4, "i"), (5, "{msg_id}"), (6, "")]),
    "optneg-v2": b"\0\x04\0" + optneg(2, 0x3F, 0),
    "optneg-bad-version": b"\0\0\0" + optneg(1, 0, 0),
    "optneg-too-many-actions": b"\x00\x08\xff" + optneg(6, ACT_ALL, 0),
    "optneg-short": b"\0\0\0" + pkt("O", b"\0\0\0\6"),
    "optneg-wrong-reply": b"\0\0\0" + C,
    "accept-at-connect": b"\0\0\0" + N + pkt("a"),
    "reject-at-helo": b"\0\0\0" + N + C + pkt("r"),
    "tempfail-at-connect": b"\0\0\0" + N + pkt("t"),
    "replycode-at-connect": b"\0\0\0" + N + pkt("y", z("421 4.7.0 go away")),
    "continue-all": b"\0\0\0" + N + b"".join(CONN) + trx(C),
    "continue-sliced": b"\x01\0\0" + N + b"".join(CONN) + trx(C),
    "two-trx": b"\x07\0\0" + N + b"".join(CONN) + trx(C) + trx(pkt("a")),
    "accept-at-mail": b"\0\0\0" + N + b"".join(CONN) + pkt("a") + trx(C),
    "discard-at-data": b"\0\0\0" + N + b"".join(CONN) + C * 3 + pkt("d"),
    "rcpt-rejected": b"\0\0\0" + N + b"".join(CONN) + C + pkt("r") + C +
    C * 7 + C,
    "rcpt-all-rejected": b"\0\0\0" + N + b"".join(CONN) + C + pkt("r") +
    pkt("y", z("550 5.1.1 no such user")),
    "progress": b"\0\0\0" + N + pkt("p") + pkt("p") + C + C + C +
    b"".join(TRX) + pkt("p") * 3 + C,
    "every-action": b"\0\0\0" + N + b"".join(CONN) + trx(actions() + C),
    "every-action-leadspc": b"\0\0\0" + optneg(6, ACT_ALL, P_LEADSPC) +
    b"".join(CONN) + trx(pkt("h", z("X-A", " lead")) + actions() + pkt("a")),
    "actions-reject": b"\0\0\0" + N + b"".join(CONN) + trx(actions() +
                                                           pkt("r")),
    "actions-replycode": b"\0\0\0" + N + b"".join(CONN) + trx(
        actions() + pkt("y", z("554 5.7.1 multi\r\n554 5.7.1 line"))),
    "quarantine": b"\0\0\0" + N + b"".join(CONN) + trx(
        pkt("q", z("spam")) + C),
    "replbody-chunks": b"\0\0\0" + N + b"".join(CONN) + trx(
        b"".join(pkt("b", bytes([65 + i]) * 300) for i in range(8)) + C),
    "action-not-negotiated": b"\0\0\0" + optneg(6, 0x1, 0) + b"".join(CONN) +
    trx(pkt("b", b"x") + C),
    "action-before-eom": b"\0\0\0" + N + pkt("h", z("X-Early", "1")),
    "skip-in-body": b"\0\x60\0" + optneg(6, ACT_ALL, P_SKIP) +
    b"".join(CONN) + C * 9 + C + pkt("s") + C,
    "skip-not-negotiated": b"\0\0\0" + N + b"".join(CONN) + C * 9 + pkt("s"),
    "body-4-chunks": b"\0\x60\0" + N + b"".join(CONN) + C * 9 + C * 4 + C,
    "body-chunk-reject": b"\0\x60\0" + N + b"".join(CONN) + C * 9 + C +
    pkt("y", z("552 5.3.4 too big")),
    "all-noreply": b"\0\0\0" + optneg(6, ACT_ALL, P_NR_ALL) + actions() + C,
    "no-steps": b"\0\0\0" + optneg(6, ACT_ALL, 0x3FF & ~0x400) +
    pkt("h", z("X-Only", "eom")) + C,
    "nr-hdr-v6": b"\0\0\0" + optneg(6, ACT_ALL, P_NR_HDR) + b"".join(CONN) +
    C * 5 + C + C + C,
    "unknown-reply": b"\0\0\0" + N + pkt("Z", b"junk"),
    "shutdown-reply": b"\0\0\0" + N + pkt("4"),
    "zero-length": b"\0\0\0" + N + b"\0\0\0\0",
    "too-big": b"\0\x80\0" + N + struct.pack(">I", 100000) + b"b" + b"x" * 64,
    "huge-length": b"\0\0\0" + N + b"\xff\xff\xff\xff" + b"c",
    "truncated": b"\0\0\0" + N + b"\0\0\0\x10c",
    "replycode-no-nul": b"\0\0\0" + N + pkt("y", b"550 5.7.1 no nul"),
    "header-no-value": b"\0\0\0" + N + b"".join(CONN) + trx(
        pkt("h", z("X-Bad")) + C),
    "chgheader-short": b"\0\0\0" + N + b"".join(CONN) + trx(
        pkt("m", b"\0\0") + C),
    "garbage": b"\x05\x13\x5a" + bytes(range(256)) * 2,
}

out = sys.argv[1] if len(sys.argv) > 1 else "fuzz/corpus/client"
os.makedirs(out, exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)
print(len(seeds), "seeds in", out)
