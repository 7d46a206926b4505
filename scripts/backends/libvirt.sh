#!/usr/bin/env bash
# Installs what the QEMU engine (plugins/idcs_libvirt) needs: libvirtd + QEMU (TCG), qemu-img,
# dnsmasq for the NAT network's DHCP, nftables for the plugin's port forwards, the Debian cloud
# kernel the test guest boots, and the headers libvirt-python builds against.
# Idempotent; needs root. Daemons are NOT started here: the plugin's test fixture starts them.
set -euo pipefail

need=()
for pkg in libvirt-daemon-system libvirt-clients qemu-system-x86 qemu-utils dnsmasq-base nftables \
           linux-image-cloud-amd64 busybox-static libvirt-dev pkg-config gcc python3-dev cpio; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "backends/libvirt.sh: must run as root to apt-get install: ${need[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need[@]}" \
    || { apt-get update -qq && apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need[@]}"; }
fi
echo "backends/libvirt.sh: libvirt + QEMU + qemu-utils + dnsmasq + nftables + cloud kernel present"
