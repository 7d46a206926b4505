#!/usr/bin/env bash
# Packages the vSphereESXi engine's tests need: Go and the govmomi sources (its simulator,
# vcsim, is built from them offline by plugins/idcs_esxi/tests/vcsim.py). Idempotent; run as root.
set -euo pipefail
if ! command -v go >/dev/null || [ ! -d /usr/share/gocode/src/github.com/vmware/govmomi/simulator ]; then
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends \
        golang-go golang-github-vmware-govmomi-dev
fi
