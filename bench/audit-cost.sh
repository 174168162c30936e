#!/usr/bin/env bash
# What the audit trail costs: W1 (one small encrypt) and W3 (a batch of 100) over HTTP at
# c = 16, against one `keyflow serve` with KEYFLOW_AUDIT=on and one with it off, in the
# same run, alternating ROUNDS times. Reports req/s and server CPU time per request (from
# /proc/PID/stat), the number that matters (target: audit on ≤ 1.15× off).
#
#   bench/audit-cost.sh [DURATION] [ROUNDS]      (defaults: 8s 3)
#   BEFORE=/tmp/keyflow-old bench/audit-cost.sh   (also an older binary, audit on, in
#                                                  its own keystore: an A/B of a change)
#   PACE_MS=2 bench/audit-cost.sh                 (each connection waits 2 ms before each
#                                                  request: the same moderate rate for
#                                                  both servers instead of saturation)
#
# Why paced too: at saturation the slower server (audit on) leaves wrk idle more often,
# so more of its responses must wake wrk, and that wake-up is charged to the server's
# writev (~0.55–0.65 wrk context switches per request audit on, 0.32–0.42 off, on the
# EPYC VM; the paced ratio came out about the same, so that share is small). At one
# fixed rate both pay it alike: the ratio at the moderate load a server
# usually runs (where every request costs about twice its saturated CPU: idle wake-ups,
# cold caches). Paced levels are noisier; use 3 or more rounds.
#
# Needs wrk and `cargo build --release -p keyflow-cli`. Server on core 0, wrk on core 1.
set -euo pipefail
DUR=${1:-8s}
ROUNDS=${2:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
KF=$ROOT/target/release/keyflow
OUT=/tmp/keyflow-audit-bench
[[ -z ${PACE_MS:-} || $PACE_MS =~ ^[0-9]+$ ]] || { echo "PACE_MS must be whole milliseconds" >&2; exit 2; }
command -v wrk >/dev/null || { echo "wrk missing: apt-get install -y wrk" >&2; exit 2; }
[[ -x $KF ]] || { echo "build first: cargo build --release -p keyflow-cli" >&2; exit 2; }
rm -rf "$OUT"; mkdir -p "$OUT"
export KEYFLOW_DATA_DIR=$OUT/data KEK_PASSWORD=bench-password-bench-password-00 KEYFLOW_LOG=warn
"$KF" init >/dev/null
TOKEN_AFTER=$("$KF" tokens create --role admin --name bench)
if [[ -n ${BEFORE:-} ]]; then
  # Its own keystore: the two binaries may not share migrations.
  KEYFLOW_DATA_DIR=$OUT/data-before "$BEFORE" init >/dev/null
  TOKEN_BEFORE=$(KEYFLOW_DATA_DIR=$OUT/data-before "$BEFORE" tokens create --role admin --name bench)
fi
echo '{"data":"123-45-6789","purpose":"userData"}' > "$OUT/w1.json"
python3 - "$OUT/w3.json" <<'PY'
import json, sys
json.dump({"items": [f"123-45-{i:04d}" for i in range(100)], "purpose": "userData"}, open(sys.argv[1], "w"))
PY
cat > "$OUT/post.lua" <<'LUA'
function init(args)
  local f = assert(io.open(os.getenv("BODY"), "rb")); local body = f:read("*a"); f:close()
  req = wrk.format("POST", nil, {["Content-Type"] = "application/json",
                                 ["Authorization"] = "Bearer " .. os.getenv("TOKEN")}, body)
end
function request() return req end
LUA
if [[ -n ${PACE_MS:-} ]]; then
  echo "function delay() return $PACE_MS end" >> "$OUT/post.lua"
fi
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

level() { # audit workload path body [before]
  local audit=$1 name=$2 path=$3 body=$4 bin=$KF data=$OUT/data TOKEN=$TOKEN_AFTER
  if [[ ${5:-} == before ]]; then
    bin=$BEFORE data=$OUT/data-before TOKEN=$TOKEN_BEFORE audit=on
  fi
  KEYFLOW_DATA_DIR=$data KEYFLOW_AUDIT=$audit taskset -c 0 "$bin" serve --listen 127.0.0.1:18095 > "$OUT/serve-$audit.log" 2>&1 &
  local pid=$!
  for _ in $(seq 50); do curl -s http://127.0.0.1:18095/api/encryption/health >/dev/null && break; sleep 0.2; done
  BODY=$body TOKEN=$TOKEN taskset -c 1 wrk -t1 -c16 -d2s -s "$OUT/post.lua" "http://127.0.0.1:18095$path" >/dev/null
  local t0 c0 t1 c1 out
  t0=$(date +%s.%N); c0=$(cpu_ticks "$pid")
  out=$(BODY=$body TOKEN=$TOKEN taskset -c 1 wrk -t1 -c16 -d"$DUR" --latency -s "$OUT/post.lua" "http://127.0.0.1:18095$path")
  t1=$(date +%s.%N); c1=$(cpu_ticks "$pid")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  local label="audit $audit"
  [[ ${5:-} == before ]] && label="before, audit on"
  python3 - "$name" "$label" "$t0" "$t1" "$c0" "$c1" "$(getconf CLK_TCK)" <<PY | tee -a "$OUT/results.md"
import re, sys
name, audit, t0, t1, c0, c1, hz = sys.argv[1:8]
out = """$out"""
if "Requests/sec" not in out:
    sys.exit("wrk failed:\n" + out)
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
reqs = int(re.search(r"(\d+) requests in", out).group(1))
bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
cpu_s = (int(c1) - int(c0)) / int(hz)
print(f"| {name} | {audit} | {rps:,.0f} | {cpu_s / reqs * 1e6:.1f} | {bad.group(1) if bad else 0} |")
PY
}

echo "$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)${PACE_MS:+, paced: ${PACE_MS} ms before each request}"
echo "| workload | audit | req/s | server CPU µs/request | non-2xx |"
echo "|---|---|---:|---:|---:|"
for _ in $(seq "$ROUNDS"); do
  for audit in on off before; do
    [[ $audit == before && -z ${BEFORE:-} ]] && continue
    level "$audit" W1 /api/encryption/encrypt "$OUT/w1.json" "$audit"
    level "$audit" W3 /api/encryption/batch/encrypt "$OUT/w3.json" "$audit"
  done
done
echo "audit records written: $("$KF" audit list --limit 1 --json 2>/dev/null | head -c 200)"
