#!/usr/bin/env bash
# The floor of KeyFlow's HTTP stack under the shared load generator: the `floor` example
# (bare hyper on the same runtime and TLS setup, no application, a fixed small answer)
# driven exactly like bench/http-vs-openbao.sh drives KeyFlow's small encrypt (W1).
# No change to KeyFlow's handlers or layers can beat these numbers.
#
#   bench/floor.sh [http|https|both] [DURATION] [CONCS]    (defaults: both 8s 1,16,64)
#
# Needs: `cargo build --release -p keyflow-server --example floor`, wrk; for HTTPS, the
# dev certificate that bench/http-vs-openbao.sh creates (its `serve --dev` run).
# Output: the shared run.sh tables, appended to /tmp/keyflow-bench/floor.md.
# shellcheck source=bench/common.sh
source "$(dirname "$0")/common.sh"
FLOOR=$ROOT/target/release/examples/floor
TLS=$KEYFLOW_DATA_DIR/tls
[[ -x $FLOOR ]] || { echo "build first: cargo build --release -p keyflow-server --example floor" >&2; exit 2; }
mkdir -p "$OUT/bodies-floor"
echo '{"data":"123-45-6789","purpose":"userData"}' > "$OUT/bodies-floor/w1.json"
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT
for mode in http https; do
  [[ $MODES == both || $MODES == "$mode" ]] || continue
  args=(127.0.0.1:18090); scheme=http
  if [[ $mode == https ]]; then
    [[ -f $TLS/dev-cert.pem && -f $TLS/dev-key.pem ]] || { echo "no dev certificate in $TLS: run bench/http-vs-openbao.sh https first" >&2; exit 2; }
    args+=("$TLS/dev-cert.pem" "$TLS/dev-key.pem"); scheme=https
  fi
  taskset -c 0 "$FLOOR" "${args[@]}" > "$OUT/floor-$mode.log" 2>&1 &
  pid=$!
  for _ in $(seq 50); do curl -sk -X POST "$scheme://127.0.0.1:18090/" >/dev/null && break; sleep 0.2; done
  "$SHARED/loadgen/run.sh" -n "W1-floor-$mode" -P $pid -o "$OUT/floor.md" "$scheme://127.0.0.1:18090" \
    "Authorization: Bearer none" /api/encryption/encrypt "$OUT/bodies-floor/w1.json" "$CONCS" "$DUR"
  kill $pid; wait $pid 2>/dev/null || true
done
grep -h '^| W1-floor' "$OUT/floor.md" || true
