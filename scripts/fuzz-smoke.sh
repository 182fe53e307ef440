#!/usr/bin/env bash
# Bounded fuzz run for CI (issue 7, item 4): installs cargo-fuzz when it is
# missing, builds every target in fuzz/ once, runs each for a few seconds
# from its committed seed corpus, and fails on any crash (panic, overflow,
# failed assertion, timeout or memory blow-up).
#
#   scripts/fuzz-smoke.sh            # every target, FUZZ_SECONDS each (default 5)
#   scripts/fuzz-smoke.sh voucher    # only the named targets
#   FUZZ_SECONDS=60 FUZZ_RELEASE=1 scripts/fuzz-smoke.sh   # a longer, optimised run
#
# Runs on the stable toolchain with `--sanitizer none` (libFuzzer still
# catches panics and the overflow checks the fuzz profile keeps on). New
# inputs the fuzzer finds go to a scratch directory, so the committed
# corpus stays as make-corpus wrote it. A crashing input is saved under
# fuzz/artifacts/<target>/ (gitignored); reproduce it with
# `cargo fuzz run --dev --sanitizer none --fuzz-dir fuzz <target> <file>`.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-5}"
# The fuzz crate is not a workspace member: it has its own target dir.
export CARGO_TARGET_DIR="$PWD/fuzz/target"
started=$(date +%s)

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz-smoke: installing cargo-fuzz"
  cargo install cargo-fuzz --locked --version '^0.13'
fi

# The same options for build and run, so `run` does not rebuild. The dev
# profile of fuzz/Cargo.toml (hot crates optimised, the rest not) keeps the
# build of the whole instrumented dependency graph within the CI budget;
# FUZZ_RELEASE=1 builds the optimised profile instead, for longer runs.
if [ "${FUZZ_RELEASE:-0}" = 1 ]; then
  opts=(--release --codegen-units 16 --sanitizer none --fuzz-dir fuzz)
else
  opts=(--dev --sanitizer none --fuzz-dir fuzz)
fi

if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list --fuzz-dir fuzz)
fi
echo "fuzz-smoke: building ${#targets[@]} targets"
cargo fuzz build "${opts[@]}"
built=$(date +%s)

# Fuzz runs are single-threaded: run as many at once as there are cores.
jobs="${FUZZ_JOBS:-$(nproc 2>/dev/null || echo 2)}"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
run_one() {
  local t=$1
  mkdir -p "$scratch/$t"
  if cargo fuzz run "${opts[@]}" "$t" "$scratch/$t" "fuzz/corpus/$t" -- \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
      -print_final_stats=1 >"$scratch/$t.log" 2>&1; then
    echo ok >"$scratch/$t.status"
  else
    echo failed >"$scratch/$t.status"
  fi
}
for t in "${targets[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do
    wait -n || true
  done
  run_one "$t" &
done
wait

failed=()
for t in "${targets[@]}"; do
  log="$scratch/$t.log"
  if [ "$(cat "$scratch/$t.status" 2>/dev/null)" = ok ]; then
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 || true)
    printf 'fuzz-smoke: %-16s ok   %8s runs  %s\n' "$t" "${execs:-?}" "$cov"
  else
    printf 'fuzz-smoke: %-16s FAILED\n' "$t"
    tail -n 60 "$log"
    failed+=("$t")
  fi
done

finished=$(date +%s)
echo "fuzz-smoke: build $((built - started)) s, runs $((finished - built)) s"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz-smoke: crashes in ${failed[*]} (inputs under fuzz/artifacts/)"
  exit 1
fi
echo "fuzz-smoke: ${#targets[@]} targets ran without a crash"
