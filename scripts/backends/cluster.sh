#!/usr/bin/env bash
# HAProxy for the cluster tests (tests/cluster/): a real round-robin load balancer in front of
# three `idcs serve --no-worker` nodes on PostgreSQL. Idempotent; needs root. Starts nothing (the
# test fixture runs its own haproxy with its own config and stops it by PID).
set -euo pipefail

need=()
for pkg in haproxy; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "backends/cluster.sh: must run as root to apt-get install: ${need[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need[@]}" \
    || { apt-get update -qq && apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need[@]}"; }
  # Debian's package may enable a system haproxy; the tests run their own, so stop that one.
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet haproxy 2>/dev/null; then
    systemctl disable --now haproxy >/dev/null 2>&1 || true
  fi
fi
echo "backends/cluster.sh: haproxy present"
