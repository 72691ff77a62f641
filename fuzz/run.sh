#!/usr/bin/env bash
# Runs every cargo-fuzz target of tasklane for SECONDS each, one after the
# other, and prints what each did and found.
#
#   fuzz/run.sh SECONDS [TARGET...]
#
# Toolchain: cargo-fuzz needs nightly-only rustc flags (-Z sanitizer / sancov
# passes). With a nightly toolchain installed through rustup it is used;
# otherwise the stable toolchain runs with RUSTC_BOOTSTRAP=1, which unlocks
# the same flags (FUZZ_TOOLCHAIN=stable forces that). cargo-fuzz itself is
# installed with `cargo install cargo-fuzz --locked` when missing.
#
# Builds use --sanitizer none: core and the bodies hold no unsafe code, and
# AddressSanitizer would halve the executions for nothing to find. Debug
# assertions and overflow checks stay on.
#
# Corpora grow in fuzz/corpus/<target>/ (not in git); each run starts from
# them and from fuzz/regressions/<target>/. A crash leaves its input in
# fuzz/artifacts/<target>/; minimise it with
#   cargo fuzz tmin -O -a -s none <target> fuzz/artifacts/<target>/crash-...
# and check it in under fuzz/regressions/<target>/, where the stable tests
# (`cargo test -p tasklane-fuzz`) replay it. Exits 1 when any target crashed.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"

secs="${1:-}"
if ! [[ "$secs" =~ ^[0-9]+$ ]] || [ "$secs" -eq 0 ]; then
    echo "usage: fuzz/run.sh SECONDS [TARGET...]" >&2
    exit 2
fi
shift

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "cargo-fuzz missing: cargo install cargo-fuzz --locked" >&2
    cargo install cargo-fuzz --locked
fi

toolchain=()
case "${FUZZ_TOOLCHAIN:-auto}" in
    auto)
        if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
            toolchain=(+nightly)
        else
            export RUSTC_BOOTSTRAP=1
        fi
        ;;
    stable) export RUSTC_BOOTSTRAP=1 ; toolchain=(+stable) ;;
    *) toolchain=("+${FUZZ_TOOLCHAIN}") ;;
esac
echo "toolchain: $(cargo "${toolchain[@]}" --version)${RUSTC_BOOTSTRAP:+ (RUSTC_BOOTSTRAP=1)}"

flags=(-O -a -s none)
if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo "${toolchain[@]}" fuzz list)
fi

cargo "${toolchain[@]}" fuzz build "${flags[@]}"

mkdir -p logs
crashed=()
summary=()
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t" "regressions/$t"
    log="logs/$t.log"
    echo "== $t: ${secs}s"
    set +e
    cargo "${toolchain[@]}" fuzz run "${flags[@]}" "$t" "corpus/$t" "regressions/$t" -- \
        -max_total_time="$secs" -timeout=20 -rss_limit_mb=2048 -max_len=4096 -len_control=20 \
        -print_final_stats=1 >"$log" 2>&1
    status=$?
    set -e
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    last=$(grep -E '^#[0-9]+' "$log" | tail -1 | sed -E 's/^(#[0-9]+)[[:space:]]+[A-Z]+[[:space:]]+/\1 /')
    line="$t: ${secs}s, exit $status, ${execs:-?} executions; last: ${last:-?}"
    if [ "$status" -ne 0 ]; then
        crash=$(grep -o 'artifacts/[^ ]*' "$log" | tail -1)
        line="$line; CRASH ${crash:-see $log}"
        crashed+=("$t")
        grep -m1 -A3 'panicked at' "$log" || tail -20 "$log"
    fi
    summary+=("$line")
done

echo
echo "== summary (logs in fuzz/logs/)"
printf '%s\n' "${summary[@]}"
if [ "${#crashed[@]}" -gt 0 ]; then
    echo "crashed: ${crashed[*]}"
    exit 1
fi
