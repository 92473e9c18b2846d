"""pftest -- a private, throw-away Postfix instance for integration tests.

Python 3 standard library only.  Everything lives in one temporary
directory; the system Postfix (/etc/postfix, port 25, /var/spool/postfix) is
never touched, and two instances can run at the same time.

    import pftest
    pftest.require_root()                       # exit 77 (ctest SKIP) if not root
    with pftest.Milter([logip, "inet:%d@127.0.0.1" % port],
                       ready_log=r"listening on") as m, \\
         pftest.Postfix(milter="inet:127.0.0.1:%d" % port,
                        main={"milter_default_action": "tempfail"}) as pf:
        r = pf.send("a@test.example", ["b@test.example"], pftest.message())
        assert r.ok, r
        got = pf.wait_delivered("b@test.example")
        assert got[0].body == ...
        pf.wait_log(r"status=sent")
        m.wait_log(r"client 127\\.0\\.0\\.1")

What an instance has
  pf.dir            the temp dir (deleted on stop unless keep=True or
                    $PFTEST_KEEP is set)
  pf.config_dir     main.cf + master.cf written by the harness
  pf.queue_dir, pf.data_dir, pf.out_dir (deliveries), pf.log_path
  pf.port           smtpd's port on 127.0.0.1 (a free one)
  pf.domain         "test.example" (local: delivered to out_dir)
  pf.idn_domain     "bücher.example" (also local, in both U- and A-label form)

Delivery: every recipient in a local domain is handed to a pipe(8) transport
running deliver.py as nobody, one recipient per delivery; each message lands
in out_dir/<recipient lower-cased>/<stamp>.eml (+ .json with the envelope).
Nothing ever leaves the machine: default/relay transports are error(8).
"""

import atexit
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
POSTFIX = shutil.which("postfix", path="/usr/sbin:/usr/bin:/sbin:/bin") or "/usr/sbin/postfix"
POSTQUEUE = shutil.which("postqueue", path="/usr/sbin:/usr/bin") or "/usr/sbin/postqueue"
POSTCAT = shutil.which("postcat", path="/usr/sbin:/usr/bin") or "/usr/sbin/postcat"
POSTSUPER = shutil.which("postsuper", path="/usr/sbin:/usr/bin") or "/usr/sbin/postsuper"
SENDMAIL = shutil.which("sendmail", path="/usr/sbin:/usr/lib") or "/usr/sbin/sendmail"
POSTCONF = shutil.which("postconf", path="/usr/sbin:/usr/bin") or "/usr/sbin/postconf"
# deliver.py runs as nobody under pipe(8): use the system interpreter, not a
# per-user one (pyenv shims live under /root).
SYSTEM_PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable

SKIP = 77  # ctest SKIP_RETURN_CODE

# How Postfix names an SMTP client on loopback in its log: NAME[127.0.0.1],
# where NAME is whatever 127.0.0.1 resolves to -- "localhost" on most hosts,
# "unknown" where /etc/hosts does not map it.  Tests match with this, never
# with a fixed name.
LOOPBACK_CLIENT = r"[^\s\[]*\[127\.0\.0\.1\]"
# The host name a milter is given for that client ("localhost", or
# "[127.0.0.1]" when Postfix found none).
LOOPBACK_HOSTNAME = r"\S+"


class HarnessError(Exception):
    pass


# Everything started and not yet stopped, stopped at exit whatever happens
# (exceptions, sys.exit, SIGTERM/SIGHUP/SIGINT through main()).
_LIVE = []


_SESSION = None


def session_dir():
    """A temp dir for this test process (milter logs, scratch files),
    removed at exit unless $PFTEST_KEEP."""
    global _SESSION
    if _SESSION is None:
        _SESSION = tempfile.mkdtemp(prefix="%s%d-session-" % (TMP_PREFIX, os.getpid()))
        os.chmod(_SESSION, 0o755)
    return _SESSION


def _stop_all():
    for obj in reversed(list(_LIVE)):
        with contextlib.suppress(Exception):
            obj.stop()
    if _SESSION and not os.environ.get("PFTEST_KEEP"):
        shutil.rmtree(_SESSION, ignore_errors=True)


atexit.register(_stop_all)


def _on_signal(signum, frame):
    # Unwind through the finally/with blocks (they stop what they started).
    raise SystemExit(128 + signum)


def install_signal_handlers():
    """Turn SIGTERM/SIGHUP into SystemExit so that a killed test (ctest
    timeout) still stops its Postfix and milters.  SIGINT already raises
    KeyboardInterrupt."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)


TMP_PREFIX = "pftest-"


def sweep_stale(tmp=None):
    """Stop and delete instances left behind by test processes that died
    without cleaning up (SIGKILL): temp dirs named pftest-<pid>-* whose pid
    is gone."""
    tmp = tmp or tempfile.gettempdir()
    try:
        names = os.listdir(tmp)
    except OSError:
        return
    for n in names:
        m = re.match(re.escape(TMP_PREFIX) + r"(\d+)-", n)
        if not m or int(m.group(1)) == os.getpid() or _alive(int(m.group(1))):
            continue
        d = os.path.join(tmp, n)
        cfg = os.path.join(d, "etc")
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = _pids_with_env("MAIL_CONFIG", cfg) + _pids_with_env("PFTEST_SESSION", d)
            for p in pids:
                with contextlib.suppress(OSError):
                    os.kill(p, sig)
            if pids:
                time.sleep(0.5)
        shutil.rmtree(d, ignore_errors=True)


def _pids_with_env(name, value):
    """Processes whose environment holds name=value (Postfix passes
    MAIL_CONFIG=<config_dir> to every process of an instance)."""
    key = ("%s=%s" % (name, value)).encode()
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit() or int(p) == os.getpid():
            continue
        try:
            with open("/proc/%s/environ" % p, "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if key in env:
            out.append(int(p))
    return out


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

def require_root():
    """Exit 77 (a ctest skip) unless we are root and Postfix is installed."""
    if os.geteuid() != 0:
        print("SKIP: the Postfix integration tests need root", file=sys.stderr)
        sys.exit(SKIP)
    if not os.path.exists(POSTFIX):
        print("SKIP: postfix is not installed", file=sys.stderr)
        sys.exit(SKIP)


def build_dir():
    """The CMake build dir ($MF_BUILD_DIR, set by ctest; else ./build)."""
    d = os.environ.get("MF_BUILD_DIR")
    if not d:
        d = os.path.join(HERE, "..", "..", "build")
    return os.path.abspath(d)


def build_artifact(*parts):
    """Path of a built program, e.g. build_artifact("examples", "logip");
    raises HarnessError if it has not been built."""
    p = os.path.join(build_dir(), *parts)
    if not os.access(p, os.X_OK):
        raise HarnessError("not built: %s (set MF_BUILD_DIR)" % p)
    return p


def data_path(*parts):
    """A file under tests/data/integration ($MF_TEST_DATA/integration when
    set by ctest)."""
    base = os.environ.get("MF_TEST_DATA") or os.path.join(HERE, "..", "data")
    return os.path.join(os.path.abspath(base), "integration", *parts)


def read_data(*parts):
    with open(data_path(*parts), "rb") as f:
        return f.read()


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10.0, host="127.0.0.1"):
    """Wait until something accepts TCP connections on host:port."""
    end = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            if time.monotonic() > end:
                raise HarnessError("nothing listens on %s:%d after %.0fs"
                                   % (host, port, timeout))
            time.sleep(0.05)


# /proc/net/tcp state codes
TCP_CLOSE_WAIT, TCP_LISTEN = "08", "0A"


def tcp_sockets(port, host="127.0.0.1"):
    """The IPv4 sockets bound to host:port, read from /proc/net/tcp (nothing
    connects): a list of (remote port, state), state a TCP_* code above --
    e.g. a milter's accepted connections are in TCP_CLOSE_WAIT once the MTA
    has closed its end."""
    want = "%s:%04X" % ("".join("%02X" % int(b) for b in reversed(host.split("."))), port)
    out = []
    try:
        with open("/proc/net/tcp") as f:
            for line in f.readlines()[1:]:
                p = line.split()
                if len(p) > 3 and p[1] == want:
                    out.append((int(p[2].rsplit(":", 1)[1], 16), p[3]))
    except OSError:
        pass
    return out


def tcp_listening(port, host="127.0.0.1"):
    """True if a socket listens on host:port (IPv4), read from
    /proc/net/tcp so that nothing connects to it."""
    return any(st == TCP_LISTEN for _, st in tcp_sockets(port, host))


def wait_for(pred, timeout, what, interval=0.05):
    """Poll pred() until it returns a true value (returned) or time is up."""
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > end:
            raise HarnessError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)


def message(subject="pftest", body="Hello.\nSecond line.\n", headers=None,
            sender="sender@test.example", to="rcpt@test.example",
            message_id=None):
    """A small RFC 5322 message as bytes with LF line ends (smtplib sends
    CRLF).  headers: extra (name, value) pairs, appended after the standard
    ones.  body may be str (UTF-8) or bytes."""
    if message_id is None:
        message_id = "<%d.%d@pftest.test.example>" % (time.time_ns(), os.getpid())
    hs = [("From", sender), ("To", to), ("Subject", subject),
          ("Message-ID", message_id),
          ("Date", time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime()))]
    hs += list(headers or [])
    head = "".join("%s: %s\n" % (n, v) for n, v in hs).encode("utf-8")
    if isinstance(body, str):
        body = body.encode("utf-8")
    return head + b"\n" + body


def split_message(data):
    """(headers, body) of raw message bytes: headers as a list of
    (name, value) with folding kept, body as bytes.  LF or CRLF."""
    data = data.replace(b"\r\n", b"\n")
    head, sep, body = data.partition(b"\n\n")
    if not sep:
        head, body = data, b""
    fields = []
    for line in head.split(b"\n"):
        if line[:1] in (b" ", b"\t") and fields:
            n, v = fields[-1]
            fields[-1] = (n, v + "\n" + line.decode("utf-8", "replace"))
        elif b":" in line:
            n, v = line.split(b":", 1)
            fields.append((n.decode("utf-8", "replace"),
                           v.decode("utf-8", "replace")))
    return fields, body


class Delivery:
    """One delivered message: .raw bytes, .headers [(name, value)], .body
    bytes (LF line ends, as pipe(8) writes them), .envelope dict
    (queue_id, sender, original_recipient, recipient, size), .path."""

    def __init__(self, path):
        self.path = path
        with open(path, "rb") as f:
            self.raw = f.read()
        with open(path[:-4] + ".json", encoding="utf-8") as f:
            self.envelope = json.load(f)
        self.headers, self.body = split_message(self.raw)

    def header(self, name):
        """Values of every header called name (case-insensitive), in order,
        without the first leading space."""
        out = []
        for n, v in self.headers:
            if n.lower() == name.lower():
                out.append(v[1:] if v.startswith(" ") else v)
        return out

    def __repr__(self):
        return "<Delivery %s %r>" % (self.envelope.get("queue_id"),
                                     self.envelope.get("recipient"))


class SendResult:
    """Outcome of one SMTP transaction.  .ok: message accepted for delivery.
    .stage: where it ended ("connect", "helo", "mail", "rcpt", "data", "done").
    .code/.text: the last SMTP reply (text decoded, lines joined by "\\n").
    .refused: {rcpt: (code, text)} for refused recipients.
    .replies: [(command, code, text)] for every command sent."""

    def __init__(self):
        self.ok = False
        self.stage = "connect"
        self.code = None
        self.text = ""
        self.refused = {}
        self.replies = []

    def __repr__(self):
        return "<SendResult ok=%s stage=%s %s %r refused=%r>" % (
            self.ok, self.stage, self.code, self.text, self.refused)


def _txt(b):
    return b.decode("utf-8", "replace") if isinstance(b, bytes) else str(b)


class Client:
    """One SMTP connection to the instance (several transactions, RSET,
    SMTPUTF8).  Wraps smtplib.SMTP (.smtp) and never raises on an SMTP
    error reply: every step returns (code, text).  Use as a context manager
    or call close()."""

    def __init__(self, pf, helo="client.test.example", timeout=60):
        self.pf = pf
        self.smtp = smtplib.SMTP(timeout=timeout)
        code, text = self.smtp.connect("127.0.0.1", pf.port)
        self.banner = (code, _txt(text))
        self.ehlo_reply = None
        if code == 220:
            c, t = self.smtp.ehlo(helo)
            self.ehlo_reply = (c, _txt(t))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        try:
            self.smtp.quit()
        except (smtplib.SMTPException, OSError):
            self.smtp.close()

    def has_ext(self, name):
        return self.smtp.has_extn(name)

    @staticmethod
    def _reply(fn, *args):
        """(code, text) of one smtplib call; (None, why) if the server hung
        up, (code, text) of an SMTPResponseException (e.g. DATA refused)."""
        try:
            c, t = fn(*args)
        except smtplib.SMTPResponseException as e:
            return e.smtp_code, _txt(e.smtp_error)
        except smtplib.SMTPServerDisconnected as e:
            return (None, str(e))
        return c, _txt(t)

    def mail(self, sender, options=()):
        return self._reply(self.smtp.mail, sender, list(options))

    def rcpt(self, rcpt, options=()):
        return self._reply(self.smtp.rcpt, rcpt, list(options))

    def data(self, msg, raw=False):
        """Send DATA + the message (bytes or str, UTF-8; dots are stuffed).
        Bare LF line ends become CRLF unless raw (smtplib converts str but
        sends bytes as they are).  Returns the final reply (or the reply to
        DATA when that was not 354)."""
        if isinstance(msg, str):
            msg = msg.encode("utf-8")
        if not raw:
            msg = re.sub(rb"\r?\n", b"\r\n", msg)
        return self._reply(self.smtp.data, msg)

    def rset(self):
        return self._reply(self.smtp.rset)

    def command(self, line):
        """Any SMTP command (e.g. "NOOP", "VRFY x"): (code, text)."""
        return self._reply(self.smtp.docmd, line)

    def send(self, sender, rcpts, msg, mail_options=(), rcpt_options=()):
        """One transaction: MAIL, each RCPT, DATA.  Returns a SendResult;
        after a failure the transaction is RSET (if the connection lives) so
        that the connection can carry on."""
        r = SendResult()
        if isinstance(rcpts, str):
            rcpts = [rcpts]
        r.stage = "mail"
        r.code, r.text = self.mail(sender, mail_options)
        r.replies.append(("MAIL", r.code, r.text))
        if r.code != 250:
            self._reset_after_failure()
            return r
        r.stage = "rcpt"
        accepted = 0
        for rc in rcpts:
            c, t = self.rcpt(rc, rcpt_options)
            r.replies.append(("RCPT", c, t))
            if c in (250, 251):
                accepted += 1
            else:
                r.refused[rc] = (c, t)
                r.code, r.text = c, t
                if c is None:
                    return r
        if not accepted:
            self._reset_after_failure()
            return r
        r.stage = "data"
        r.code, r.text = self.data(msg)
        r.replies.append(("DATA", r.code, r.text))
        if r.code == 250:
            r.ok = True
            r.stage = "done"
        else:
            self._reset_after_failure()
        return r

    def _reset_after_failure(self):
        try:
            self.smtp.rset()
        except (smtplib.SMTPException, OSError):
            pass


# --------------------------------------------------------------------------
# a milter (or any helper) process
# --------------------------------------------------------------------------

class Milter:
    """A milter process started from an argv list; stdout and stderr go to
    one log file (.log_path, read with .log()).  ready_log: a regex that
    must appear in its output before start() returns; ready_port: a
    127.0.0.1 port to see listening (without connecting to it).  Stopped with SIGTERM (then SIGKILL after
    stop_timeout) on stop() / context exit.  .returncode after stop().
    wrap: run it under $PFTEST_WRAPPER if set (valgrind, strace...): pass
    wrap=True for our own programs, not for the reference milter."""

    def __init__(self, argv, ready_log=None, ready_port=None, env=None,
                 log_path=None, start_timeout=10.0, stop_timeout=10.0,
                 wrap=False):
        self.argv = [str(a) for a in argv]
        if wrap and os.environ.get("PFTEST_WRAPPER"):
            # e.g. PFTEST_WRAPPER="valgrind -q --error-exitcode=99 --leak-check=full"
            self.argv = shlex.split(os.environ["PFTEST_WRAPPER"]) + self.argv
            start_timeout *= 3
            stop_timeout *= 3
        self.ready_log = ready_log
        self.ready_port = ready_port
        self.env = env
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._own_log = log_path is None
        if log_path is None:
            fd, log_path = tempfile.mkstemp(prefix="milter-", suffix=".log",
                                            dir=session_dir())
            os.close(fd)
        self.log_path = log_path
        self.proc = None
        self.returncode = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
        if exc[0] is not None:
            sys.stderr.write("---- milter log (%s) ----\n%s\n" % (
                " ".join(self.argv), self.log()))
        if self._own_log:
            with contextlib.suppress(OSError):
                os.unlink(self.log_path)

    def start(self):
        env = dict(os.environ)
        # Marks the process as ours for sweep_stale() if we die unclean.
        env["PFTEST_SESSION"] = session_dir()
        if self.env:
            env.update(self.env)
        logf = open(self.log_path, "ab")
        _LIVE.append(self)
        try:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                         stdout=logf, stderr=subprocess.STDOUT,
                                         env=env, start_new_session=True)
        finally:
            logf.close()
        try:
            end = time.monotonic() + self.start_timeout
            if self.ready_log:
                rx = re.compile(self.ready_log)
                while not rx.search(self.log()):
                    if self.proc.poll() is not None:
                        raise HarnessError("milter exited (%s) before ready:\n%s"
                                           % (self.proc.returncode, self.log()))
                    if time.monotonic() > end:
                        raise HarnessError("milter not ready after %.0fs:\n%s"
                                           % (self.start_timeout, self.log()))
                    time.sleep(0.02)
            if self.ready_port:
                wait_for(lambda: tcp_listening(self.ready_port) or self.proc.poll() is not None,
                         max(0.5, end - time.monotonic()), "milter to listen on %d" % self.ready_port)
                if self.proc.poll() is not None:
                    raise HarnessError("milter exited (%s) before ready:\n%s"
                                       % (self.proc.returncode, self.log()))
        except BaseException:
            self.stop()
            raise
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def fds(self):
        """The process's open file descriptors: {fd number: what it points
        to} from /proc/PID/fd ("socket:[123]", "/dir/#45 (deleted)"...)."""
        d = "/proc/%d/fd" % self.proc.pid
        out = {}
        for n in os.listdir(d):
            with contextlib.suppress(OSError):  # closed meanwhile
                out[int(n)] = os.readlink(os.path.join(d, n))
        return out

    def stop(self, sig=signal.SIGTERM):
        if self.proc is None:
            return self.returncode
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)
            try:
                self.proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.returncode = self.proc.returncode
        self.proc = None
        with contextlib.suppress(ValueError):
            _LIVE.remove(self)
        return self.returncode

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def wait_log(self, regex, timeout=10.0):
        """Wait until regex matches the milter's output; returns the match."""
        rx = re.compile(regex)
        return wait_for(lambda: rx.search(self.log()), timeout,
                        "/%s/ in the milter log" % regex)


def pymilter_python():
    """An interpreter that can `import Milter` (python3-milter), or None."""
    for py in (sys.executable, "/usr/bin/python3"):
        if py and os.path.exists(py):
            r = subprocess.run([py, "-c", "import Milter"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if r.returncode == 0:
                return py
    return None


# --------------------------------------------------------------------------
# the Postfix instance
# --------------------------------------------------------------------------

MASTER_CF = """\
# master.cf written by pftest.py -- a private instance, nothing chrooted.
# service type  private unpriv  chroot  wakeup  maxproc command + args
{port}    inet  n       -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
deliver   unix  -       n       n       -       -       pipe
  user=nobody argv={python} {dir}/deliver.py {out} ${{queue_id}} ${{sender}} ${{original_recipient}} ${{recipient}}
"""


class Postfix:
    """A private Postfix instance.  See the module docstring.

    milter: smtpd_milters value (e.g. "inet:127.0.0.1:10025"), None for
    none.  main: extra main.cf settings {name: value} applied last (they
    win over the defaults, e.g. milter_default_action,
    milter_command_timeout, non_smtpd_milters).  keep: do not delete the
    temp dir (also $PFTEST_KEEP=1)."""

    domain = "test.example"
    idn_domain = "bücher.example"
    idn_domain_ascii = "xn--bcher-kva.example"

    def __init__(self, milter=None, main=None, keep=None, name=None):
        self.milter = milter
        self.extra = dict(main or {})
        self.keep = bool(os.environ.get("PFTEST_KEEP")) if keep is None else keep
        self.name = name or "pftest%d-%d" % (os.getpid(), time.monotonic_ns() % 100000)
        self.dir = None
        self.port = None
        self.running = False

    # ---- layout --------------------------------------------------------

    def _layout(self):
        self.dir = tempfile.mkdtemp(prefix="%s%d-" % (TMP_PREFIX, os.getpid()))
        os.chmod(self.dir, 0o755)  # nobody (deliver.py) must traverse it
        self.config_dir = os.path.join(self.dir, "etc")
        self.queue_dir = os.path.join(self.dir, "spool")
        self.data_dir = os.path.join(self.dir, "lib")
        self.out_dir = os.path.join(self.dir, "out")
        self.log_path = os.path.join(self.dir, "maillog")
        for d in (self.config_dir, self.queue_dir, self.out_dir):
            os.mkdir(d, 0o755)
        os.mkdir(self.data_dir, 0o700)
        st = _pwnam("postfix")
        os.chown(self.data_dir, st[0], st[1])
        nobody = _pwnam("nobody")
        os.chown(self.out_dir, nobody[0], nobody[1])
        shutil.copy(os.path.join(HERE, "deliver.py"), os.path.join(self.dir, "deliver.py"))
        os.chmod(os.path.join(self.dir, "deliver.py"), 0o755)

    def main_cf(self):
        """The main.cf settings as a dict (defaults + milter + extra)."""
        d = self.dir
        s = {
            "compatibility_level": "3.6",
            "config_directory": self.config_dir,
            "queue_directory": self.queue_dir,
            "data_directory": self.data_dir,
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "syslog_name": self.name,
            "maillog_file": self.log_path,
            "maillog_file_prefixes": d,
            "myhostname": "%s.test.example" % self.name,
            "mydomain": "test.example",
            "myorigin": "$myhostname",
            "mydestination": "%s, %s, %s, $myhostname, localhost"
                             % (self.domain, self.idn_domain, self.idn_domain_ascii),
            "local_transport": "deliver",
            "local_recipient_maps": "",
            "deliver_destination_recipient_limit": "1",
            "default_transport": "error:pftest: no mail leaves this instance",
            "relay_transport": "error:pftest: no mail leaves this instance",
            "relay_domains": "",
            "alias_maps": "",
            "alias_database": "",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
            "smtpd_banner": "$myhostname ESMTP pftest",
            "smtputf8_enable": "yes",
            "biff": "no",
            "append_dot_mydomain": "no",
            "in_flow_delay": "0s",
            "delay_warning_time": "0",
            "queue_run_delay": "10s",
            "minimal_backoff_time": "10s",
            "maximal_backoff_time": "20s",
            "smtpd_error_sleep_time": "0",
            "smtpd_soft_error_limit": "100",
            "smtpd_hard_error_limit": "200",
            "readme_directory": "no",
            "html_directory": "no",
            "milter_protocol": "6",
            "milter_default_action": "tempfail",
            "milter_connect_timeout": "10s",
        }
        if self.milter:
            s["smtpd_milters"] = self.milter
            s["non_smtpd_milters"] = "$smtpd_milters"
        s.update(self.extra)
        return s

    def _write_config(self):
        with open(os.path.join(self.config_dir, "main.cf"), "w", encoding="utf-8") as f:
            f.write("# main.cf written by pftest.py\n")
            for k, v in self.main_cf().items():
                f.write("%s = %s\n" % (k, v))
        with open(os.path.join(self.config_dir, "master.cf"), "w", encoding="utf-8") as f:
            f.write(MASTER_CF.format(port="127.0.0.1:%d" % self.port, python=SYSTEM_PYTHON,
                                     dir=self.dir, out=self.out_dir))
        # Postfix re-reads a config file that changed very recently, in case
        # it is still being edited (load_file(3): 300 ms steps, ~2 s for
        # every command).  Back-date them.
        old = time.time() - 60
        for name in ("main.cf", "master.cf"):
            os.utime(os.path.join(self.config_dir, name), (old, old))

    # ---- commands --------------------------------------------------------

    def run(self, argv, check=True, input=None, timeout=60):
        """Run a Postfix command with this instance's config (MAIL_CONFIG in
        the environment as well as -c by the caller).  Returns
        CompletedProcess with text stdout/stderr."""
        env = dict(os.environ, MAIL_CONFIG=self.config_dir)
        r = subprocess.run(argv, input=input, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, env=env, timeout=timeout)
        r.stdout = r.stdout.decode("utf-8", "replace")
        r.stderr = r.stderr.decode("utf-8", "replace")
        if check and r.returncode != 0:
            raise HarnessError("%s failed (%d):\n%s%s" % (" ".join(argv), r.returncode,
                                                          r.stdout, r.stderr))
        return r

    def postconf(self, *args):
        """postconf -c DIR ARGS...; returns stdout."""
        return self.run([POSTCONF, "-c", self.config_dir] + list(args)).stdout

    def start(self, timeout=30.0):
        if self.running:
            return self
        sweep_stale()
        _LIVE.append(self)
        self._layout()
        try:
            self.port = free_port()
            self._write_config()
            self.run([POSTFIX, "-c", self.config_dir, "start"], timeout=timeout)
            self.running = True
            # `postfix start` returns once master has initialised (master -w),
            # so its listeners exist; its "daemon started" line may reach
            # maillog_file a second later (postlogd is started on demand).
            # No probe connection: with a milter configured it would show
            # up as an SMTP client in the milter's log.
            wait_for(lambda: tcp_listening(self.port), timeout,
                     "smtpd to listen on port %d" % self.port)
        except BaseException:
            self.stop()
            raise
        return self

    def reload(self, main=None):
        """Change main.cf settings (merged into the current extra ones) and
        `postfix reload`.  New smtpd processes pick them up."""
        if main:
            self.extra.update(main)
        self._write_config()
        n = self.log().count("reload -- version")
        self.run([POSTFIX, "-c", self.config_dir, "reload"])
        wait_for(lambda: self.log().count("reload -- version") > n, 10, "postfix reload")

    def _master_pid(self):
        try:
            with open(os.path.join(self.queue_dir, "pid", "master.pid")) as f:
                return int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def _instance_pids(self):
        """Every process started for this instance."""
        return _pids_with_env("MAIL_CONFIG", self.config_dir)

    def stop(self):
        """Stop the instance (postfix stop, then kill leftovers) and delete
        the temp dir unless keep.  Safe to call twice and after a failed
        start."""
        if self.dir is None:
            return
        if os.path.exists(os.path.join(self.config_dir, "main.cf")):
            pid = self._master_pid()
            with contextlib.suppress(Exception):
                self.run([POSTFIX, "-c", self.config_dir, "stop"], check=False, timeout=30)
            if pid:
                with contextlib.suppress(HarnessError):
                    wait_for(lambda: not _alive(pid), 10, "master to exit")
            for sig in (signal.SIGTERM, signal.SIGKILL):
                pids = self._instance_pids()
                if not pids:
                    break
                for p in pids:
                    with contextlib.suppress(OSError):
                        os.kill(p, sig)
                with contextlib.suppress(HarnessError):
                    wait_for(lambda: not any(_alive(p) for p in pids), 3, "leftovers")
        self.running = False
        with contextlib.suppress(ValueError):
            _LIVE.remove(self)
        if self.keep:
            sys.stderr.write("pftest: kept %s\n" % self.dir)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        if exc[0] is not None and self.dir:
            sys.stderr.write("---- postfix log (%s) ----\n%s\n" % (self.dir, self.log()))
        self.stop()

    # ---- SMTP ------------------------------------------------------------

    def client(self, helo="client.test.example", timeout=60):
        """A new SMTP connection (Client)."""
        return Client(self, helo=helo, timeout=timeout)

    def send(self, sender, rcpts, msg, mail_options=(), rcpt_options=(), helo=None):
        """One message on its own connection; returns a SendResult.  The
        connect/EHLO outcome is checked too (a milter may refuse those)."""
        c = Client(self, helo=helo or "client.test.example")
        try:
            if c.banner[0] != 220 or not c.ehlo_reply or c.ehlo_reply[0] != 250:
                r = SendResult()
                r.stage = "connect" if c.banner[0] != 220 else "helo"
                r.code, r.text = c.ehlo_reply or c.banner
                return r
            return c.send(sender, rcpts, msg, mail_options, rcpt_options)
        finally:
            c.close()

    def submit(self, sender, rcpts, msg, args=()):
        """Local submission with sendmail(1) -C DIR (pickup -> cleanup: the
        non_smtpd_milters path).  msg: bytes (LF line ends).  Returns the
        CompletedProcess (returncode 0 = queued)."""
        if isinstance(rcpts, str):
            rcpts = [rcpts]
        argv = [SENDMAIL, "-C", self.config_dir, "-f", sender, "-i"] + list(args) + ["--"] + list(rcpts)
        return self.run(argv, check=False, input=msg)

    # ---- results ---------------------------------------------------------

    def deliveries(self, rcpt):
        """Every message delivered so far to rcpt (oldest first)."""
        d = os.path.join(self.out_dir, rcpt.lower().replace("/", "%2F"))
        try:
            names = sorted(n for n in os.listdir(d) if n.endswith(".eml"))
        except FileNotFoundError:
            return []
        return [Delivery(os.path.join(d, n)) for n in names]

    def wait_delivered(self, rcpt, count=1, timeout=30.0):
        """Wait until at least count messages were delivered to rcpt;
        returns the list of Deliveries."""
        def ready():
            got = self.deliveries(rcpt)
            return got if len(got) >= count else None
        try:
            return wait_for(ready, timeout, "%d deliveries to %s" % (count, rcpt))
        except HarnessError as e:
            raise HarnessError("%s\nqueue: %s\nlog tail:\n%s" % (
                e, self.queue(), "\n".join(self.log().splitlines()[-30:])))

    def all_deliveries(self):
        """{recipient dir name: [Delivery]} for everything delivered."""
        out = {}
        with contextlib.suppress(FileNotFoundError):
            for r in sorted(os.listdir(self.out_dir)):
                out[r] = self.deliveries(r)
        return out

    def queue(self):
        """postqueue -j: a list of dicts (queue_name, queue_id, sender,
        recipients, ...) for every queued message, hold queue included."""
        r = self.run([POSTQUEUE, "-c", self.config_dir, "-j"])
        return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]

    def hold_queue(self):
        return [m for m in self.queue() if m.get("queue_name") == "hold"]

    def wait_queue(self, pred=lambda q: bool(q), timeout=30.0, what="queue"):
        """Wait until pred(queue()) is true; returns the queue list."""
        def ok():
            q = self.queue()
            return q if pred(q) else None
        return wait_for(ok, timeout, what, interval=0.2)

    def postcat(self, queue_id, opts="-hb"):
        """postcat -c DIR OPTS -q ID (default: headers and body) as bytes."""
        env = dict(os.environ, MAIL_CONFIG=self.config_dir)
        r = subprocess.run([POSTCAT, "-c", self.config_dir, opts, "-q", queue_id],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, timeout=30)
        if r.returncode != 0:
            raise HarnessError("postcat %s: %s" % (queue_id, r.stderr.decode(errors="replace")))
        return r.stdout

    def postsuper(self, *args):
        return self.run([POSTSUPER, "-c", self.config_dir] + list(args))

    def flush(self):
        """postqueue -f: retry deferred mail now."""
        self.run([POSTQUEUE, "-c", self.config_dir, "-f"])

    # ---- the log ---------------------------------------------------------

    def log(self):
        """Postfix's log (maillog_file) so far, as text."""
        if not self.dir:
            return ""
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def wait_log(self, regex, timeout=30.0, count=1):
        """Wait until regex has matched count times in the Postfix log;
        returns the last match."""
        rx = re.compile(regex)

        def ok():
            ms = list(rx.finditer(self.log()))
            return ms[count - 1] if len(ms) >= count else None
        try:
            return wait_for(ok, timeout, "/%s/ x%d in the Postfix log" % (regex, count))
        except HarnessError as e:
            raise HarnessError("%s\nlog tail:\n%s" % (
                e, "\n".join(self.log().splitlines()[-30:])))

    def log_lines(self, regex):
        rx = re.compile(regex)
        return [l for l in self.log().splitlines() if rx.search(l)]


def _pwnam(user):
    import pwd
    p = pwd.getpwnam(user)
    return p.pw_uid, p.pw_gid


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie of ours counts as dead
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def main():
    """Entry point of a test script: skip (77) unless root, then run the
    unittest tests of __main__ (exit 0 = all passed)."""
    import unittest
    require_root()
    install_signal_handlers()
    unittest.main(module="__main__", verbosity=2)
