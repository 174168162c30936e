#!/usr/bin/env bash
# Renders `keyflow compliance --format html` in a real headless browser (Debian's
# chromium) to a PNG and checks that the PNG exists and is not trivial. Not part of CI.
#
#   scripts/compliance-screenshot.sh [OUT.png] [REPORT.html]
#
# Without REPORT.html, builds `keyflow` (debug) and makes a report from a throwaway
# data directory: three purposes, a rotation, a backup and its verification. Installs
# chromium with apt-get when it is missing (root; `apt-get update` first).
set -euo pipefail
cd "$(dirname "$0")/.."

out=${1:-target/compliance-report.png}
html=${2:-}

if ! command -v chromium >/dev/null 2>&1; then
    echo "installing chromium (apt-get)…" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [[ -z "$html" ]]; then
    cargo build -q -p keyflow-cli
    kf=$PWD/target/debug/keyflow
    export KEYFLOW_DATA_DIR=$work/data KEK_PASSWORD='screenshot password, not a secret'
    export KEYFLOW_BACKUP_PASSWORD='screenshot backup password'
    "$kf" init --kdf-iterations 100000 >/dev/null
    for p in financialData userData healthData; do
        "$kf" keys generate --purpose "$p" >/dev/null
    done
    "$kf" keys rotate --purpose userData >/dev/null
    "$kf" keys backup -o "$work/keys.kfbackup" --kdf-iterations 100000 >/dev/null
    "$kf" backup verify "$work/keys.kfbackup" >/dev/null
    html=$work/report.html
    "$kf" compliance --format html --output "$html" --at "$(date -u -d '+80 days' +%Y-%m-%dT%H:%M:%SZ)"
fi

mkdir -p "$(dirname "$out")"
rm -f "$out"
# --no-sandbox: root in a container has no user namespaces for chromium's sandbox.
timeout 120 chromium --headless --no-sandbox --disable-gpu --hide-scrollbars \
    --window-size=1280,2600 --screenshot="$out" "file://$(realpath "$html")" \
    >"$work/chromium.log" 2>&1 || { cat "$work/chromium.log" >&2; exit 1; }

[[ -s "$out" ]] || { echo "no screenshot written" >&2; exit 1; }
magic=$(head -c 8 "$out" | od -An -tx1 | tr -d ' \n')
[[ "$magic" == "89504e470d0a1a0a" ]] || { echo "$out is not a PNG" >&2; exit 1; }
size=$(stat -c %s "$out")
# A blank 1280x2600 page compresses to a few KB; a rendered report is far larger.
(( size > 40000 )) || { echo "$out is only $size bytes: nothing rendered?" >&2; exit 1; }
echo "screenshot: $out ($size bytes)"
