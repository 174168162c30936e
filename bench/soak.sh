#!/usr/bin/env bash
# Soak (issue 16): one `keyflow serve` (HTTP, audit on, journaled) under a mix of W1
# (encrypt a small value, 45 %), W2 (decrypt it, 45 %) and W3 (batch of 100, 10 %) at
# ~80 % of the peak this run measures first, for DURATION (default 600 s). Samples the
# server's RSS and open file descriptors every 5 s and reports: requests, errors (non-2xx
# and socket errors), RSS start/end/peak, descriptors start/end/max, server CPU per
# request. Fails on any error, on descriptor growth, or if the RSS keeps growing (end
# above 1.5× the value after warm-up).
#
#   bench/soak.sh [DURATION_SECS]        (needs wrk and target/release/keyflow)
#
# Server on core 0, wrk on core 1 (taskset), loopback only; bounded by DURATION.
set -euo pipefail
SECS=${1:-600}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
KF=${KEYFLOW_BIN:-$ROOT/target/release/keyflow}
OUT=/tmp/keyflow-soak
PORT=18097
command -v wrk >/dev/null || { echo "wrk missing: apt-get install -y wrk" >&2; exit 2; }
[[ -x $KF ]] || { echo "build first: cargo build --release -p keyflow-cli" >&2; exit 2; }
rm -rf "$OUT"; mkdir -p "$OUT"
export KEYFLOW_DATA_DIR=$OUT/data KEK_PASSWORD=soak-password-soak-password-0000 KEYFLOW_LOG=warn
"$KF" init --kdf-iterations 100000 >/dev/null
TOKEN=$("$KF" tokens create --role admin --name soak)
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT

taskset -c 0 "$KF" serve --listen 127.0.0.1:$PORT >"$OUT/serve.log" 2>&1 &
PID=$!
for _ in $(seq 100); do curl -s "http://127.0.0.1:$PORT/api/encryption/health" >/dev/null && break; sleep 0.2; done
CT=$(curl -s -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
    -d '{"data":"123-45-6789","purpose":"userData"}' "http://127.0.0.1:$PORT/api/encryption/encrypt" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["encryptedData"])')

cat >"$OUT/mix.lua" <<LUA
-- W1 / W2 / W3 mixed 45 / 45 / 10; a pause of DELAY_MS before each request.
local auth = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer $TOKEN"}
local w1 = wrk.format("POST", "/api/encryption/encrypt", auth, '{"data":"123-45-6789","purpose":"userData"}')
local w2 = wrk.format("POST", "/api/encryption/decrypt", auth, '{"encryptedData":"$CT"}')
local items = {}
for i = 1, 100 do items[i] = string.format('"123-45-%04d"', i) end
local w3 = wrk.format("POST", "/api/encryption/batch/encrypt", auth,
  '{"purpose":"userData","items":[' .. table.concat(items, ",") .. ']}')
local n, bad = 0, 0
local pause = tonumber(os.getenv("DELAY_MS") or "0")
function request()
  n = n + 1
  local k = n % 20
  if k < 9 then return w1 elseif k < 18 then return w2 else return w3 end
end
function delay() return pause end
function response(status) if status ~= 200 then bad = bad + 1 end end
LUA

cpu_ticks() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$PID/status"; }
fds() { ls "/proc/$PID/fd" | wc -l; }
run_wrk() { # seconds delay_ms
  DELAY_MS=$2 taskset -c 1 wrk -t1 -c16 -d"$1"s --timeout 10s -s "$OUT/mix.lua" "http://127.0.0.1:$PORT"
}
rps_of() { sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p'; }

echo "$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
run_wrk 3 0 >/dev/null
PEAK=$(run_wrk 10 0 | rps_of)
TARGET=$(python3 -c "print(0.8 * $PEAK)")
# 16 connections: each must send one request per 16/TARGET s; at the peak a request
# took 16/PEAK s, so the pause is the difference (then corrected once, measured).
DELAY=$(python3 -c "print(max(0.0, 16000 / $TARGET - 16000 / $PEAK))")
GOT=$(run_wrk 8 "$DELAY" | rps_of)
DELAY=$(python3 -c "d = $DELAY; r = $GOT; t = $TARGET; print(max(0.0, d + 16000 / t - 16000 / r) if r > 0 else d)")
echo "peak $PEAK req/s (mix, c = 16); target $TARGET req/s; pause ${DELAY} ms per request"

samples=$OUT/samples.tsv
(
    for _ in $(seq $((SECS / 5 + 2))); do
        [[ -e /proc/$PID ]] || break
        echo -e "$(date +%s)\t$(rss_kib)\t$(fds)" >>"$samples"
        sleep 5
    done
) &
SAMPLER=$!
c0=$(cpu_ticks)
out=$(run_wrk "$SECS" "$DELAY")
c1=$(cpu_ticks)
kill $SAMPLER 2>/dev/null || true
echo "$out" >"$OUT/wrk.txt"
python3 - "$samples" "$c0" "$c1" "$(getconf CLK_TCK)" "$OUT/wrk.txt" "$SECS" <<'PY'
import re, sys
samples, c0, c1, hz, wrk_path, secs = sys.argv[1:7]
out = open(wrk_path).read()
rows = [list(map(int, l.split("\t"))) for l in open(samples) if l.strip()]
reqs = int(re.search(r"(\d+) requests in", out).group(1))
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
non2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)) else 0
sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
sock_errors = sum(map(int, sock.groups())) if sock else 0
rss = [r[1] / 1024 for r in rows]
fd = [r[2] for r in rows]
warm = rss[min(2, len(rss) - 1)]
# The first sample may precede wrk's 16 connections: descriptors are compared from the
# second one (5 s in).
fd_base = fd[min(1, len(fd) - 1)]
cpu_us = (int(c1) - int(c0)) / int(hz) / reqs * 1e6
print(f"| duration | requests | req/s | non-2xx | socket errors | RSS start / after warm-up / end / peak MiB | fds idle / under load / end / max | server CPU µs/request |")
print(f"|---:|---:|---:|---:|---:|---|---|---:|")
print(f"| {secs} s | {reqs:,} | {rps:,.0f} | {non2xx} | {sock_errors} | {rss[0]:.1f} / {warm:.1f} / {rss[-1]:.1f} / {max(rss):.1f} | {fd[0]} / {fd_base} / {fd[-1]} / {max(fd)} | {cpu_us:.1f} |")
fail = []
if non2xx or sock_errors:
    fail.append("errors")
if fd[-1] > fd_base + 4:
    fail.append("file descriptors grew")
if rss[-1] > 1.5 * warm:
    fail.append("RSS kept growing")
if fail:
    sys.exit("soak FAILED: " + ", ".join(fail))
print("soak: ok")
PY
