#!/usr/bin/env bash
# Install the Debian 12 packages that build and test mailfilter need.
# Used by scripts/quickstart.sh and .ci/run.  Needs root (uses sudo if not).
set -euo pipefail
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
PKGS=(
  build-essential cmake pkg-config clang libclang-rt-14-dev
  libuv1-dev libgmime-3.0-dev libidn2-dev libicu-dev libcmocka-dev
  libmilter-dev python3-milter miltertest postfix valgrind
)
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
# postfix: no system configuration; the tests run private instances only.
echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${PKGS[@]}"
