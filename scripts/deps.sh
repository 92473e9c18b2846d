#!/usr/bin/env bash
# Install the Debian 12 packages that build and test mailfilter need.
# Used by scripts/quickstart.sh (.ci/run installs the same list itself).
# Needs root (uses sudo if not).
set -euo pipefail
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
# The list is shared with .ci/run.
read -r -a PKGS <<< "$(tr '\n' ' ' < "$(dirname "$0")/packages.txt")"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
# postfix: no system configuration; the tests run private instances only.
echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${PKGS[@]}"
