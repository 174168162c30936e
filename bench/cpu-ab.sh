#!/usr/bin/env bash
# Server CPU per small request (W1: one 64-byte encrypt, c = 16) for several KeyFlow
# binaries and the bare-hyper floor, in one run: the servers take turns, round after
# round, so the machine's drift lands on all of them alike. Each server is pinned to
# core 0 and driven from core 1 by the shared run.sh, exactly like bench/http-vs-openbao.sh
# drives W1 and bench/floor.sh drives the floor.
#
#   bench/cpu-ab.sh [http|https|both] [DURATION] [ROUNDS] NAME=BINARY...
#   e.g. bench/cpu-ab.sh both 5s 3 before=/tmp/keyflow-before after=target/release/keyflow
#
# Needs: the `floor` example (`cargo build --release -p keyflow-server --example floor`,
# or FLOOR=path), wrk, and the binaries named. The first binary creates the KEK, an admin
# token and (serve --dev) the dev certificate in /tmp/keyflow-bench if they are missing.
# Output: the run.sh tables in /tmp/keyflow-bench/cpu-ab.md, then one line per level
# (req/s, server CPU µs per request, ratio to the floor of the same round) and per
# server the range over the rounds. Every level is bounded by DURATION (+ 2 s warm-up);
# a server that does not answer within 10 s is skipped.
# shellcheck source=bench/common.sh
source "$(dirname "$0")/common.sh" "${1:-both}" "${2:-5s}" 16
ROUNDS=${3:-3}
shift $(($# < 3 ? $# : 3))
[[ $# -ge 1 ]] || { sed -n '2,17p' "$0" >&2; exit 2; }
FLOOR=${FLOOR:-$ROOT/target/release/examples/floor}
[[ -x $FLOOR ]] || { echo "no floor example at $FLOOR" >&2; exit 2; }
RESULTS=$OUT/cpu-ab.md
TLS=$KEYFLOW_DATA_DIR/tls
mkdir -p "$OUT/bodies-ab"
: > "$OUT/cpu-ab.tsv"
echo '{"data":"123-45-6789","purpose":"userData"}' > "$OUT/bodies-ab/w1.json"
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT

first=${1#*=}
if [[ ! -f $OUT/admin-token ]]; then
  "$first" init >/dev/null
  "$first" tokens create --role admin --name bench > "$OUT/admin-token"
fi
token=$(cat "$OUT/admin-token")

# start NAME BINARY MODE: starts the server on core 0, sets PID and BASE.
start() {
  local name=$1 bin=$2 mode=$3 scheme=http port=18080
  [[ $mode == https ]] && scheme=https
  if [[ $name == floor ]]; then
    port=18090
    local args=(127.0.0.1:$port)
    [[ $mode == https ]] && args+=("$TLS/dev-cert.pem" "$TLS/dev-key.pem")
    taskset -c 0 "$bin" "${args[@]}" > "$OUT/ab-$name-$mode.log" 2>&1 &
  else
    local args=(--listen 127.0.0.1:$port --max-body-bytes 4194304)
    [[ $mode == https ]] && args+=(--dev)
    taskset -c 0 "$bin" serve "${args[@]}" > "$OUT/ab-$name-$mode.log" 2>&1 &
  fi
  PID=$!
  BASE=$scheme://127.0.0.1:$port
  for _ in $(seq 50); do
    curl -sk -o /dev/null -X POST "$BASE/api/encryption/health" && return 0
    sleep 0.2
  done
  return 1
}

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }  # the server's user + system CPU, clock ticks

level() { # NAME BINARY MODE ROUND
  local name=$1 bin=$2 mode=$3 round=$4 t0 t1 out reqs
  if ! start "$name" "$bin" "$mode"; then
    echo "# $name $mode: no answer within 10 s, skipped" | tee -a "$RESULTS"
    kill "$PID" 2>/dev/null || true; return 0
  fi
  local load=(--max-other 0 -w 0 -P "$PID" "$BASE" "Authorization: Bearer $token" /api/encryption/encrypt "$OUT/bodies-ab/w1.json" 16)
  # Warm-up (not recorded), then the level; the server's CPU is read around the level
  # alone, to the clock tick, rather than run.sh's whole-percent figure.
  timeout 30 "$SHARED/loadgen/run.sh" "${load[@]}" 2s >/dev/null || true
  t0=$(ticks "$PID")
  out=$(timeout 60 "$SHARED/loadgen/run.sh" -n "W1-$name-$mode-r$round" -o "$RESULTS" "${load[@]}" "$DUR" || true)
  t1=$(ticks "$PID")
  reqs=$(sed -n 's/^ *\([0-9]*\) requests in.*/\1/p' <<<"$out" | tail -1)
  echo "$name $mode $round ${reqs:-0} $((t1 - t0)) $(getconf CLK_TCK)" >> "$OUT/cpu-ab.tsv"
  kill "$PID"; wait "$PID" 2>/dev/null || true
}

for mode in http https; do
  [[ $MODES == both || $MODES == "$mode" ]] || continue
  if [[ $mode == https && ! -f $TLS/dev-cert.pem ]]; then
    # serve --dev writes the dev certificate on its first start.
    start first "$first" https || true
    kill "$PID"; wait "$PID" 2>/dev/null || true
  fi
done

for round in $(seq "$ROUNDS"); do
  for mode in http https; do
    [[ $MODES == both || $MODES == "$mode" ]] || continue
    level floor "$FLOOR" "$mode" "$round"
    for spec in "$@"; do level "${spec%%=*}" "${spec#*=}" "$mode" "$round"; done
  done
done

# cpu-ab.tsv: NAME MODE ROUND REQUESTS CPU_TICKS TICKS_PER_S; other CPU from run.sh's table.
python3 - "$OUT/cpu-ab.tsv" "$RESULTS" "$DUR" <<'PY'
import collections, re, sys
tsv, results, dur = sys.argv[1], sys.argv[2], float(sys.argv[3].rstrip("s"))
other = {}
for line in open(results):
    m = re.match(r"\| W1-(.+)-(https?)-r(\d+) \| 16 \|.* (\d+) \| (\d+) \|$", line.strip())
    if m:
        other[(m[1], m[2], int(m[3]))] = int(m[5])
rows = {}
for line in open(tsv):
    name, mode, rnd, reqs, ticks, hz = line.split()
    rows[(name, mode, int(rnd))] = (int(reqs), int(ticks) / int(hz))
per = collections.defaultdict(list)
for key in sorted(rows, key=lambda k: (k[1], k[2], k[0] != "floor", k[0])):
    name, mode, rnd = key
    reqs, cpu = rows[key]
    us = cpu * 1e6 / reqs if reqs else float("nan")
    f = rows.get(("floor", mode, rnd))
    ratio = us / (f[1] * 1e6 / f[0]) if f and f[0] else float("nan")
    per[(name, mode)].append((reqs / dur, us, ratio))
    print(f"{mode:5} r{rnd} {name:12} {reqs / dur:8,.0f} req/s {us:6.1f} µs/req {ratio:5.2f}x floor  other CPU {other.get(key, '-')}%")
print()
for (name, mode), v in sorted(per.items(), key=lambda kv: (kv[0][1], kv[0][0] != "floor", kv[0][0])):
    r, u, q = zip(*v)
    med = sorted(u)[len(u) // 2]
    print(f"{mode:5} {name:12} req/s {min(r):,.0f}-{max(r):,.0f}  µs/req {min(u):.1f}-{max(u):.1f} (median {med:.1f})  x floor {min(q):.2f}-{max(q):.2f}")
PY
