#!/usr/bin/env bash
# Installs the console pages' browser libraries from npm (pinned by web/package-lock.json) and
# copies the files the pages load into idcs_core/static/vendor/ (gitignored; carried by wheels as
# package data). Run before `python -m build`; scripts/test.sh and scripts/serve.sh call it.
# Idempotent; no npm at run time.
set -euo pipefail
cd "$(dirname "$0")/.."
web=web
out=idcs_core/static/vendor
if [ ! -d "$web/node_modules/@novnc/novnc/core" ] || [ ! -f "$web/node_modules/@xterm/xterm/lib/xterm.mjs" ] \
   || [ ! -f "$web/node_modules/@xterm/addon-fit/lib/addon-fit.mjs" ] \
   || [ "$web/package-lock.json" -nt "$web/node_modules/.package-lock.json" ]; then
  (cd "$web" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
fi
rm -rf "$out.tmp"
mkdir -p "$out.tmp/novnc" "$out.tmp/xterm"
cp -R "$web/node_modules/@novnc/novnc/core" "$web/node_modules/@novnc/novnc/vendor" \
      "$web/node_modules/@novnc/novnc/LICENSE.txt" "$out.tmp/novnc/"
cp "$web/node_modules/@xterm/xterm/lib/xterm.mjs" "$web/node_modules/@xterm/xterm/css/xterm.css" \
   "$web/node_modules/@xterm/xterm/LICENSE" "$out.tmp/xterm/"
cp "$web/node_modules/@xterm/addon-fit/lib/addon-fit.mjs" "$out.tmp/xterm/"
rm -rf "$out"
mv "$out.tmp" "$out"
