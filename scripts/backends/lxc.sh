#!/usr/bin/env bash
# LXC 5.0 for the idcs_lxc engine: the LXC tools and templates, busybox for the busybox template,
# nftables for the engine's DNAT table, and OpenSSH's server (the tests start their own sshd on a
# loopback port to drive LXC "remotely"). Idempotent; needs root. Starts nothing.
set -euo pipefail

need=()
for pkg in lxc busybox-static nftables openssh-server dnsmasq-base; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "backends/lxc.sh: must run as root to apt-get install: ${need[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need[@]}" \
    || { apt-get update -qq && apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need[@]}"; }
fi
echo "backends/lxc.sh: lxc busybox-static nftables openssh-server dnsmasq-base present"
