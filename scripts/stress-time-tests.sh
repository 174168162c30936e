#!/usr/bin/env bash
# Runs the time-sensitive test files N times in a row (default 20) while two busy loops
# load both cores, and counts the green rounds: the proof that no test leans on a sleep
# being "long enough" (docs/testing.md). Needs TEST_DATABASE_URL for the PostgreSQL
# files (scripts/test-postgres.sh up prints it); without it they skip.
#
#   scripts/stress-time-tests.sh [ROUNDS]
set -uo pipefail
cd "$(dirname "$0")/.."

rounds=${1:-20}
# Every file whose tests involve time: cache TTL and staleness, token refresh,
# revalidation and upkeep, leases, the integrity window, timeouts, shutdown, NOTIFY.
groups=(
    "-p keyflow-core --lib"
    "-p keyflow-kms --lib"
    "-p keyflow-kms --test lifecycle"
    "-p keyflow-transport --test integrity"
    "-p keyflow-server --test lifecycle --test tls_limits --test tls_shutdown --test tls_handshake --test postgres_instances"
    "-p keyflow-store-postgres --test instances"
)
run_all() {
    local g
    for g in "${groups[@]}"; do
        # shellcheck disable=SC2086 # each group is a list of cargo arguments
        cargo test $g "$@" || return 1
    done
}

run_all --no-run -q >/dev/null 2>&1 || { echo "build failed" >&2; exit 1; }

# Two busy loops, one per core, bounded in time; stopped on exit whatever happens.
busy=()
for _ in 1 2; do
    timeout 3600 sh -c 'while :; do :; done' &
    busy+=($!)
done
trap 'kill "${busy[@]}" 2>/dev/null' EXIT

green=0
for i in $(seq 1 "$rounds"); do
    if out=$(run_all -q 2>&1); then
        green=$((green + 1))
        echo "round $i: green"
    else
        echo "round $i: RED"
        echo "$out" | grep -E "panicked|FAILED|failures:" | head -20
    fi
done
echo "$green passed, $((rounds - green)) failed"
[ "$green" = "$rounds" ]
