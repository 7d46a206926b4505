#!/usr/bin/env bash
# Installs everything and runs every test (core on SQLite and PostgreSQL, each engine
# against its real back end). This is the README's test command; .ci/run calls it.
# Idempotent; needs root for apt-get (Docker Engine, LXD, Incus, busybox).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-backends.sh
bash scripts/ensure-postgres.sh
bash scripts/build-web.sh

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip >/dev/null
.venv/bin/pip install -q -e '.[test]' $(for p in plugins/*/ examples/*/; do [ -f "$p/pyproject.toml" ] && printf -- '-e %s ' "$p"; done)
bash scripts/build-panel.sh  # the web panel at / (the browser tests drive it in Chromium)

export PATH="$PWD/.venv/bin:$PATH"
.venv/bin/ruff check .
.venv/bin/mypy  # configured in pyproject.toml ([tool.mypy]): idcs_core and every engine package
exec .venv/bin/python -m pytest "$@"
