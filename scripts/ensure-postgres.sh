#!/usr/bin/env bash
# The core tests run on PostgreSQL too (127.0.0.1:5432, trust auth, database `test`).
# Start the local cluster if it is installed but stopped; fail loudly if it cannot be reached.
set -euo pipefail
if pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  exit 0
fi
if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
fi
for _ in $(seq 1 30); do
  pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null && exit 0
  sleep 1
done
echo "ensure-postgres: PostgreSQL is not answering on 127.0.0.1:5432 (needed by the test suite)" >&2
exit 1
