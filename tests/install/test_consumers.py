#!/usr/bin/env python3
"""The library as a user gets it: installed with `cmake --install BUILD --prefix P`
(P has a space in it), then the README's one-function filter (consumer/filter.c)
is built outside the source tree twice, shared and static each:

  - with pkg-config and a plain Makefile (consumer/Makefile),
  - with find_package(mailfilter) (consumer/CMakeLists.txt),

and each of the four programs is run as a milter and driven by the installed
milter-check (no LD_LIBRARY_PATH):
an unauthenticated sender gets the added X-External header, an authenticated
one does not.  The consumer sources are copied next to the prefix, and the
consumer builds are given only the prefix (PKG_CONFIG_PATH, CMAKE_PREFIX_PATH).

Environment (tests/install/CMakeLists.txt): MF_BUILD_DIR, MF_CMAKE (cmake),
MF_INSTALL_LIBDIR (CMAKE_INSTALL_LIBDIR), CC, MF_CONSUMER_CFLAGS (the sanitizer
flags of an MF_SANITIZE build: a consumer of sanitized libraries links the
runtime too), MF_SOURCE_DIR (only to check nothing installed points into it).
Exits 77 (SKIP) when make or pkg-config is missing.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "cli"))
from test_milter_check import wait_socket  # noqa: E402  (path, proc, seconds)
BUILD = os.path.abspath(os.environ.get("MF_BUILD_DIR") or
                        os.path.join(HERE, "..", "..", "build"))
SOURCE = os.path.abspath(os.environ.get("MF_SOURCE_DIR") or os.path.join(HERE, "..", ".."))
CMAKE = os.environ.get("MF_CMAKE") or "cmake"
LIBDIR = os.environ.get("MF_INSTALL_LIBDIR") or "lib"
CC = os.environ.get("CC") or "cc"
CFLAGS = os.environ.get("MF_CONSUMER_CFLAGS", "")
BINDIR = os.environ.get("MF_INSTALL_BINDIR") or "bin"

MESSAGE = (b"From: Alice <alice@example.org>\n"
           b"To: Bob <bob@example.net>\n"
           b"Subject: Hello\n"
           b"\n"
           b"body\n")


def sh(testcase, args, env=None, cwd=None):
    p = subprocess.run(args, env=env, cwd=cwd, capture_output=True, timeout=300)
    testcase.assertEqual(p.returncode, 0, "%s failed:\n%s\n%s" % (
        " ".join(args), p.stdout.decode(errors="replace"),
        p.stderr.decode(errors="replace")))
    return p.stdout.decode(errors="replace")


def needed(testcase, binary):
    """The DT_NEEDED entries of an ELF file (readelf -d)."""
    out = sh(testcase, ["readelf", "-d", binary])
    return [line.split("[", 1)[1].split("]", 1)[0]
            for line in out.splitlines() if "(NEEDED)" in line]


class Consumers(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="mfinst")
        cls.prefix = os.path.join(cls.tmp, "pre fix")
        p = subprocess.run([CMAKE, "--install", BUILD, "--prefix", cls.prefix],
                           capture_output=True, timeout=120)
        if p.returncode != 0:
            raise RuntimeError("cmake --install: %s" % p.stderr.decode(errors="replace"))
        cls.libdir = os.path.join(cls.prefix, LIBDIR)
        # The installed milter-check (it finds the prefix's libraries itself).
        cls.check = os.path.join(cls.prefix, BINDIR, "milter-check")
        # The consumer sources, away from the source tree.
        cls.src = os.path.join(cls.tmp, "consumer src")
        shutil.copytree(os.path.join(HERE, "consumer"), cls.src)
        cls.sockdir = os.path.join(cls.tmp, "s")
        os.mkdir(cls.sockdir)
        cls.msgfile = os.path.join(cls.tmp, "message.eml")
        with open(cls.msgfile, "wb") as f:
            f.write(MESSAGE)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def base_env(self):
        env = dict(os.environ)
        for v in ("PKG_CONFIG_PATH", "CMAKE_PREFIX_PATH", "LD_LIBRARY_PATH",
                  "CFLAGS", "LDFLAGS", "CPATH", "LIBRARY_PATH", "C_INCLUDE_PATH"):
            env.pop(v, None)
        return env

    def installed_files_are_relocatable(self):
        """No installed .pc or CMake file names the source or build tree."""
        for d in (os.path.join(self.libdir, "pkgconfig"),
                  os.path.join(self.libdir, "cmake", "mailfilter")):
            for name in os.listdir(d):
                with open(os.path.join(d, name)) as f:
                    text = f.read()
                for tree in (SOURCE, BUILD, self.prefix):
                    self.assertNotIn(tree, text, "%s/%s names %s" % (d, name, tree))

    def drive(self, binary, env):
        """Runs binary as a milter and plays two transactions against it."""
        sock = os.path.join(self.sockdir, os.path.basename(os.path.dirname(binary))
                            .replace(" ", "_") + "-" + os.path.basename(binary) + ".sock")
        log = open(sock + ".log", "w+b")
        proc = subprocess.Popen([binary, "unix:" + sock], env=env,
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_socket(sock, proc)
            for auth, tagged in ((None, True), ("alice", False)):
                args = [self.check, "--json"]
                if auth:
                    args += ["--macro", "mail:auth_authen=" + auth]
                p = subprocess.run(args + ["unix:" + sock, self.msgfile],
                                   env=self.base_env(), capture_output=True, timeout=60)
                out = p.stdout.decode(errors="replace")
                self.assertEqual(p.returncode, 0, "milter-check: %s %s" % (
                    out, p.stderr.decode(errors="replace")))
                trx = json.loads(out)["transactions"][0]
                self.assertEqual(trx["decision"], "accept", out)
                added = [(a.get("name"), (a.get("value") or "").strip())
                         for a in trx["actions"]]
                hdrs = [tuple(h) for h in trx["result"]["headers"]]
                if tagged:
                    self.assertEqual(added, [("X-External", "yes")], out)
                    self.assertIn(("X-External", "yes"), hdrs, out)
                else:
                    self.assertEqual(added, [], out)
                    self.assertNotIn(("X-External", "yes"), hdrs, out)
            proc.send_signal(signal.SIGTERM)
            self.assertEqual(proc.wait(timeout=60), 0)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.seek(0)
            text = log.read().decode(errors="replace")
            log.close()
        self.assertNotIn("ERROR", text.upper().replace("ERROR_ACTION", ""), text)

    def check_linkage(self, shared, static):
        own = ("libmailfilter.so", "libmfheader.so", "libmfaddr.so", "libmfcore.so")
        n = needed(self, shared)
        # The README's filter calls mfheader (mf_hdr_add) itself.
        for lib in ("libmailfilter.so", "libmfheader.so"):
            self.assertTrue(any(x.startswith(lib) for x in n), "%s: %s" % (shared, n))
        n = needed(self, static)
        self.assertFalse([x for x in n if x.startswith(own)], "%s: %s" % (static, n))

    def test_pkgconfig_makefile(self):
        self.installed_files_are_relocatable()
        env = self.base_env()
        env["PKG_CONFIG_PATH"] = os.path.join(self.libdir, "pkgconfig")
        out = sh(self, ["pkg-config", "--cflags", "mailfilter"], env=env)
        self.assertIn(os.path.join(self.prefix, "lib").replace(" ", "\\ "), out)
        bdir = os.path.join(self.tmp, "make build")
        shutil.copytree(self.src, bdir)
        sh(self, ["make", "-C", bdir, "CC=" + CC, "CFLAGS=" + CFLAGS,
                  "LDFLAGS=" + CFLAGS], env=env)
        shared = os.path.join(bdir, "filter-shared")
        static = os.path.join(bdir, "filter-static")
        self.check_linkage(shared, static)
        run_env = self.base_env()
        run_env["LD_LIBRARY_PATH"] = self.libdir  # pkg-config gives no RPATH
        self.drive(shared, run_env)
        self.drive(static, self.base_env())  # nothing of mailfilter to load

    def test_cmake_find_package(self):
        self.installed_files_are_relocatable()
        env = self.base_env()
        bdir = os.path.join(self.tmp, "cmake build")
        sh(self, [CMAKE, "-S", self.src, "-B", bdir, "-DCMAKE_PREFIX_PATH=" + self.prefix,
                  "-DCMAKE_C_COMPILER=" + CC, "-DCMAKE_C_FLAGS=" + CFLAGS,
                  "-DCMAKE_EXE_LINKER_FLAGS=" + CFLAGS,
                  "-DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF"], env=env)
        with open(os.path.join(bdir, "CMakeCache.txt")) as f:
            cache = f.read()
        pkgdir = os.path.join(self.libdir, "cmake", "mailfilter")
        self.assertIn("mailfilter_DIR:PATH=" + pkgdir, cache)
        sh(self, [CMAKE, "--build", bdir], env=env)
        shared = os.path.join(bdir, "filter-shared")
        static = os.path.join(bdir, "filter-static")
        self.check_linkage(shared, static)
        self.drive(shared, env)  # CMake's build RPATH finds the prefix's libraries
        self.drive(static, env)


if __name__ == "__main__":
    for tool in ("make", "pkg-config", "readelf"):
        if shutil.which(tool) is None:
            print("no %s: skipped" % tool)
            sys.exit(77)
    unittest.main(verbosity=2)
