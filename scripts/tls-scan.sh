#!/usr/bin/env bash
# Scans the TLS listener of `keyflow serve --dev` with sslscan (Debian's package,
# installed if missing) and fails unless it offers only TLS 1.2 and 1.3, only AEAD
# suites with forward secrecy (ECDHE on TLS 1.2), no renegotiation, no compression and
# no Heartbleed (issue 16; docs/testing.md). The server runs from a throwaway data
# directory on a free loopback port and is stopped on exit.
#
#   scripts/tls-scan.sh            # builds the debug binary if needed
#   KEYFLOW_BIN=target/release/keyflow scripts/tls-scan.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v sslscan >/dev/null; then
    echo "installing sslscan" >&2
    timeout 300 apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y -qq sslscan >&2
fi
bin=${KEYFLOW_BIN:-target/debug/keyflow}
if [[ ! -x $bin ]]; then
    cargo build -q -p keyflow-cli
fi
bin=$(realpath "$bin")

work=$(mktemp -d)
server=
cleanup() {
    [[ -n $server ]] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
(cd "$work" && KEYFLOW_LISTEN="127.0.0.1:$port" KEYFLOW_DATA_DIR="$work/data" \
    exec "$bin" serve --dev >"$work/server.log" 2>&1) &
server=$!
for _ in $(seq 1 60); do
    if curl -ks --max-time 1 "https://127.0.0.1:$port/api/encryption/health" >/dev/null; then
        break
    fi
    if ! kill -0 "$server" 2>/dev/null; then
        echo "the server did not start:" >&2
        cat "$work/server.log" >&2
        exit 1
    fi
    sleep 0.5
done

timeout 120 sslscan --no-colour "127.0.0.1:$port" >"$work/scan.txt"
cat "$work/scan.txt"

fail=0
bad() {
    echo "FAIL: $*" >&2
    fail=1
}
for p in SSLv2 SSLv3 TLSv1.0 TLSv1.1; do
    grep -Eq "^$p +disabled" "$work/scan.txt" || bad "$p is not disabled"
done
for p in TLSv1.2 TLSv1.3; do
    grep -Eq "^$p +enabled" "$work/scan.txt" || bad "$p is not enabled"
done
grep -q "Session renegotiation not supported" "$work/scan.txt" \
    || grep -q "Secure session renegotiation supported" "$work/scan.txt" \
    || bad "insecure renegotiation"
grep -v "not vulnerable to heartbleed" "$work/scan.txt" | grep -q "vulnerable to heartbleed" \
    && bad "heartbleed"
grep -q "Compression enabled" "$work/scan.txt" && bad "TLS compression enabled"

suites=$(grep -E "^(Preferred|Accepted) +TLSv" "$work/scan.txt" || true)
[[ -n $suites ]] || bad "no cipher suites listed"
while read -r _ proto _ _ suite _; do
    case $proto in
        TLSv1.3)
            [[ $suite =~ ^TLS_(AES_128_GCM|AES_256_GCM|CHACHA20_POLY1305)_SHA(256|384)$ ]] \
                || bad "TLS 1.3 suite $suite"
            ;;
        TLSv1.2)
            # Forward secrecy (ECDHE) and an AEAD (GCM or ChaCha20-Poly1305).
            [[ $suite =~ ^ECDHE-(ECDSA|RSA)-(AES(128|256)-GCM-SHA(256|384)|CHACHA20-POLY1305)$ ]] \
                || bad "TLS 1.2 suite $suite"
            ;;
        *) bad "protocol $proto offers $suite" ;;
    esac
done <<<"$suites"

if [[ $fail -ne 0 ]]; then
    exit 1
fi
echo "tls-scan: only TLS 1.2/1.3 and AEAD suites with forward secrecy ($(wc -l <<<"$suites") suites)"
