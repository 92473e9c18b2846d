#!/usr/bin/env python3
"""Command-line conventions of milter-check and the examples (issue 13,
items 4 and 5): --help on stdout with exit 0, --version printing the
program and library versions, usage errors with exit 64 (milter-check) or 2
(examples), man pages that render without warnings, and the examples'
logging choices: stderr lines with <N> priority prefixes when JOURNAL_STREAM
names stderr, plain lines otherwise, --log-level, and --syslog (received on
a /dev/log of a private mount namespace; root only).

Needs the build tree in MF_BUILD_DIR (default ./build); exits 77 (SKIP)
when the programs are missing.
"""
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest

SRC = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("MF_BUILD_DIR") or os.path.join(SRC, "build")
CHECK = os.path.join(BUILD, "core", "tools", "milter-check")
EXAMPLES = ["external", "rcptcount", "logip"]
VERSION = re.search(r"project\(mailfilter VERSION ([0-9.]+)",
                    open(os.path.join(SRC, "CMakeLists.txt")).read()).group(1)


def ex(name):
    return os.path.join(BUILD, "examples", name)


def run(argv, **kw):
    p = subprocess.run(argv, capture_output=True, timeout=60, **kw)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def wait_socket(path, proc, seconds=15):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("exited with %s" % proc.returncode)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
            return
        except OSError:
            time.sleep(0.05)
        finally:
            s.close()
    raise RuntimeError("no socket %s" % path)


class Conventions(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="mf-cli-conv-")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def test_help_and_version(self):
        progs = [("milter-check", CHECK)] + \
            [("mailfilter-" + x, ex(x)) for x in EXAMPLES]
        for name, path in progs:
            rc, out, err = run([path, "--help"])
            self.assertEqual((rc, err), (0, ""), name)
            self.assertTrue(out.startswith("usage: %s " % name), out)
            self.assertIn("--version", out)
            rc, out, err = run([path, "--version"])
            self.assertEqual((rc, err), (0, ""), name)
            self.assertEqual(out, "%s (mailfilter) %s\nlibmfcore %s\n"
                             % (name, VERSION, VERSION))

    def test_usage_errors(self):
        rc, out, err = run([CHECK, "--version", "6", "unix:/nonexistent"])
        self.assertEqual((rc, out), (64, ""))
        self.assertIn("--protocol 6", err)
        for x in EXAMPLES:
            for args, needle in [([], "missing SOCKETSPEC"),
                                 (["--bogus", "unix:/x"], "--bogus"),
                                 (["--log-level", "loud", "unix:/x"], "loud"),
                                 (["--syslog=kern", "unix:/x"], "kern"),
                                 (["unix:/x", "unix:/y"], "too many")]:
                rc, out, err = run([ex(x)] + args)
                self.assertEqual((rc, out), (2, ""), (x, args))
                self.assertIn(needle, err, (x, args))
                self.assertEqual(err.count("\n"), 1, err)

    @unittest.skipUnless(shutil.which("groff"), "no groff")
    def test_man_pages_render(self):
        pages = [os.path.join(SRC, "core", "tools", "milter-check.1")] + \
            [os.path.join(SRC, "examples", "man", "mailfilter-%s.8" % x)
             for x in EXAMPLES]
        for page in pages:
            rc, out, err = run(["groff", "-man", "-Tutf8", "-ww", page])
            self.assertEqual((rc, err), (0, ""), page)
            text = open(page).read()
            name = os.path.basename(page)[:-2].replace("-", "\\-")
            self.assertIn(".TH %s %s " % (name.upper(), page[-1]), text)
            self.assertIn(".SH NAME\n%s \\- " % name, text)

    def test_quickstart_postfix_line(self):
        qs = os.path.join(SRC, "scripts", "quickstart.sh")
        for spec, line in [("inet:10025@127.0.0.1", "inet:127.0.0.1:10025"),
                           ("inet:2525@192.0.2.1", "inet:192.0.2.1:2525"),
                           ("inet:10026@0.0.0.0", "inet:127.0.0.1:10026"),
                           ("inet:10027", "inet:127.0.0.1:10027"),
                           ("inet6:10025@::1", "inet:[::1]:10025"),
                           ("unix:/run/f.sock", "unix:/run/f.sock"),
                           ("bogus", "")]:
            rc, out, err = run(["bash", qs, "--postfix-line", spec])
            self.assertEqual((rc, out, err), (0, line + "\n", ""), spec)

    def logip_lines(self, extra_env, args=(), stderr_path=None):
        """Start logip on a unix socket with stderr to a file, send it one
        connection with milter-check, stop it; return its stderr."""
        sock = os.path.join(self.tmp, "logip.sock")
        stderr_path = stderr_path or os.path.join(self.tmp, "stderr")
        env = dict(os.environ)
        env.pop("JOURNAL_STREAM", None)
        with open(stderr_path, "wb") as f:
            st = os.fstat(f.fileno())
            env.update({k: v(st) for k, v in extra_env.items()})
            p = subprocess.Popen([ex("logip")] + list(args) + ["unix:" + sock],
                                 stderr=f, env=env)
            try:
                wait_socket(sock, p)
                rc, out, err = run([CHECK, "--quiet", "unix:" + sock, "-"])
                self.assertEqual(rc, 0, err)
            finally:
                p.terminate()
                self.assertEqual(p.wait(30), 0)
        with open(stderr_path) as f:
            return f.read()

    def test_journal_prefixes(self):
        same = {"JOURNAL_STREAM": lambda st: "%d:%d" % (st.st_dev, st.st_ino)}
        text = self.logip_lines(same)
        self.assertRegex(text, r"(?m)^<6>logip: unix:\S*: client 127\.0\.0\.1 "
                               r"\[localhost\]$")
        lines = text.splitlines()
        self.assertTrue(lines and all(re.match(r"<[3467]>", l) for l in lines),
                        text)
        self.assertNotIn("mailfilter[", text)
        # debug lines get <7>
        text = self.logip_lines(same, ["--log-level", "debug"])
        self.assertRegex(text, r"(?m)^<7>")
        # another file's dev:ino (inherited variable, stderr redirected):
        # the plain format
        other = {"JOURNAL_STREAM": lambda st: "%d:%d" % (st.st_dev,
                                                          st.st_ino + 1)}
        for env in (other, {}):
            text = self.logip_lines(env)
            self.assertRegex(text, r"(?m)^mailfilter\[\d+\]: info: logip: "
                                   r"unix:\S*: client 127\.0\.0\.1 \[localhost\]$")
            self.assertNotRegex(text, r"(?m)^<\d>")
        # --log-level error: the info line is not written
        text = self.logip_lines({}, ["--log-level", "error"])
        self.assertNotIn("client", text)

    def test_syslog(self):
        if os.geteuid() != 0 or not shutil.which("unshare"):
            self.skipTest("needs root and unshare(1)")
        # In a private mount namespace, /dev is a fresh tmpfs whose "log"
        # is a link to our datagram socket: logip's syslog(3) writes there.
        rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        rxpath = os.path.join(self.tmp, "devlog")
        rx.bind(rxpath)
        rx.settimeout(60)
        sock = os.path.join(self.tmp, "logip.sock")
        script = ('mount -t tmpfs mf-test-dev /dev && ln -s "$1" /dev/log && '
                  'shift && exec "$@"')
        p = subprocess.Popen(["unshare", "-m", "--propagation", "private",
                              "sh", "-c", script, "sh", rxpath, ex("logip"),
                              "--syslog=local3", "unix:" + sock],
                             stderr=subprocess.PIPE)
        try:
            wait_socket(sock, p)
            rc, out, err = run([CHECK, "--quiet", "unix:" + sock, "-"])
            self.assertEqual(rc, 0, err)
            got = []
            while not any(" client " in g for g in got):
                got.append(rx.recv(4096).decode())
        finally:
            p.terminate()
            p.wait(30)
            rx.close()
        line = [g for g in got if " client " in g][0]
        # <PRI>TIMESTAMP mailfilter-logip[PID]: MSG, PRI = local3 | info
        self.assertRegex(line, r"^<158>.* mailfilter-logip\[%d\]: logip: "
                               r"unix:\S*: client 127\.0\.0\.1 \[localhost\]$"
                         % p.pid)
        self.assertEqual(p.stderr.read(), b"")
        p.stderr.close()


if __name__ == "__main__":
    if not all(os.access(x, os.X_OK) for x in [CHECK] + [ex(e) for e in EXAMPLES]):
        print("programs not built in %s: skipping" % BUILD)
        sys.exit(77)
    unittest.main()
