#!/usr/bin/env bash
# Drives identical HTTP workloads (W1–W5 of ../../shared/bench/README.md) against a
# KeyFlow server and an OpenBao Transit server, each pinned to core 0, load from core 1.
#
#   bench/http-vs-openbao.sh [http|https|both] [DURATION] [CONCS]     (defaults: both 8s 1,16,64)
#
# Needs: a release build (`cargo build --release -p keyflow-cli`), wrk
# (`apt-get install -y wrk`), python3. OpenBao is installed from PyPI by the shared
# start script. Everything listens on 127.0.0.1 only; every level is bounded by DURATION.
# Output: the shared run.sh tables, appended to /tmp/keyflow-bench/results.md.
# shellcheck source=bench/common.sh
source "$(dirname "$0")/common.sh"
RESULTS=$OUT/results.md
[[ -x $KF ]] || { echo "build first: cargo build --release -p keyflow-cli" >&2; exit 2; }

bodies() { # $1 = dir, $2 = base URL, $3 = token, $4 = curl TLS flag
  python3 - "$1" "$2" "$3" "$4" <<'PY'
import base64, json, os, random, ssl, sys, urllib.request
out, url, token, insecure = sys.argv[1:5]
os.makedirs(out, exist_ok=True)
def w(name, obj):
    with open(os.path.join(out, name), "w") as f: json.dump(obj, f, separators=(",", ":"))
w("w1.json", {"data": "123-45-6789", "purpose": "userData"})
w("w3.json", {"items": ["123-45-%04d" % i for i in range(100)], "purpose": "userData"})
payload = random.Random(20261128).randbytes(1 << 20)
# The same 1 MiB of bytes OpenBao encrypts: base64 in JSON, decoded by the server.
w("w4.json", {"data": base64.b64encode(payload).decode(), "purpose": "userData", "encoding": "base64"})
w("w5.json", {"data": "123-45-6789", "purpose": "searchable", "deterministic": True, "context": {"tenant": "tenant-42"}})
ctx = ssl._create_unverified_context() if url.startswith("https") else None
req = urllib.request.Request(url + "/api/encryption/encrypt", data=json.dumps({"data": "123-45-6789", "purpose": "userData"}).encode(),
                             headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"}, method="POST")
with urllib.request.urlopen(req, context=ctx) as r:
    w("w2.json", {"encryptedData": json.load(r)["encryptedData"]})
PY
}

run_keyflow() { # $1 = http|https
  local mode=$1 port args=()
  if [[ $mode == https ]]; then port=18443; args=(--dev); else port=18080; fi
  # First start in dev mode creates the KEK, the certificate and an admin token.
  [[ -f $OUT/admin-token ]] || {
    "$KF" init >/dev/null
    "$KF" tokens create --role admin --name bench > "$OUT/admin-token"
  }
  local token; token=$(cat "$OUT/admin-token")
  taskset -c 0 "$KF" serve "${args[@]}" --listen 127.0.0.1:$port --max-body-bytes 4194304 > "$OUT/kf-$mode.log" 2>&1 &
  local pid=$!
  local scheme=http; [[ $mode == https ]] && scheme=https
  for _ in $(seq 50); do curl -sk "$scheme://127.0.0.1:$port/api/encryption/health" >/dev/null && break; sleep 0.2; done
  local base=$scheme://127.0.0.1:$port
  bodies "$OUT/bodies-kf" "$base" "$token" x
  local a="Authorization: Bearer $token"
  for w in "W1-encrypt:/api/encryption/encrypt:w1" "W2-decrypt:/api/encryption/decrypt:w2" \
           "W3-batch100:/api/encryption/batch/encrypt:w3" "W4-1MiB:/api/encryption/encrypt:w4" \
           "W5-deterministic:/api/encryption/encrypt:w5"; do
    IFS=: read -r name path body <<<"$w"
    "$SHARED/loadgen/run.sh" -n "$name-keyflow-$mode" -P $pid -o "$RESULTS" "$base" "$a" "$path" "$OUT/bodies-kf/$body.json" "$CONCS" "$DUR"
  done
  kill $pid; wait $pid 2>/dev/null || true
}

run_openbao() { # $1 = http|https
  local mode=$1 flag=()
  [[ $mode == https ]] && flag=(--tls)
  "$SHARED/openbao/start.sh" "${flag[@]}" > "$OUT/bao-$mode.start.log" 2>&1
  # shellcheck disable=SC1090
  source "/tmp/openbao-peer-$mode.env"
  python3 "$SHARED/loadgen/transit/make-bodies.py" --addr "$BAO_ADDR" --out "$OUT/bodies-bao" > /dev/null
  local a="X-Vault-Token: $BAO_TOKEN"
  for w in "W1-encrypt:/v1/transit/encrypt/userData:w1-encrypt-small" "W2-decrypt:/v1/transit/decrypt/userData:w2-decrypt-small" \
           "W3-batch100:/v1/transit/encrypt/userData:w3-encrypt-batch100" "W4-1MiB:/v1/transit/encrypt/userData:w4-encrypt-1mib" \
           "W5-deterministic:/v1/transit/encrypt/searchable:w5-convergent-encrypt"; do
    IFS=: read -r name path body <<<"$w"
    "$SHARED/loadgen/run.sh" -n "$name-openbao-$mode" -P "$BAO_PID" -o "$RESULTS" "$BAO_ADDR" "$a" "$path" "$OUT/bodies-bao/$body.json" "$CONCS" "$DUR"
  done
  "$SHARED/openbao/stop.sh" --all >/dev/null 2>&1 || true
}

for mode in http https; do
  [[ $MODES == both || $MODES == "$mode" ]] || continue
  run_keyflow "$mode"
  run_openbao "$mode"
done
grep -h '^| W' "$RESULTS" || true
