#!/usr/bin/env bash
# One command for a newcomer: install the Debian packages, build, and run the
# example milter on inet:10025@127.0.0.1.  Stop it with Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build build -j"$(nproc)"
SPEC="${1:-inet:10025@127.0.0.1}"
EX=external
[ -x build/examples/external ] || EX=logip
cat <<TXT

Built.  Add these two lines to Postfix's /etc/postfix/main.cf and run 'postfix reload':

smtpd_milters = inet:127.0.0.1:10025
non_smtpd_milters = \$smtpd_milters

Now running: build/examples/$EX $SPEC   (Ctrl-C stops it)
TXT
exec "build/examples/$EX" "$SPEC"
