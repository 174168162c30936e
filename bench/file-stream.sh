#!/usr/bin/env bash
# Streaming file encryption through the release CLI on one core: throughput from a file
# in the page cache and peak RSS (PRODUCT.md §10: ≥ 80 % of raw AES-256-GCM; < 32 MiB
# while streaming a 1 GiB file). Results go into docs/benchmarks.md by hand.
#
#   cargo build --release -p keyflow-cli && bench/file-stream.sh [SIZE_MIB] [CPU]
#
# Uses a scratch data directory and files under ${TMPDIR:-/tmp}; deletes them at exit.
set -euo pipefail

size_mib=${1:-1024}
cpu=${2:-1}
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${KEYFLOW_BIN:-"$root/target/release/keyflow"}
[ -x "$bin" ] || { echo "build first: cargo build --release -p keyflow-cli" >&2; exit 2; }
[ -x /usr/bin/time ] || { echo "needs GNU time (/usr/bin/time)" >&2; exit 2; }

work=$(mktemp -d "${TMPDIR:-/tmp}/keyflow-file-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
export KEYFLOW_DATA_DIR="$work/data" KEK_PASSWORD="file-bench-password-file-bench-pw"
"$bin" init --kdf-iterations 100000 >/dev/null
"$bin" keys generate --purpose documents >/dev/null

head -c $((size_mib << 20)) /dev/urandom >"$work/plain"
cat "$work/plain" >/dev/null # into the page cache

# One run: prints "<seconds> <MB/s> <max RSS KiB>" for `keyflow file …` with `$@`.
run() {
  /usr/bin/time -f '%e %M' -o "$work/time" taskset -c "$cpu" "$bin" file "$@"
  read -r secs rss <"$work/time"
  awk -v s="$secs" -v r="$rss" -v m="$size_mib" 'BEGIN { printf "%6.2f s  %7.0f MB/s  max RSS %6.1f MiB\n", s, m * 1.048576 / s, r / 1024 }'
}

echo "$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), ${size_mib} MiB, CPU $cpu"
for i in 1 2 3; do
  echo -n "encrypt file→file      #$i: "; run encrypt "$work/plain" -o "$work/enc"
done
cat "$work/enc" >/dev/null
for i in 1 2 3; do
  echo -n "decrypt file→file      #$i: "; run decrypt "$work/enc" -o "$work/back"
done
cmp "$work/plain" "$work/back" && rm -f "$work/back"
# `-o -` to /dev/null: the cost of reading and sealing alone (no page-cache writes).
for i in 1 2 3; do
  echo -n "encrypt file→stdout(/dev/null) #$i: "
  /usr/bin/time -f '%e %M' -o "$work/time" taskset -c "$cpu" "$bin" file encrypt "$work/plain" -o - >/dev/null
  read -r secs rss <"$work/time"
  awk -v s="$secs" -v r="$rss" -v m="$size_mib" 'BEGIN { printf "%6.2f s  %7.0f MB/s  max RSS %6.1f MiB\n", s, m * 1.048576 / s, r / 1024 }'
done
for i in 1 2 3; do
  echo -n "decrypt file→stdout(/dev/null) #$i: "
  /usr/bin/time -f '%e %M' -o "$work/time" taskset -c "$cpu" "$bin" file decrypt "$work/enc" -o - >/dev/null
  read -r secs rss <"$work/time"
  awk -v s="$secs" -v r="$rss" -v m="$size_mib" 'BEGIN { printf "%6.2f s  %7.0f MB/s  max RSS %6.1f MiB\n", s, m * 1.048576 / s, r / 1024 }'
done
