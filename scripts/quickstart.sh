#!/usr/bin/env bash
# One command for a newcomer: install the Debian packages, build, and run the
# example milter on SPEC (default inet:10025@127.0.0.1), printing the
# Postfix main.cf lines that connect Postfix to that socket.  Ctrl-C stops it.
#
#   bash scripts/quickstart.sh [SPEC]
#
# SPEC is the filter's socket: inet:PORT@HOST, inet6:PORT@HOST or unix:/path
# (Postfix writes these inet:HOST:PORT, inet:[HOST]:PORT, unix:/path).
set -euo pipefail
cd "$(dirname "$0")/.."

# The Postfix milter address for a filter socket spec; empty if it has none.
postfix_milter() {
  local spec="$1" port host
  case "$spec" in
    unix:* | local:*) echo "unix:${spec#*:}" ;;
    inet:*@* | inet6:*@*)
      port="${spec#*:}"; port="${port%%@*}"; host="${spec#*@}"
      case "$host" in 0.0.0.0 | '*') host=127.0.0.1 ;; ::) host=::1 ;; esac
      case "$spec" in inet6:*) host="[$host]" ;; esac
      echo "inet:$host:$port" ;;
    inet:* | inet6:*)  # no host: all addresses; Postfix connects to loopback
      port="${spec#*:}"
      case "$spec" in inet6:*) echo "inet:[::1]:$port" ;; *) echo "inet:127.0.0.1:$port" ;; esac ;;
    *) echo "" ;;
  esac
}
if [ "${1:-}" = "--postfix-line" ]; then  # for the tests: print it and stop
  postfix_milter "$2"
  exit 0
fi

SPEC="${1:-inet:10025@127.0.0.1}"
MILTER="$(postfix_milter "$SPEC")"
if [ -z "$MILTER" ]; then
  echo "quickstart.sh: '$SPEC' is not inet:PORT@HOST, inet6:PORT@HOST or unix:/path" >&2
  exit 2
fi
bash scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build build -j"$(nproc)"
EX=external
[ -x build/examples/external ] || EX=logip
cat <<TXT

Built.  Add these two lines to Postfix's /etc/postfix/main.cf and run 'postfix reload':

smtpd_milters = $MILTER
non_smtpd_milters = \$smtpd_milters

Now running: build/examples/$EX $SPEC   (Ctrl-C stops it)
TXT
exec "build/examples/$EX" "$SPEC"
