#!/usr/bin/env bash
# Builds the web panel (web/panel: Preact + htm + uPlot, bundled by esbuild, pinned by
# package-lock.json) into idcs_core/static/panel, which the server answers at /.
# Needs node >= 18 and npm. Idempotent: npm ci only when the lockfile changed.
set -euo pipefail
cd "$(dirname "$0")/../web/panel"
if ! command -v npm >/dev/null 2>&1; then
  echo "build-panel: npm is not installed (node >= 18 and npm are needed to build the web panel)" >&2
  exit 1
fi
stamp=node_modules/.package-lock.json
if [ ! -f "$stamp" ] || [ package-lock.json -nt "$stamp" ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
node build.mjs
