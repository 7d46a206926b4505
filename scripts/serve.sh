#!/usr/bin/env bash
# Installs OpenIDCS with every engine into .venv and starts the server on :1880 (SQLite in
# ./data). On first start it prints the generated admin password once. Extra arguments
# go to `idcs serve` (e.g. --self-signed for HTTPS, --port 8443).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build-web.sh
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install -q -e . $(for p in plugins/*/; do [ -f "$p/pyproject.toml" ] && printf -- '-e %s ' "$p"; done)
bash scripts/build-panel.sh || echo "serve: the web panel was not built; the API works without it" >&2
exec .venv/bin/idcs serve --port "${IDCS_PORT:-1880}" "$@"
