#!/usr/bin/python3
"""Postfix pipe(8) delivery agent for the integration tests.

Invoked by the private Postfix instance (see pftest.py) as

    deliver.py OUTDIR QUEUE_ID SENDER ORIGINAL_RECIPIENT RECIPIENT

with the message on stdin (one recipient per delivery).  Writes the message
byte for byte to OUTDIR/<recipient in lower case>/<stamp>.eml and the
envelope to the .json next to it.  The .json is written first and the .eml
is renamed into place last, so a reader that sees an .eml sees a complete
delivery.  Exit 75 (EX_TEMPFAIL) on any error: Postfix retries later.
"""
import json
import os
import sys
import time


def main():
    if len(sys.argv) != 6:
        sys.stderr.write("usage: deliver.py OUTDIR QID SENDER ORIG_RCPT RCPT\n")
        return 64
    outdir, qid, sender, orig, rcpt = sys.argv[1:]
    data = sys.stdin.buffer.read()
    # One directory per recipient; "/" cannot appear in a path component.
    d = os.path.join(outdir, rcpt.lower().replace("/", "%2F") or "_empty_")
    os.makedirs(d, exist_ok=True)
    stem = "%020d-%s-%d" % (time.time_ns(), qid, os.getpid())
    env = {"queue_id": qid, "sender": sender, "original_recipient": orig,
           "recipient": rcpt, "size": len(data)}
    with open(os.path.join(d, stem + ".json"), "w", encoding="utf-8") as f:
        json.dump(env, f, ensure_ascii=False)
    tmp = os.path.join(d, "." + stem + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.rename(tmp, os.path.join(d, stem + ".eml"))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as e:  # noqa: BLE001 -- any failure is a tempfail
        sys.stderr.write("deliver.py: %s\n" % e)
        sys.exit(75)
