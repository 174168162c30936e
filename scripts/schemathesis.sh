#!/usr/bin/env bash
# Tests the API from its own OpenAPI document with Schemathesis (PyPI; installed into a
# venv under /tmp if missing): starts `keyflow serve --dev` from a throwaway data
# directory on a free loopback port, runs every operation with an admin token, and fails
# on any server error (5xx) or any other failed check (issue 16; docs/testing.md).
#
#   scripts/schemathesis.sh [MAX_SECONDS] [CHECKS]
#     MAX_SECONDS  time budget of the run (default 300)
#     CHECKS       Schemathesis checks (default not_a_server_error)
#   KEYFLOW_BIN=target/release/keyflow scripts/schemathesis.sh 600 all
set -euo pipefail
cd "$(dirname "$0")/.."
MAX=${1:-300}
CHECKS=${2:-not_a_server_error}
VENV=${SCHEMATHESIS_VENV:-/tmp/schemathesis-venv}
if [[ ! -x $VENV/bin/schemathesis ]]; then
    echo "installing schemathesis into $VENV" >&2
    python3 -m venv "$VENV" >&2
    timeout 600 "$VENV/bin/pip" install -q schemathesis >&2
fi
bin=${KEYFLOW_BIN:-target/debug/keyflow}
[[ -x $bin ]] || cargo build -q -p keyflow-cli
bin=$(realpath "$bin")

work=$(mktemp -d)
server=
cleanup() {
    [[ -n $server ]] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
(cd "$work" && KEYFLOW_LISTEN="127.0.0.1:$port" KEYFLOW_DATA_DIR="$work/data" \
    exec "$bin" serve --dev >"$work/server.log" 2>&1) &
server=$!
base="https://127.0.0.1:$port"
for _ in $(seq 1 60); do
    curl -ks --max-time 1 "$base/api/encryption/health" >/dev/null && break
    kill -0 "$server" 2>/dev/null || { cat "$work/server.log" >&2; exit 1; }
    sleep 0.5
done
token=$(grep -o 'kft_[A-Za-z0-9_-]*' "$work/server.log" | head -1)
[[ -n $token ]] || { echo "no admin token in the server's output" >&2; exit 1; }

status=0
# From the work directory: Schemathesis keeps a cache (.schemathesis/) where it runs.
cd "$work"
"$VENV/bin/schemathesis" run "$base/api/encryption/openapi.json" --url "$base" \
    --tls-verify false -H "Authorization: Bearer $token" \
    --checks "$CHECKS" --max-time "$MAX" --workers 2 --request-timeout 30 \
    --report ndjson --report-dir "$work/report" | tee "$work/run.txt" || status=$?
# Server-side view: any 5xx in the log is a finding even if a check missed it.
if grep -q '"status":5[0-9][0-9]\|status=5[0-9][0-9]' "$work/server.log"; then
    echo "the server logged 5xx answers:" >&2
    grep '"status":5[0-9][0-9]\|status=5[0-9][0-9]' "$work/server.log" | head -20 >&2
    status=1
fi
exit "$status"
