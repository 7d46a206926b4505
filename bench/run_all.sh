#!/usr/bin/env bash
# Runs every benchmark in turn (about 10 minutes on 2 cores). Each script starts what it
# needs on 127.0.0.1 and stops it by PID on exit. Extra arguments are not passed on:
# run the scripts one by one for options (see README.md).
set -euo pipefail
cd "$(dirname "$0")"
PY="${PYTHON:-python3}"
[ -x ../.venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=../.venv/bin/python
"$PY" cheap_reads.py
"$PY" dead_hosts.py
"$PY" vm_list.py --phases
