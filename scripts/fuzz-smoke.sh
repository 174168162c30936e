#!/usr/bin/env bash
# Smoke run of every cargo-fuzz target (docs/fuzzing.md): installs cargo-fuzz if it is
# missing, builds all targets, runs each from its seed corpus for a short, bounded time,
# and fails on the first crash (the input is kept under fuzz/artifacts/<target>/).
#
# New inputs found go to a temporary directory, never into the committed seeds.
#
#   FUZZ_SECONDS  time per target (default 20)
#   FUZZ_RUNS     executions per target, whichever comes first (default 200000)
#   FUZZ_TARGETS  space-separated subset (default: every target)
#   FUZZ_NICE     niceness of builds and runs (default 10)
set -euo pipefail

cd "$(dirname "$0")/../fuzz"
seconds="${FUZZ_SECONDS:-20}"
runs="${FUZZ_RUNS:-200000}"
niceness="${FUZZ_NICE:-10}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz-smoke: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

# cargo-fuzz needs nightly flags: a nightly toolchain if there is one, else the stable
# compiler with RUSTC_BOOTSTRAP (what docs/file-format.md does).
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    fuzz=(cargo +nightly fuzz)
else
    export RUSTC_BOOTSTRAP=1
    fuzz=(cargo fuzz)
fi

# No sanitizer: the fuzzed crates forbid unsafe code; the assertions in each target
# are the oracle (ARCHITECTURE decision 70).
nice -n "$niceness" "${fuzz[@]}" build --sanitizer none

if [[ -n "${FUZZ_TARGETS:-}" ]]; then
    read -r -a targets <<<"$FUZZ_TARGETS"
else
    mapfile -t targets < <("${fuzz[@]}" list)
fi

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
failed=()
for t in "${targets[@]}"; do
    mkdir -p "$scratch/$t" "corpus/$t"
    echo "fuzz-smoke: $t (${seconds}s or ${runs} runs)" >&2
    # The first directory receives new inputs; the seeds are only read.
    if ! nice -n "$niceness" "${fuzz[@]}" run --sanitizer none "$t" "$scratch/$t" "corpus/$t" -- \
        -max_total_time="$seconds" -runs="$runs" -rss_limit_mb=2048 -timeout=10 \
        -print_final_stats=1 >"$scratch/$t.log" 2>&1; then
        tail -n 40 "$scratch/$t.log" >&2
        failed+=("$t")
        continue
    fi
    grep -E '^stat::number_of_executed_units|^Done ' "$scratch/$t.log" | tail -n 2 >&2 || true
done

if ((${#failed[@]})); then
    echo "fuzz-smoke: FAILED: ${failed[*]} (inputs under fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzz-smoke: ${#targets[@]} targets, no crash" >&2
