# Sourced by the HTTP bench scripts (http-vs-openbao.sh, light-client.sh, floor.sh): their
# arguments `[http|https|both] [DURATION] [CONCS]`, paths, and KeyFlow's environment.
# light-client.sh and floor.sh reuse the keystore, admin token, dev certificate and bodies
# that http-vs-openbao.sh leaves in $OUT, so all three must agree on what is set here.
set -euo pipefail
MODES=${1:-both}
DUR=${2:-8s}
CONCS=${3:-1,16,64}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHARED=${SHARED_BENCH:-$ROOT/../shared/bench}
KF=$ROOT/target/release/keyflow
OUT=/tmp/keyflow-bench
mkdir -p "$OUT"
export KEYFLOW_DATA_DIR=$OUT/data KEK_PASSWORD=bench-password-bench-password-00 KEYFLOW_LOG=warn
command -v wrk >/dev/null || { echo "wrk missing: apt-get install -y wrk" >&2; exit 2; }
