#!/usr/bin/env bash
# VmwareWork engine (plugins/idcs_vmware): its tests run against a vmrest STAND-IN (a Python test
# fixture), not a real VMware Workstation. The stand-in's "VMs" are real processes: busybox httpd
# for the guest's web page and TigerVNC's Xvnc for the VNC console. Idempotent; root for apt-get.
set -euo pipefail

need=()
for pkg in busybox-static tigervnc-standalone-server; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "backends/vmware: must run as root to apt-get install: ${need[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need[@]}"
fi
echo "backends/vmware: busybox-static tigervnc-standalone-server present (the vmrest stand-in's guests)"
