"""smtest -- a private, throw-away Sendmail for integration tests.

Python 3 standard library only; the Sendmail twin of pftest.py, whose
helpers it reuses (Milter, Client, SendResult, Delivery, message(), ...).
Debian's sendmail packages conflict with the postfix package, so nothing
is installed: the .debs are fetched with `apt-get download` into a cache
kept between runs ($SMTEST_CACHE, default /var/cache/mailfilter-tests/
sendmail/<version>), unpacked with `dpkg -x`, and the sendmail binary is
copied out to a plain (not setgid) file so that LD_LIBRARY_PATH works.

    import pftest, smtest
    with pftest.Milter([prog, "inet:%d@127.0.0.1" % port], ready_log=r"listening on") as m, \\
         smtest.Sendmail(milter="inet:%d@127.0.0.1" % port, flags="T") as sm:
        r = sm.send("a@test.example", ["b@test.example"], pftest.message())
        assert r.ok, r
        d = sm.wait_delivered("b@test.example")[0]     # pftest.Delivery
        sm.wait_queue(lambda q: q and q[0]["quarantine"])  # qf/hf files parsed
        sm.wait_log(r"Milter \\(mf\\)")

What an instance has
  sm.dir            the temp dir /tmp/smtest-<pid>-* (deleted on stop unless
                    keep=True or $SMTEST_KEEP is set)
  sm.cf_path        its sendmail.cf, generated with m4 from sendmail-cf's
                    files and the .mc next to it (sm.mc_path)
  sm.queue_dir, sm.out_dir (deliveries), sm.log_path (its syslog)
  sm.port           the daemon's port on 127.0.0.1 (a free one)
  sm.domain         "test.example"; local_domains (constructor) lists every
                    domain delivered to out_dir (default: test.example and
                    bücher.example in both forms); any other domain is
                    refused at RCPT (550): nothing leaves the machine.

How it runs: `unshare --pid --fork --uts --mount` around `sendmail -bD`
(daemon in the foreground), so that
  - the host name has a dot (Sendmail sleeps 60 s at start otherwise);
  - /dev is a private copy whose /dev/log is the harness's own socket: the
    log lands in sm.log_path (sm.log(), wait_log(), log_lines());
  - stopping the daemon (pid 1 of its namespace) ends every process it
    started, and the whole tree dies with the test process (PDEATHSIG).
Deliveries go through a mailer `deliver` (prog, one recipient per call)
running deliver.py as nobody: out_dir/<recipient>/<stamp>.eml + .json.
"""

import contextlib
import fcntl
import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import pftest  # noqa: E402

SKIP = pftest.SKIP
HarnessError = pftest.HarnessError
TMP_PREFIX = "smtest-"
HOSTNAME = "smtest.test.example"
PACKAGES = ["sendmail-bin", "sendmail-base", "sendmail-cf"]
# Explicit milter timeouts (connect; send; read; overall end of message).
DEFAULT_TIMEOUTS = "C:5s;S:10s;R:10s;E:30s"


def require_root():
    """Exit 77 (a ctest skip) unless we are root.  Everything else the
    harness needs (apt-get download, dpkg, m4, unshare) is expected to
    work: when it does not, the test fails."""
    if os.geteuid() != 0:
        print("SKIP: the Sendmail integration tests need root", file=sys.stderr)
        sys.exit(SKIP)


def main():
    """Entry point of a test script (like pftest.main)."""
    import unittest
    require_root()
    pftest.install_signal_handlers()
    unittest.main(module="__main__", verbosity=2)


# --------------------------------------------------------------------------
# the unpacked packages, cached between runs
# --------------------------------------------------------------------------

def _run(argv, cwd=None, timeout=300):
    r = subprocess.run(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=timeout)
    out = r.stdout.decode("utf-8", "replace")
    if r.returncode != 0:
        raise HarnessError("%s failed (%d):\n%s" % (" ".join(argv), r.returncode, out))
    return out


def _candidate_version():
    out = _run(["apt-cache", "policy", PACKAGES[0]])
    m = re.search(r"Candidate:\s*(\S+)", out)
    if not m or m.group(1) == "(none)":
        raise HarnessError("apt knows no %s (run apt-get update):\n%s" % (PACKAGES[0], out))
    return m.group(1)


def _installed(pkg):
    r = subprocess.run(["dpkg-query", "-W", "-f=${db:Status-Status}", pkg],
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    return r.stdout.strip() == b"installed"


def _libpath(root):
    return ":".join(glob.glob(os.path.join(root, "usr", "lib", "*-linux-gnu")) +
                    glob.glob(os.path.join(root, "lib", "*-linux-gnu")))


class Install:
    """Sendmail unpacked from Debian's packages: .root (the dpkg -x tree),
    .binary (a plain copy of the sendmail binary), .libpath (its
    LD_LIBRARY_PATH), .cf_dir (sendmail-cf's m4 tree), .version."""

    def __init__(self, d):
        self.dir = d
        self.root = os.path.join(d, "root")
        self.binary = os.path.join(d, "sendmail")
        self.cf_dir = os.path.join(self.root, "usr", "share", "sendmail", "cf")
        self.libpath = _libpath(self.root)
        with open(os.path.join(d, "version"), encoding="utf-8") as f:
            self.version = f.read().strip()

    def env(self):
        return {"LD_LIBRARY_PATH": self.libpath, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                "LANG": "C"}


_INSTALL = None


def install():
    """Fetch (once per version, under a lock) and unpack Sendmail; returns
    an Install.  Raises HarnessError when anything fails: the tests must
    not pass by skipping."""
    global _INSTALL
    if _INSTALL:
        return _INSTALL
    base = os.environ.get("SMTEST_CACHE") or "/var/cache/mailfilter-tests/sendmail"
    os.makedirs(base, exist_ok=True)
    version = _candidate_version()
    d = os.path.join(base, version)
    with open(os.path.join(base, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.exists(os.path.join(d, "version")):
            _fetch(d)
    _INSTALL = Install(d)
    return _INSTALL


def _fetch(d):
    shutil.rmtree(d, ignore_errors=True)
    debs = os.path.join(d, "debs")
    os.makedirs(debs)
    _run(["apt-get", "download", "-q"] + PACKAGES, cwd=debs)
    # The shared libraries sendmail-bin depends on (libwrap0, ...) that
    # this machine does not have go into the private root as well.
    bin_deb = glob.glob(os.path.join(debs, PACKAGES[0] + "_*.deb"))[0]
    deps = _run(["dpkg-deb", "-f", bin_deb, "Depends"])
    libs = [p.split()[0].split(":")[0] for alt in deps.split(",") for p in alt.split("|")[:1]]
    libs = [p for p in libs if p.startswith("lib") and not _installed(p)]
    if libs:
        _run(["apt-get", "download", "-q"] + libs, cwd=debs)
    root = os.path.join(d, "root")
    for deb in sorted(glob.glob(os.path.join(debs, "*.deb"))):
        _run(["dpkg", "-x", deb, root])
    # The packaged binary is setgid: the loader ignores LD_LIBRARY_PATH for it.
    binary = os.path.join(d, "sendmail")
    shutil.copyfile(os.path.join(root, "usr", "libexec", "sendmail", "sendmail"), binary)
    os.chmod(binary, 0o755)
    env = dict(LD_LIBRARY_PATH=_libpath(root), PATH="/usr/bin:/bin")
    # (in a namespace with a dotted host name, or it sleeps 60 s first)
    argv = ["unshare", "--uts", "sh", "-c", 'hostname "$0"; exec "$@"', HOSTNAME,
            binary, "-d0.1", "-bt", "-C", "/dev/null"]
    r = subprocess.run(argv, stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, timeout=60)
    out = r.stdout.decode("utf-8", "replace")
    m = re.search(r"Version (\S+)", out)
    if not m or "MILTER" not in out:
        raise HarnessError("unpacked sendmail does not run or lacks MILTER:\n%s" % out)
    # Written last: its presence means the cache entry is complete.
    with open(os.path.join(d, "version"), "w", encoding="utf-8") as f:
        f.write(m.group(1) + "\n")


# --------------------------------------------------------------------------
# the instance
# --------------------------------------------------------------------------

# Inside the namespaces: a dotted host name, a private /dev whose log is ours.
NS_SCRIPT = r"""
set -e
hostname "$1"; D="$2"; shift 2
for n in null zero full random urandom tty; do
  if [ -e /dev/$n ]; then : > "$D/dev/$n"; mount --bind /dev/$n "$D/dev/$n"; fi
done
mount --bind "$D/dev" /dev
exec "$@"
"""

MC = """\
divert(-1)
# written by smtest.py: a private Sendmail, nothing leaves the machine
divert(0)dnl
OSTYPE(`linux')dnl
{defines}\
FEATURE(`nocanonify')dnl
FEATURE(`no_default_msa')dnl
FEATURE(`accept_unresolvable_domains')dnl
FEATURE(`accept_unqualified_senders')dnl
DAEMON_OPTIONS(`Port={port}, Addr=127.0.0.1, Name=MTA')dnl
{milter}\
{domains}\
{extra}\
MAILER(`local')dnl
MAILER(`smtp')dnl
MAILER_DEFINITIONS
Mdeliver,	P={python}, F=lsnDFM8, S=EnvFromSMTP/HdrFromSMTP, U=nobody:nogroup,
		T=DNS/RFC822/SMTP, A=python3 {dir}/deliver.py {out} $i $g $u $u
LOCAL_RULE_0
R$+ < @ $=w . > $*	$#deliver $@ $2 $: $1 @ $2
R$+ < @ $=w > $*	$#deliver $@ $2 $: $1 @ $2
R$* < @ $* > $*		$#error $@ 5.1.2 $: "550 smtest: no mail leaves this instance"
R$+			$#deliver $@ localhost $: $1 @ localhost
"""


def sweep_stale(tmp=None):
    """Delete temp dirs left by test processes that died (their Sendmail
    died with them: PDEATHSIG), and stop the milters they left
    (pftest.sweep_stale)."""
    pftest.sweep_stale(tmp)
    tmp = tmp or tempfile.gettempdir()
    with contextlib.suppress(OSError):
        for n in os.listdir(tmp):
            m = re.match(re.escape(TMP_PREFIX) + r"(\d+)-", n)
            if m and int(m.group(1)) != os.getpid() and not pftest._alive(int(m.group(1))):
                shutil.rmtree(os.path.join(tmp, n), ignore_errors=True)


class Sendmail:
    """A private Sendmail daemon.  See the module docstring.

    milter: the X line's S= (e.g. "inet:10025@127.0.0.1"), None for none.
    flags: its F= ("T": tempfail when the milter fails, "R": reject, ""
    continue).  timeouts: its T= ("C:5s;S:10s;R:10s;E:30s" by default).
    defines: extra m4 defines {name: value} applied last (confLOG_LEVEL,
    confMILTER_MACROS_CONNECT...).  mc: extra .mc lines.  local_domains:
    the domains delivered to out_dir.  keep: do not delete the temp dir
    (also $SMTEST_KEEP=1)."""

    domain = "test.example"
    idn_domain = "bücher.example"
    idn_domain_ascii = "xn--bcher-kva.example"

    def __init__(self, milter=None, flags="T", timeouts=DEFAULT_TIMEOUTS, defines=None,
                 mc="", local_domains=None, keep=None):
        self.milter = milter
        self.flags = flags
        self.timeouts = timeouts
        self.defines = dict(defines or {})
        self.mc_extra = mc
        self.local_domains = list(local_domains or [self.domain, self.idn_domain,
                                                    self.idn_domain_ascii])
        self.keep = bool(os.environ.get("SMTEST_KEEP")) if keep is None else keep
        self.dir = None
        self.port = None
        self.proc = None
        self.pid = None  # the daemon, as seen from here
        self.install = None
        self._logsock = None
        self._logthread = None

    # ---- layout and configuration -----------------------------------------

    def _layout(self):
        self.dir = tempfile.mkdtemp(prefix="%s%d-" % (TMP_PREFIX, os.getpid()))
        os.chmod(self.dir, 0o755)  # nobody (deliver.py) must traverse it
        paths = {"etc_dir": "etc", "queue_dir": "queue", "out_dir": "out", "dev_dir": "dev",
                 "log_path": "maillog", "mc_path": "etc/smtest.mc",
                 "cf_path": "etc/sendmail.cf"}
        for attr, rel in paths.items():
            setattr(self, attr, os.path.join(self.dir, rel))
            if attr.endswith("_dir"):
                os.mkdir(getattr(self, attr), 0o700 if rel == "queue" else 0o755)
        uid, gid = pftest._pwnam("nobody")
        os.chown(self.out_dir, uid, gid)
        deliver = shutil.copy(os.path.join(HERE, "deliver.py"), self.dir)
        os.chmod(deliver, 0o755)
        os.symlink("/proc/self/fd", os.path.join(self.dev_dir, "fd"))
        e = self.etc_dir
        with open(os.path.join(e, "hosts"), "w") as f:
            f.write("127.0.0.1\tlocalhost %s\n" % HOSTNAME)
        with open(os.path.join(e, "service.switch"), "w") as f:
            f.write("hosts\tfiles\naliases\tfiles\n")
        for name in ("aliases", "statistics"):
            open(os.path.join(e, name), "w").close()

    def mc_defines(self):
        """The m4 defines of the .mc as a dict (defaults + defines)."""
        d, e = self.dir, self.etc_dir + "/"
        s = {
            "MAIL_SETTINGS_DIR": e,
            "confDOMAIN_NAME": HOSTNAME,
            "QUEUE_DIR": self.queue_dir,
            "confPID_FILE": os.path.join(d, "sendmail.pid"),
            "STATUS_FILE": e + "statistics",
            "ALIAS_FILE": e + "aliases",
            "confHOSTS_FILE": e + "hosts",
            "confSERVICE_SWITCH_FILE": e + "service.switch",
            "confDEAD_LETTER_DROP": os.path.join(d, "dead.letter"),
            "confHOST_STATUS_DIRECTORY": "",
            # no DNS: no search lists, no interface probing, no ident
            "confBIND_OPTS": "-DNSRCH -DEFNAMES",
            "confDONT_PROBE_INTERFACES": "True",
            "confTO_IDENT": "0s",
            # a busy CI machine must not make it queue instead of deliver
            "confQUEUE_LA": "1000",
            "confREFUSE_LA": "1000",
            "confDELAY_LA": "0",
            "confMIN_QUEUE_AGE": "0",
            "confEIGHT_BIT_HANDLING": "pass8",
            "confDEF_USER_ID": "nobody:nogroup",
            "confDONT_BLAME_SENDMAIL": "GroupWritableDirPathSafe",
            "confLOG_LEVEL": "14",
            "confMILTER_LOG_LEVEL": "14",
            "confPRIVACY_FLAGS": "authwarnings",
            # no SMTP AUTH offered (there is no SASL set-up behind it)
            "confAUTH_MECHANISMS": "",
        }
        s.update(self.defines)
        return s

    def mc_text(self):
        defines = "".join("define(`%s', `%s')dnl\n" % kv for kv in self.mc_defines().items())
        milter = ""
        if self.milter:
            spec = "S=%s, F=%s, T=%s" % (self.milter, self.flags or "", self.timeouts)
            milter = "INPUT_MAIL_FILTER(`mf', `%s')dnl\n" % spec
        domains = "".join("LOCAL_DOMAIN(`%s')dnl\n" % x for x in self.local_domains)
        extra = self.mc_extra + ("\n" if self.mc_extra and not self.mc_extra.endswith("\n") else "")
        return MC.format(defines=defines, port=self.port, milter=milter, domains=domains,
                         extra=extra, python=pftest.SYSTEM_PYTHON, dir=self.dir,
                         out=self.out_dir)

    def _write_config(self):
        with open(self.mc_path, "w", encoding="utf-8") as f:
            f.write(self.mc_text())
        cf = _run(["m4", "-D_CF_DIR_=%s/" % self.install.cf_dir,
                   os.path.join(self.install.cf_dir, "m4", "cf.m4"), self.mc_path])
        with open(self.cf_path, "w", encoding="utf-8") as f:
            f.write(cf)

    # ---- the log (syslog to our own /dev/log) -----------------------------

    def _start_log(self):
        path = os.path.join(self.dev_dir, "log")
        self._logsock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._logsock.bind(path)
        os.chmod(path, 0o666)
        self._logsock.settimeout(0.2)
        self._logstop = False
        logf = open(self.log_path, "ab", buffering=0)

        def pump():
            with logf:
                while not self._logstop:
                    try:
                        b = self._logsock.recv(65536)
                    except socket.timeout:
                        continue
                    except OSError:
                        return
                    # "<22>Dec  1 21:18:28 sm-mta[1]: ..." -> without <pri>
                    logf.write(re.sub(rb"^<\d+>", b"", b.rstrip(b"\0\n")) + b"\n")
        self._logthread = threading.Thread(target=pump, daemon=True)
        self._logthread.start()

    def _stop_log(self):
        if self._logthread:
            time.sleep(0.1)
            self._logstop = True
            self._logthread.join(5)
            self._logthread = None
        if self._logsock:
            self._logsock.close()
            self._logsock = None

    # ---- start / stop ------------------------------------------------------

    def start(self, timeout=30.0):
        if self.proc:
            return self
        sweep_stale()
        self.install = install()
        pftest._LIVE.append(self)
        self._layout()
        try:
            self.port = pftest.free_port()
            self._write_config()
            self._start_log()
            out = open(os.path.join(self.dir, "sendmail.out"), "ab")
            # setpriv --pdeathsig: unshare is killed when the test process
            # dies, and sendmail gets SIGTERM then (--kill-child).
            argv = ["setpriv", "--pdeathsig", "KILL",
                    "unshare", "--pid", "--fork", "--kill-child=SIGTERM", "--uts", "--mount",
                    "--propagation", "private", "sh", "-c", NS_SCRIPT, "sh", HOSTNAME, self.dir,
                    self.install.binary, "-C", self.cf_path, "-bD", "-q10s", "-L", "sm-mta"]
            with out:
                self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                             stderr=subprocess.STDOUT, env=self.install.env(),
                                             start_new_session=True)
            pftest.wait_for(lambda: pftest.tcp_listening(self.port) or self.proc.poll() is not None,
                            timeout, "sendmail to listen on port %d" % self.port)
            if self.proc.poll() is not None:
                raise HarnessError("sendmail exited (%s) at start:\n%s\n%s" % (
                    self.proc.returncode, self.output(), self.log()))
            self.pid = self._child_pid()
        except BaseException:
            self.stop()
            raise
        return self

    def _child_pid(self):
        with contextlib.suppress(OSError, ValueError, IndexError):
            with open("/proc/%d/task/%d/children" % (self.proc.pid, self.proc.pid)) as f:
                return int(f.read().split()[0])
        return None

    def stop(self):
        """Stop the daemon and everything it started (SIGTERM to sendmail,
        pid 1 of its namespace: its exit ends the namespace); delete the temp dir
        unless keep.  Safe to call twice and after a failed start."""
        if self.dir is None:
            return
        if self.proc:
            # unshare --fork ignores SIGTERM itself: signal the daemon.
            self.pid = self.pid or self._child_pid()
            if self.pid and self.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                for p in (self.pid, self.proc.pid):
                    with contextlib.suppress(ProcessLookupError, TypeError):
                        os.kill(p, signal.SIGKILL)
                self.proc.wait()
            self.proc = None
        self._stop_log()
        with contextlib.suppress(ValueError):
            pftest._LIVE.remove(self)
        if self.keep:
            sys.stderr.write("smtest: kept %s\n" % self.dir)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        if exc[0] is not None and self.dir:
            sys.stderr.write("---- sendmail log (%s) ----\n%s\n%s\n" % (
                self.dir, self.output(), self.log()))
        self.stop()

    def output(self):
        """What the daemon wrote to stdout/stderr (warnings at start)."""
        try:
            with open(os.path.join(self.dir, "sendmail.out"), "rb") as f:
                return f.read().decode("utf-8", "replace")
        except (OSError, TypeError):
            return ""

    # ---- SMTP, deliveries and the log: the same as pftest.Postfix's ------

    def client(self, helo="client.test.example", timeout=60):
        """A new SMTP connection (pftest.Client)."""
        return pftest.Client(self, helo=helo, timeout=timeout)

    send = pftest.Postfix.send
    deliveries = pftest.Postfix.deliveries
    wait_delivered = pftest.Postfix.wait_delivered
    all_deliveries = pftest.Postfix.all_deliveries
    log = pftest.Postfix.log

    def wait_log(self, regex, timeout=30.0, count=1):
        """Wait until regex has matched count times in the log; returns the
        last match (pftest.Postfix.wait_log)."""
        try:
            return pftest.Postfix.wait_log(self, regex, timeout, count)
        except HarnessError as e:
            raise HarnessError(str(e).replace("Postfix log", "Sendmail log")) from None

    log_lines = pftest.Postfix.log_lines

    # ---- the queue -----------------------------------------------------------

    def queue(self):
        """Every queued message, parsed from its queue file: a list of
        dicts with queue_id, kind ("qf" queued, "hf" quarantined, "Qf"
        lost, "tf" being written), quarantine (the q line's reason, or
        None), sender, recipients [addresses], headers [(name, value)],
        path.  The quarantine/hold queue is the same directory: Sendmail
        renames qf to hf."""
        out = []
        with contextlib.suppress(OSError):
            for n in sorted(os.listdir(self.queue_dir)):
                if n[:2] in ("qf", "hf", "Qf") and len(n) > 2:
                    with contextlib.suppress(OSError):
                        out.append(self._parse_qf(os.path.join(self.queue_dir, n)))
        return out

    @staticmethod
    def _parse_qf(path):
        with open(path, "rb") as f:
            text = f.read().decode("utf-8", "replace")
        name = os.path.basename(path)
        q = {"queue_id": name[2:], "kind": name[:2], "quarantine": None, "sender": None,
             "recipients": [], "headers": [], "path": path, "text": text}
        for line in text.split("\n"):
            if line[:1] in ("\t", " ") and q["headers"]:
                n, v = q["headers"][-1]
                q["headers"][-1] = (n, v + "\n" + line)
            elif line.startswith("q"):
                q["quarantine"] = line[1:]
            elif line.startswith("S"):
                q["sender"] = line[1:].strip("<>")
            elif line.startswith("R"):
                q["recipients"].append(line[1:].split(":", 1)[-1].strip("<>"))
            elif line.startswith("H") and ":" in line:
                # H?flags?Name: value
                h = re.sub(r"^H(\?[^?]*\?)?", "", line)
                n, v = h.split(":", 1)
                q["headers"].append((n, v))
        return q

    def quarantined(self):
        return [m for m in self.queue() if m["quarantine"] is not None]

    def wait_queue(self, pred=lambda q: bool(q), timeout=30.0, what="queue"):
        """Wait until pred(queue()) is true; returns the queue list."""
        def ok():
            q = self.queue()
            return q if pred(q) else None
        return pftest.wait_for(ok, timeout, what, interval=0.1)

    def queue_file(self, queue_id):
        """The data file (df) of a queued message: its body, bytes."""
        with open(os.path.join(self.queue_dir, "df" + queue_id), "rb") as f:
            return f.read()
