#!/usr/bin/env bash
# The 1 MiB workload (W4) again, against both servers, with a lighter client: the same
# wrk, the same bodies and pinning as bench/http-vs-openbao.sh, but a Lua script with no
# `response()` hook. The shared script's hook hands every response body to Lua (a 1.4 MB
# string per response), which saturates wrk's core before KeyFlow's: its W4 levels show
# the server below 100 % CPU. Run after bench/http-vs-openbao.sh (it reuses its bodies).
#
#   bench/light-client.sh [http|https|both] [DURATION] [CONCS]    (defaults: both 8s 1,16,64)
#
# Output: one markdown row per level (also appended to /tmp/keyflow-bench/light.md):
#   | server | proto | conc | req/s | p50 ms | p99 ms | non-2xx | server CPU % |
# shellcheck source=bench/common.sh
source "$(dirname "$0")/common.sh"
[[ -f $OUT/bodies-kf/w4.json && -f $OUT/bodies-bao/w4-encrypt-1mib.json ]] || {
  echo "run bench/http-vs-openbao.sh first (it writes the bodies)" >&2; exit 2; }
LUA=$OUT/light.lua
cat > "$LUA" <<'LUA'
function init(args)
  local f = assert(io.open(os.getenv("LIGHT_BODY"), "rb")); local body = f:read("*a"); f:close()
  local hdrs = {}
  for k, v in pairs(wrk.headers) do hdrs[k] = v end -- Host
  hdrs["Content-Type"] = "application/json"
  local k, v = string.match(os.getenv("LIGHT_AUTH"), "^%s*([^:]+):%s*(.-)%s*$")
  hdrs[k] = v
  req = wrk.format("POST", nil, hdrs, body)
end
function request() return req end
LUA

# Whatever this script started is stopped on any exit.
trap 'kill $(jobs -p) 2>/dev/null; "$SHARED/openbao/stop.sh" --all >/dev/null 2>&1 || true' EXIT

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

level() { # name proto pid url auth body conc
  local name=$1 proto=$2 pid=$3 url=$4 auth=$5 body=$6 conc=$7
  LIGHT_BODY=$body LIGHT_AUTH=$auth taskset -c 1 wrk -t1 -c"$conc" -d2s --timeout 30s -s "$LUA" "$url" >/dev/null
  local t0 c0 t1 c1 out
  t0=$(date +%s.%N); c0=$(cpu_ticks "$pid")
  out=$(LIGHT_BODY=$body LIGHT_AUTH=$auth taskset -c 1 wrk -t1 -c"$conc" -d"$DUR" --timeout 30s --latency -s "$LUA" "$url")
  t1=$(date +%s.%N); c1=$(cpu_ticks "$pid")
  python3 - "$name" "$proto" "$conc" "$t0" "$t1" "$c0" "$c1" "$(getconf CLK_TCK)" <<PY | tee -a "$OUT/light.md"
import re, sys
name, proto, conc, t0, t1, c0, c1, hz = sys.argv[1:9]
out = """$out"""
if "Requests/sec" not in out or "requests in" not in out:
    sys.exit("wrk failed:\n" + out)
def ms(s):
    v, u = re.match(r"([\d.]+)(us|ms|s)", s).groups()
    return float(v) * {"us": 0.001, "ms": 1, "s": 1000}[u]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
p50 = ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
p99 = ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
cpu = (int(c1) - int(c0)) / int(hz) / (float(t1) - float(t0)) * 100
print(f"| {name} | {proto} | {conc} | {rps:,.0f} | {p50:.2f} | {p99:.2f} | {bad.group(1) if bad else 0} | {cpu:.0f} |")
PY
}

for mode in http https; do
  [[ $MODES == both || $MODES == "$mode" ]] || continue
  if [[ $mode == https ]]; then port=18443; args=(--dev); scheme=https; else port=18080; args=(); scheme=http; fi
  taskset -c 0 "$KF" serve "${args[@]}" --listen 127.0.0.1:$port --max-body-bytes 4194304 > "$OUT/kf-light-$mode.log" 2>&1 &
  pid=$!
  for _ in $(seq 50); do curl -sk "$scheme://127.0.0.1:$port/api/encryption/health" >/dev/null && break; sleep 0.2; done
  for c in ${CONCS//,/ }; do
    level KeyFlow "$mode" "$pid" "$scheme://127.0.0.1:$port/api/encryption/encrypt" \
      "Authorization: Bearer $(cat "$OUT/admin-token")" "$OUT/bodies-kf/w4.json" "$c"
  done
  kill "$pid"; wait "$pid" 2>/dev/null || true

  flag=(); [[ $mode == https ]] && flag=(--tls)
  "$SHARED/openbao/start.sh" "${flag[@]}" > "$OUT/bao-light-$mode.log" 2>&1
  # shellcheck disable=SC1090
  source "/tmp/openbao-peer-$mode.env"
  for c in ${CONCS//,/ }; do
    level OpenBao "$mode" "$BAO_PID" "$BAO_ADDR/v1/transit/encrypt/userData" \
      "X-Vault-Token: $BAO_TOKEN" "$OUT/bodies-bao/w4-encrypt-1mib.json" "$c"
  done
  "$SHARED/openbao/stop.sh" --all >/dev/null 2>&1 || true
done
