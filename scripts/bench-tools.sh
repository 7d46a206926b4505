#!/usr/bin/env bash
# The tools bench/ needs beyond the test suite's back ends: wrk (HTTP load, bench/cheap_reads.py).
# Idempotent; needs root for apt-get. Benchmarks are not tests: install-backends.sh leaves this out.
set -euo pipefail

need=()
for pkg in wrk; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "bench-tools: must run as root to apt-get install: ${need[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need[@]}" \
    || { apt-get update -qq && apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need[@]}"; }
fi
echo "bench-tools: wrk present"
