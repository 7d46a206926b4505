#!/usr/bin/env bash
# Installs the real back ends the test suite drives (Docker Engine, Podman, LXD, Incus, busybox,
# Caddy for the core's reverse proxies).
# Idempotent: packages already present are not installed again. Needs root (apt-get).
# Daemons are NOT started here: the pytest fixtures start them once per session and stop
# them by PID (see idcs_core/testing/daemons.py).
set -euo pipefail

need=()
# chromium + tigervnc-standalone-server: the console pages and the panel are tested in headless Chromium
# (against Xvnc); fonts-wqy-microhei: a CJK font for the panel's Chinese pages; caddy: the reverse proxy.
for pkg in docker.io busybox-static lxd podman catatonit chromium tigervnc-standalone-server fonts-wqy-microhei caddy; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
incus_needed=0
dpkg -s incus-base >/dev/null 2>&1 || incus_needed=1

if [ ${#need[@]} -gt 0 ] || [ $incus_needed -eq 1 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "install-backends: must run as root to apt-get install: ${need[*]} incus" >&2
    exit 1
  fi
  # Incus 6.0 comes from bookworm-backports; add it with the mirror the system already uses.
  if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
    uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    [ -n "$uri" ] || uri=$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
    [ -n "$uri" ] || uri="http://deb.debian.org/debian"
    echo "deb $uri bookworm-backports main" > /etc/apt/sources.list.d/idcs-backports.list
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  [ ${#need[@]} -gt 0 ] && apt-get install -y -qq --no-install-recommends "${need[@]}"
  if [ $incus_needed -eq 1 ]; then
    apt-get install -y -qq --no-install-recommends -t bookworm-backports incus-base incus-client
  fi
fi
echo "install-backends: docker.io podman catatonit lxd incus busybox-static caddy chromium tigervnc-standalone-server fonts-wqy-microhei present"

# Each engine's own back end (vcsim, LXC, libvirt/QEMU...) is installed by its script here:
# one file per engine, idempotent, root, apt-get only from Debian (no network beyond the registries).
for extra in "$(dirname "$0")"/backends/*.sh; do
  [ -e "$extra" ] || continue
  bash "$extra"
done
