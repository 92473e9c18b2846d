#!/usr/bin/env bash
# The whole test suite, twice: a normal build (gcc) and an
# AddressSanitizer+UBSan build (clang, -fno-sanitize-recover, with the
# libFuzzer targets whose corpora are replayed), both through ctest.
# Installs the Debian packages it needs first (scripts/deps.sh: nothing
# to do when they are there), so it works alone on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
J="$(nproc)"
echo "== normal build =="
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMF_WERROR=ON
cmake --build build -j"$J"
(cd build && ctest --output-on-failure -j"$J" --timeout 600)
echo "== AddressSanitizer + UBSan build =="
CC=clang cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DMF_WERROR=ON \
  -DMF_SANITIZE=ON -DMF_FUZZ=ON
cmake --build build-asan -j"$J"
(cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --output-on-failure -j"$J" --timeout 600)
