#!/usr/bin/env bash
# Build the Debian packages from a clean export of the source tree and check them:
#   1. dpkg-buildpackage -us -uc -b (DEB_BUILD_OPTIONS="nocheck parallel=N"), with
#      dpkg-gensymbols at check level 4: a symbol added to or removed from a shared
#      library without debian/libmailfilter0.symbols saying so fails the build;
#   2. lintian: no error (warnings are printed);
#   3. dpkg -c: the files each package must contain, and none it must not;
#   4. dpkg -x libmailfilter0, libmailfilter-dev and milter-check into a temporary
#      root, build the README's one-function filter (tests/install/consumer/)
#      against it with pkg-config (PKG_CONFIG_PATH into that root: the .pc files
#      must be relocatable) and with find_package, shared and static, and drive
#      each with the packaged milter-check: negotiation and one transaction, whose
#      header the filter adds.
#
# usage: scripts/test-debian.sh [--head] [--keep]
#   --head  export the committed tree (git archive HEAD) instead of the working
#           tree's files (tracked and untracked, minus what .gitignore ignores)
#   --keep  keep the temporary directory (its path is printed)
# Exit status: 0 passed, 1 failed, 77 skipped (dpkg-buildpackage, dh or lintian
# missing: scripts/packages.txt lists them).
# After an intended change of the exported symbols, apply the diff the failed build
# prints to debian/libmailfilter0.symbols (new symbols with the version that
# introduces them).
set -euo pipefail

SRC="$(cd "$(dirname "$0")/.." && pwd)"
HEAD=0
KEEP=0
for a in "$@"; do
  case "$a" in
    --head) HEAD=1 ;;
    --keep) KEEP=1 ;;
    *) echo "usage: $0 [--head] [--keep]" >&2; exit 2 ;;
  esac
done

for t in dpkg-buildpackage dh lintian dpkg-architecture pkg-config cc make cmake; do
  if ! command -v "$t" >/dev/null; then
    echo "SKIP: $t not installed (apt-get install debhelper lintian dpkg-dev pkg-config)"
    exit 77
  fi
done

W="$(cd "$(mktemp -d "${TMPDIR:-/tmp}/mf-debian.XXXXXX")" && pwd -P)"
FILTER_PID=""
cleanup() {
  if [ -n "$FILTER_PID" ]; then kill "$FILTER_PID" 2>/dev/null || true; fi
  if [ "$KEEP" = 1 ]; then echo "kept: $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }

# --- 1. clean export and package build ---------------------------------------------
mkdir "$W/src"
if [ "$HEAD" = 1 ]; then
  git -C "$SRC" archive HEAD | tar -x -C "$W/src"
elif git -C "$SRC" rev-parse --git-dir >/dev/null 2>&1; then
  # Tracked files deleted in the working tree are left out (--ignore-failed-read).
  (cd "$SRC" && git ls-files -z --cached --others --exclude-standard |
    tar --null -T - --ignore-failed-read -cf - 2>/dev/null) | tar -x -C "$W/src"
else
  tar -C "$SRC" --exclude='./build*' --exclude=./.git -cf - . | tar -x -C "$W/src"
fi
[ -f "$W/src/debian/control" ] || fail "no debian/control in the export"

J="$(nproc)"
echo "== dpkg-buildpackage -us -uc -b (log: $W/build.log)"
if ! (cd "$W/src" &&
      DEB_BUILD_OPTIONS="nocheck parallel=$J" DPKG_GENSYMBOLS_CHECK_LEVEL=4 \
      dpkg-buildpackage -us -uc -b >"$W/build.log" 2>&1); then
  tail -n 60 "$W/build.log"
  if grep -q 'dpkg-gensymbols: error' "$W/build.log"; then
    echo "The exported symbols differ from debian/libmailfilter0.symbols (diff above)."
    echo "New symbols: add them with the version that introduces them; removed"
    echo "ones break the ABI (bump the SOVERSION and the package name)."
  fi
  fail "dpkg-buildpackage"
fi
VERSION="$(cd "$W/src" && dpkg-parsechangelog -S Version)"
ARCH="$(dpkg-architecture -qDEB_HOST_ARCH)"
MA="$(dpkg-architecture -qDEB_HOST_MULTIARCH)"
deb() { echo "$W/${1}_${VERSION}_${ARCH}.deb"; }
for p in libmailfilter0 libmailfilter-dev milter-check mailfilter-examples; do
  [ -f "$(deb "$p")" ] || fail "package $p not built"
done

# --- 2. lintian ----------------------------------------------------------------------
echo "== lintian"
set +e
lintian --fail-on error --display-info "$W/mailfilter_${VERSION}_${ARCH}.changes" \
  >"$W/lintian.log" 2>&1
rc=$?
set -e
grep -v 'running with root privileges' "$W/lintian.log" || true
[ "$rc" = 0 ] || fail "lintian exit $rc (errors above)"
grep -q '^E: ' "$W/lintian.log" && fail "lintian found errors"

# --- 3. contents ---------------------------------------------------------------------
echo "== contents"
L="usr/lib/$MA"
LIBS="mfcore mfaddr mfheader mailfilter mftesttrx"
contents() { dpkg -c "$(deb "$1")" | awk '{print $6}' | sed 's|^\./||'; }
expect() { # package path...
  local p="$1" list f
  shift
  list="$(contents "$p")"
  for f in "$@"; do
    grep -qxF "$f" <<<"$list" || fail "$p lacks $f"
  done
}
refuse() { # package extended-regex: no path may match
  if contents "$1" | grep -E "$2"; then fail "$1 has files matching $2 (above)"; fi
}
for l in $LIBS; do
  expect libmailfilter0 "$L/lib$l.so.0" "$L/lib$l.so.0.1.0"
  expect libmailfilter-dev "$L/lib$l.so" "$L/lib$l.a" "$L/pkgconfig/$l.pc"
  # The soname the library carries is the name libmailfilter0 ships.
  dpkg --fsys-tarfile "$(deb libmailfilter0)" | tar -xO "./$L/lib$l.so.0.1.0" >"$W/lib.so"
  objdump -p "$W/lib.so" | grep -q "SONAME *lib$l.so.0\$" || fail "lib$l: soname is not lib$l.so.0"
  # Installed in the system's library directory: no RPATH/RUNPATH.
  if objdump -p "$W/lib.so" | grep -E 'R(UN)?PATH'; then fail "lib$l has an RPATH"; fi
done
refuse libmailfilter0 '\.(a|h|pc)$|\.so$|^usr/(bin|sbin|include)/'
# ICU, GMime and libidn2 are loaded when first needed (dlopen), not linked: the
# package must still depend on them (debian/rules, override_dh_shlibdeps).
DEPS="$(dpkg-deb -f "$(deb libmailfilter0)" Depends)"
for d in 'libicu[0-9]+' 'libgmime-3\.0-0' 'libidn2-0'; do
  grep -qE "(^|, )$d( |,|$)" <<<"$DEPS" || fail "libmailfilter0 does not depend on $d: $DEPS"
done
expect libmailfilter-dev usr/include/mailfilter/mailfilter.h usr/include/mailfilter/milter.h \
  usr/include/mailfilter/milter_client.h usr/include/mailfilter/addr.h \
  usr/include/mailfilter/header.h usr/include/mailfilter/testtrx.h \
  usr/include/mailfilter/version.h usr/include/mailfilter/export.h \
  "$L/cmake/mailfilter/mailfilterConfig.cmake" \
  "$L/cmake/mailfilter/mailfilterConfigVersion.cmake" \
  "$L/cmake/mailfilter/mailfilterTargets.cmake"
refuse libmailfilter-dev '\.so\.[0-9]|^usr/s?bin/'
expect milter-check usr/bin/milter-check
expect mailfilter-examples usr/sbin/mailfilter-external usr/sbin/mailfilter-rcptcount \
  usr/sbin/mailfilter-logip
# Man pages and units: expected as soon as the source has them.
if [ -f "$W/src/core/tools/milter-check.1" ]; then
  expect milter-check usr/share/man/man1/milter-check.1.gz
fi
for x in external rcptcount logip; do
  if [ -f "$W/src/examples/man/mailfilter-$x.8" ]; then
    expect mailfilter-examples "usr/share/man/man8/mailfilter-$x.8.gz"
  fi
  for u in socket service; do
    if [ -f "$W/src/examples/systemd/mailfilter-$x.$u" ]; then
      expect mailfilter-examples "lib/systemd/system/mailfilter-$x.$u"
    fi
  done
done
for p in libmailfilter0 libmailfilter-dev milter-check mailfilter-examples; do
  echo "-- $p"
  contents "$p" | grep -v '/$' | sed 's/^/   /'
done

# --- 4. consumers built against the unpacked packages --------------------------------
# The README's one-function filter of tests/install/consumer/ (filter.c, its Makefile
# for pkg-config, its CMakeLists.txt for find_package), each shared and static.
echo "== consumers (unpacked libmailfilter-dev: pkg-config and find_package)"
R="$W/root"
for p in libmailfilter0 libmailfilter-dev milter-check; do dpkg -x "$(deb "$p")" "$R"; done
cp -r "$W/src/tests/install/consumer" "$W/make"
cp -r "$W/src/tests/install/consumer" "$W/cmake-src"
export PKG_CONFIG_PATH="$R/$L/pkgconfig"
# The include directory pkg-config names must be the unpacked root's, not /usr's.
PC_INC="$(pkg-config --variable=includedir mailfilter)" || fail "pkg-config mailfilter"
if [ "$(realpath -m "$PC_INC")" != "$R/usr/include" ]; then
  fail "mailfilter.pc: includedir=$PC_INC, not in the unpacked root $R" \
       "(the .pc files are not relocatable: prefix must come from \${pcfiledir})"
fi
echo "pkg-config: $(pkg-config --cflags --libs mailfilter)"
make -s -C "$W/make" CFLAGS="-Wall -Werror" LDFLAGS="-Wl,-rpath-link,$R/$L" \
  >"$W/make.log" 2>&1 || { cat "$W/make.log"; fail "the pkg-config consumer does not build"; }
if ! { cmake -S "$W/cmake-src" -B "$W/cmake" -Dmailfilter_DIR="$R/$L/cmake/mailfilter" \
          -DCMAKE_C_FLAGS="-Wall -Werror" && cmake --build "$W/cmake"; } >"$W/cmake.log" 2>&1
then
  cat "$W/cmake.log"
  fail "the find_package consumer does not build"
fi
for t in filter-shared filter-static; do
  grep -q "$R/$L/libmailfilter" "$W/cmake/CMakeFiles/$t.dir/link.txt" ||
    fail "cmake $t: not linked with the unpacked root's libraries"
done

export LD_LIBRARY_PATH="$R/$L"
drive() { # binary: listen, one transaction with the packaged milter-check, SIGTERM
  local bin="$1" sock="$W/filter.sock" rc
  rm -f "$sock"
  "$bin" "unix:$sock" 2>"$W/filter.log" &
  FILTER_PID=$!
  # Wait for the socket (bounded: 30 s), or for the filter to die.
  for _ in $(seq 300); do
    [ -S "$sock" ] && break
    kill -0 "$FILTER_PID" 2>/dev/null || { cat "$W/filter.log"; fail "$bin exited"; }
    sleep 0.1
  done
  [ -S "$sock" ] || fail "$bin never listened on $sock"
  set +e
  # v as Postfix sends it: the append is then ADDHEADER (an MTA not known
  # gets INSHEADER past the end: mailfilter.h, HEADER EDITS ON EACH MTA)
  printf 'From: a@example.org\r\nSubject: hello\r\n\r\nbody\r\n' |
    "$R/usr/bin/milter-check" --macro "connect:v=Postfix 3.7.11" \
      "unix:$sock" - >"$W/check.out" 2>&1
  rc=$?
  set -e
  [ "$rc" = 0 ] || { cat "$W/check.out"; fail "$bin: milter-check exit $rc (0 = accept)"; }
  grep -q '^negotiated: version 6' "$W/check.out" || fail "$bin: no negotiation"
  grep -q '^  action addheader X-External: yes$' "$W/check.out" ||
    { cat "$W/check.out"; fail "$bin: the filter's header is not among the actions"; }
  grep -q '^decision: accept$' "$W/check.out" || fail "$bin: no accept decision"
  kill -TERM "$FILTER_PID"
  set +e
  wait "$FILTER_PID"
  rc=$?
  set -e
  FILTER_PID=""
  [ "$rc" = 0 ] || { cat "$W/filter.log"; fail "$bin exited $rc after SIGTERM"; }
  echo "ok: $bin: negotiated, one transaction (addheader X-External), exit 0 on SIGTERM"
}
for b in make/filter-shared make/filter-static cmake/filter-shared cmake/filter-static; do
  drive "$W/$b"
done
cat "$W/check.out"
echo "PASS: packages built, lintian clean of errors, contents as expected, consumers" \
  "built from the unpacked -dev package (pkg-config, find_package; shared, static)" \
  "answered a transaction"
