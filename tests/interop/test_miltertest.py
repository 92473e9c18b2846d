#!/usr/bin/env python3
"""Interop: OpenDKIM's miltertest (Debian package miltertest, a Lua-scripted
MTA simulator written against libmilter's protocol) drives our milters.

- examples/rcptcount: X-Rcpt-Count for 1 and 3 recipients, two messages on
  one connection, a 200 KiB body in 64 KiB chunks;
- examples/external: the Subject is changed for an unauthenticated sender,
  the spam trap (A-label spelling) is quarantined with reason "spam trap",
  an authenticated sender gets ACCEPT (decided at end of headers, answered
  at end of message: miltertest offers NR_EOH) and no change;
- examples/logip: CONNECT answered ACCEPT.

miltertest exits silently when a script performs a step the filter
negotiated away, so every step is guarded with mt.test_option, and a reply
is read only where no NR_* bit was negotiated.
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

BUILD = os.environ.get("MF_BUILD_DIR",
                       os.path.join(os.path.dirname(__file__), "..", "..",
                                    "build"))

# Lua helpers: a step only when not negotiated away, a reply only when one
# is due.  fail() raises a Lua error: miltertest exits non-zero.
PRELUDE = r"""
function fail(msg) print("FAILED: " .. msg); error("FAILED: " .. msg) end
-- a header added (appended or inserted) with this value; with HDR_LEADSPC
-- negotiated the value carries its leading space
function added(conn, name, value)
  for _, v in ipairs({value, " " .. value}) do
    if mt.eom_check(conn, MT_HDRADD, name, v) or
       mt.eom_check(conn, MT_HDRINSERT, name, v) then return true end
  end
  return false
end
function step(conn, no, nr, fn, ...)
  if no ~= nil and mt.test_option(conn, no) then return nil end
  local err = fn(conn, ...)
  if err ~= nil then fail(tostring(err)) end
  if nr ~= nil and mt.test_option(conn, nr) then return nil end
  return mt.getreply(conn)
end
function expect(conn, no, nr, want, fn, ...)
  local r = step(conn, no, nr, fn, ...)
  if r ~= nil and r ~= want then
    fail("reply " .. tostring(r) .. ", wanted " .. tostring(want))
  end
end
function open(sock)
  local conn = mt.connect(sock, 20, 0.1)
  if conn == nil then fail("cannot connect to " .. sock) end
  local err = mt.negotiate(conn, nil, nil, nil)
  if err ~= nil then fail("negotiate: " .. tostring(err)) end
  return conn
end
function session(conn, host, ip, helo)
  expect(conn, SMFIP_NOCONNECT, SMFIP_NR_CONN, SMFIR_CONTINUE, mt.conninfo,
         host, ip)
  expect(conn, SMFIP_NOHELO, SMFIP_NR_HELO, SMFIR_CONTINUE, mt.helo, helo)
end
-- MAIL, RCPTs, headers, body; returns the EOM reply
function message(conn, from, rcpts, headers, body)
  expect(conn, SMFIP_NOMAIL, SMFIP_NR_MAIL, SMFIR_CONTINUE, mt.mailfrom, from)
  for _, r in ipairs(rcpts) do
    expect(conn, SMFIP_NORCPT, SMFIP_NR_RCPT, SMFIR_CONTINUE, mt.rcptto, r)
  end
  expect(conn, SMFIP_NODATA, SMFIP_NR_DATA, SMFIR_CONTINUE, mt.data)
  for _, h in ipairs(headers) do
    expect(conn, SMFIP_NOHDRS, SMFIP_NR_HDR, SMFIR_CONTINUE, mt.header,
           h[1], h[2])
  end
  local r = step(conn, SMFIP_NOEOH, SMFIP_NR_EOH, mt.eoh)
  if r ~= nil and r ~= SMFIR_CONTINUE then return r end
  if body ~= nil and not mt.test_option(conn, SMFIP_NOBODY) then
    local off = 1
    while off <= #body do
      local chunk = string.sub(body, off, off + 65535 - 1)
      off = off + #chunk
      local b = step(conn, nil, SMFIP_NR_BODY, mt.bodystring, chunk)
      if b ~= nil and b ~= SMFIR_CONTINUE then break end
    end
  end
  local err = mt.eom(conn)
  if err ~= nil then fail("eom: " .. tostring(err)) end
  return mt.getreply(conn)
end
"""

RCPTCOUNT = r"""
local conn = open(SOCK)
session(conn, "client.example", "192.0.2.1", "client.example")
local hs = {{"From", "a@example.org"}, {"Subject", "one"}}
local r = message(conn, "<a@example.org>", {"<b@example.net>"}, hs, "hi\r\n")
if r ~= SMFIR_ACCEPT and r ~= SMFIR_CONTINUE then fail("eom reply " .. r) end
if not added(conn, "X-Rcpt-Count", "1") then
  fail("no X-Rcpt-Count: 1")
end
-- a second message on the same connection, three recipients, 200 KiB body
local body = string.rep("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ!?\r\n", 3200)
r = message(conn, "<a@example.org>",
            {"<c@example.net>", "<d@example.net>", "<e@example.net>"}, hs, body)
if r ~= SMFIR_ACCEPT and r ~= SMFIR_CONTINUE then fail("eom reply " .. r) end
if not added(conn, "X-Rcpt-Count", "3") then
  fail("no X-Rcpt-Count: 3")
end
mt.disconnect(conn)
print("rcptcount ok")
"""

EXTERNAL = r"""
local hs = {{"From", "a@example.org"}, {"Subject", "hello"}}
-- unauthenticated: the Subject is tagged
local conn = open(SOCK)
session(conn, "client.example", "192.0.2.1", "client.example")
local r = message(conn, "<a@example.org>", {"<b@example.net>"}, hs, "hi\r\n")
if r ~= SMFIR_ACCEPT and r ~= SMFIR_CONTINUE then fail("eom reply " .. r) end
if not mt.eom_check(conn, MT_HDRCHANGE, "Subject") then
  fail("Subject not changed")
end
mt.disconnect(conn)
-- the spam trap, A-label spelling, upper case: quarantined
conn = open(SOCK)
session(conn, "client.example", "192.0.2.1", "client.example")
mt.macro(conn, SMFIC_MAIL, "{auth_authen}", "alice")
r = message(conn, "<a@example.org>", {"<spam-trap@XN--ZCK5B2B.example.com>"},
            hs, "hi\r\n")
if not mt.eom_check(conn, MT_QUARANTINE, "spam trap") then
  fail("not quarantined")
end
mt.disconnect(conn)
-- authenticated, ordinary recipient: accepted, unchanged (decided at end of
-- headers; the answer comes at end of message, NR_EOH being negotiated)
conn = open(SOCK)
session(conn, "client.example", "192.0.2.1", "client.example")
mt.macro(conn, SMFIC_MAIL, "{auth_authen}", "alice")
r = message(conn, "<a@example.org>", {"<b@example.net>"}, hs, "hi\r\n")
if r ~= SMFIR_ACCEPT then fail("wanted ACCEPT, got " .. tostring(r)) end
mt.disconnect(conn)
print("external ok")
"""

LOGIP = r"""
local conn = open(SOCK)
if mt.test_option(conn, SMFIP_NOCONNECT) then fail("logip skips CONNECT") end
local err = mt.conninfo(conn, "client.example", "192.0.2.7")
if err ~= nil then fail(err) end
if mt.getreply(conn) ~= SMFIR_ACCEPT then fail("CONNECT not accepted") end
mt.disconnect(conn)
print("logip ok")
"""


class MilterTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if shutil.which("miltertest") is None:
            raise unittest.SkipTest("miltertest not installed")
        cls.tmp = tempfile.mkdtemp(prefix="mf-mt-")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def run_with(self, example, script):
        binary = os.path.join(BUILD, "examples", example)
        if not os.access(binary, os.X_OK):
            self.skipTest("%s not built" % binary)
        sock = os.path.join(self.tmp, example + ".sock")
        log = open(os.path.join(self.tmp, example + ".log"), "w+")
        p = subprocess.Popen([binary, "unix:" + sock], stdout=log,
                             stderr=subprocess.STDOUT)
        try:
            for _ in range(100):
                if os.path.exists(sock):
                    break
                time.sleep(0.05)
            lua = os.path.join(self.tmp, example + ".lua")
            with open(lua, "w") as fh:
                fh.write(PRELUDE + script)
            r = subprocess.run(["miltertest", "-D", "SOCK=unix:" + sock,
                                "-s", lua], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True,
                               timeout=60)
            log.seek(0)
            self.assertEqual(r.returncode, 0,
                             "miltertest failed:\n%s\nmilter log:\n%s" %
                             (r.stdout, log.read()))
            self.assertIn(example + " ok", r.stdout)
        finally:
            p.terminate()
            p.wait(10)
            log.close()
        # the milter logged no error
        with open(os.path.join(self.tmp, example + ".log")) as fh:
            text = fh.read()
        self.assertNotIn("ERROR", text)

    def test_rcptcount(self):
        self.run_with("rcptcount", RCPTCOUNT)

    def test_external(self):
        self.run_with("external", EXTERNAL)

    def test_logip(self):
        self.run_with("logip", LOGIP)


if __name__ == "__main__":
    sys.exit(unittest.main(verbosity=2, exit=False).result.wasSuccessful()
             is False)
