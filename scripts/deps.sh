#!/usr/bin/env bash
# Install the Debian 12 packages that build and test mailfilter need (the
# list is scripts/packages.txt).  Idempotent: when every package is already
# installed it does nothing (no apt-get update, no network).  Used by
# scripts/quickstart.sh and scripts/test-all.sh; .ci/run installs the same list.
# Needs root (uses sudo if not) only when something is missing.
set -euo pipefail
LIST="$(dirname "$0")/packages.txt"
read -r -a PKGS <<< "$(tr '\n' ' ' < "$LIST")"
missing=()
for p in "${PKGS[@]}"; do
  s="$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)"
  [ "${s:0:2}" = "ii" ] || missing+=("$p")
done
if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi
echo "deps.sh: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
# postfix: no system configuration; the tests run private instances only.
echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
