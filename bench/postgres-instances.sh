#!/usr/bin/env bash
# W1 small-field encrypt: one KeyFlow on SQLite vs two KeyFlow instances on one PostgreSQL
# database, all servers on core 0, wrk on core 1, 8 s per run, HTTP keep-alive. Needs wrk,
# psql and the local PostgreSQL (127.0.0.1:5432, user postgres); makes and drops its own database.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
KF=$ROOT/target/release/keyflow
[[ -x $KF ]] || { echo "build first: cargo build --release -p keyflow-cli" >&2; exit 2; }
OUT=/tmp/pgbench; rm -rf $OUT; mkdir -p $OUT
export KEK_PASSWORD=bench-password-bench-password-00 KEYFLOW_LOG=warn
DB=keyflow_pgbench_$$
psql -q -h 127.0.0.1 -U postgres -d test -c "CREATE DATABASE $DB" 
trap 'pkill -f "serve --listen 127.0.0.1:1909" || true; sleep 1; psql -q -h 127.0.0.1 -U postgres -d test -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)"' EXIT
lua() { cat > $2 <<L
wrk.method = "POST"
wrk.body = '{"data":"123-45-6789","purpose":"userData"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $1"
L
}
# SQLite, one instance
export KEYFLOW_DATA_DIR=$OUT/sqlite
$KF init >/dev/null; T=$($KF tokens create --role admin --name b); lua $T $OUT/s.lua
(taskset -c 0 $KF serve --listen 127.0.0.1:19091 > $OUT/s.log 2>&1 &); sleep 1.5
taskset -c 1 wrk -t1 -c16 -d2s -s $OUT/s.lua http://127.0.0.1:19091/api/encryption/encrypt >/dev/null
echo "sqlite x1: $(taskset -c 1 wrk -t1 -c16 -d8s --latency -s $OUT/s.lua http://127.0.0.1:19091/api/encryption/encrypt | grep -E 'Requests/sec|99%' | tr -s ' ' | tr '\n' ' ')"
pkill -f "serve --listen 127.0.0.1:19091"; sleep 1
# PostgreSQL, two instances sharing the KEK file
export KEYFLOW_DATA_DIR=$OUT/pg KEYFLOW_DATABASE_URL=postgres://postgres@127.0.0.1:5432/$DB
$KF init >/dev/null; T=$($KF tokens create --role admin --name b); lua $T $OUT/p.lua
(taskset -c 0 $KF serve --listen 127.0.0.1:19092 > $OUT/p1.log 2>&1 &)
(taskset -c 0 $KF serve --listen 127.0.0.1:19093 > $OUT/p2.log 2>&1 &); sleep 2
for p in 19092 19093; do taskset -c 1 wrk -t1 -c8 -d2s -s $OUT/p.lua http://127.0.0.1:$p/api/encryption/encrypt >/dev/null; done
before=$(psql -h 127.0.0.1 -U postgres -d $DB -Atc "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
(taskset -c 1 wrk -t1 -c8 -d8s --latency -s $OUT/p.lua http://127.0.0.1:19092/api/encryption/encrypt > $OUT/w1 &)
taskset -c 1 wrk -t1 -c8 -d8s --latency -s $OUT/p.lua http://127.0.0.1:19093/api/encryption/encrypt > $OUT/w2; sleep 1
echo "postgres x2 (instance A): $(grep -E 'Requests/sec|99%' $OUT/w1 | tr -s ' ' | tr '\n' ' ')"
echo "postgres x2 (instance B): $(grep -E 'Requests/sec|99%' $OUT/w2 | tr -s ' ' | tr '\n' ' ')"
sleep 1
after=$(psql -h 127.0.0.1 -U postgres -d $DB -Atc "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
echo "keystore transactions during the 8 s run: $((after - before))"
