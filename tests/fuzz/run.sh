#!/bin/sh
# tests/fuzz/run.sh SECONDS [TARGET...] — runs the libFuzzer targets built by `make fuzz` for
# SECONDS each (all targets by default), starting from the committed seed corpus in
# tests/fuzz/corpus/TARGET (copied: new inputs stay in the work directory). Crashes, leaks and
# timeouts are saved in tests/fuzz/artifacts/TARGET/; a fixed one goes to tests/fuzz/regress/TARGET/
# so that make check replays it. Prints one summary line per target.
set -eu
[ $# -ge 1 ] || { echo "usage: $0 SECONDS [TARGET...]" >&2; exit 64; }
secs=$1; shift
root=$(cd "$(dirname "$0")/../.." && pwd)
export MODE_FIXTURES="$root/tests/fixtures"
targets=${*:-$(cd "$root/build/fuzz" 2>/dev/null && ls)}
[ -n "$targets" ] || { echo "$0: no targets: run make fuzz first" >&2; exit 66; }
work=$(mktemp -d "${TMPDIR:-/tmp}/mode-fuzz-XXXXXX")
trap 'rm -rf "$work"' EXIT
for t in $targets; do
    mkdir -p "$work/$t" "$root/tests/fuzz/artifacts/$t"
    cp "$root/tests/fuzz/corpus/$t"/* "$work/$t/" 2>/dev/null || true
    log="$root/tests/fuzz/artifacts/$t.log"
    set +e
    "$root/build/fuzz/$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
        -artifact_prefix="$root/tests/fuzz/artifacts/$t/" -print_final_stats=1 "$work/$t" >"$log" 2>&1
    rc=$?
    set -e
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | sed 's/cov: //')
    ft=$(grep -o 'ft: [0-9]*' "$log" | tail -n 1 | sed 's/ft: //')
    found=$(ls "$root/tests/fuzz/artifacts/$t" | wc -l)
    printf '%-18s %6ss  execs %-10s cov %-6s ft %-6s corpus %-5s artifacts %s  exit %s\n' "$t" "$secs" "${execs:-?}" \
        "${cov:-?}" "${ft:-?}" "$(ls "$work/$t" | wc -l)" "$found" "$rc"
done
