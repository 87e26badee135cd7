#!/bin/sh
# tests/slurm/run.sh — `make slurm-check`: the experiment graph sharded over a real Slurm cluster
# equals the single-process run, byte for byte but for the headers' shards.
#
# Starts a throwaway single-node cluster (tests/slurm/cluster.sh: munged, slurmctld, slurmd, all in
# a temporary directory; the Debian packages installed first when missing), then on emoji-vl
# (every 8th calibration line, widths 2 and 4, one thread everywhere):
#   1. pipelines/mode.mk up to alloc-mode.ms in one process, and with SCHED=slurm SHARDS=4: route
#      trace in 4 layer shards, merge, vis-denoise, KL sensitivity in 4 layer shards with the merged
#      trace's keep masks, merge, then mode-ilp. One sensitivity task is made to fail once
#      (MODE_SLURM_FAIL_ONCE, a hook of the job script): it alone is resubmitted.
#      Every stream (samples, trace, freq, keep, sens, alloc) is compared with build/tests/slurm/
#      stream-cmp: records byte for byte, headers equal once "shards" is left out (at any depth:
#      the provenance of freq, keep, sens and alloc holds the merged trace's header), trailers
#      equal but for mode-sensitivity's and mode-ilp's summary (seconds; mode-cat -s writes none).
#      The pictures (freq.png, alloc-mode.png) are compared with cmp.
#   2. The trace with smaller batches (BATCH_TOKENS=300: 5 batches) sharded by samples (4 shards of
#      whole batches) and as batch x layer boxes (5 x 2), each against its single-process run; the
#      single-process runs with 300 and 16384 tokens a batch must differ (the comparer sees it).
#   3. A second run submits nothing; one shard removed is the only one submitted again; a newer
#      calibration stream makes every shard run again.
#   4. pipelines/slurm/driver.sbatch: make run as a job, submitting the trace's 2 shards itself.
# Where Slurm cannot be installed or started it prints one line "SKIP: make slurm-check: why" and
# exits 0. The daemons are stopped on every exit (trap), failures included.
. "${MODE_ROOT:?run through make slurm-check}/tests/tap.sh"
cd "$MODE_ROOT"
CMP=$MODE_ROOT/build/tests/slurm/stream-cmp
# the cluster's directory: munged wants every directory above its socket searchable by all, which
# $T (mode 700) is not
cluster=$(mktemp -d "${TMPDIR:-/tmp}/mode-slurm-XXXXXX")
chmod 755 "$cluster"
export MODE_PROGRESS=off

cleanup() {
    rc=$?
    trap - EXIT INT TERM HUP
    [ ! -d "$cluster" ] || tests/slurm/cluster.sh stop "$cluster" >/dev/null 2>&1 || true
    rm -rf "$T" "$cluster"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

t_start=$(date +%s)
if [ "$(id -u)" != 0 ]; then
    echo "SKIP: make slurm-check: not root (slurmd runs as root to start jobs)"
    exit 0
fi
set +e
tests/slurm/cluster.sh start "$cluster" >"$T/start.out" 2>"$T/start.err"
rc=$?
set -e
if [ $rc -eq 77 ]; then
    echo "SKIP: make slurm-check: $(tail -n 1 "$T/start.err")"
    exit 0
fi
if [ $rc -ne 0 ]; then
    fail "the cluster starts (exit $rc)"
    sed 's/^/# /' "$T/start.err"
    exit 1
fi
pass "a single-node Slurm cluster starts and runs a job ($(($(date +%s) - t_start)) s)"
[ ! -s "$T/start.err" ] || diag "$(cat "$T/start.err")"
SLURM_CONF=$cluster/slurm.conf
export SLURM_CONF

mk() { # the experiment graph, reduced
    timeout 1200 make --no-print-directory -f pipelines/mode.mk BIN="$MODE_BIN" CALIB_EVERY=8 BITS=2,4 THREADS=1 "$@"
}
ran() { # rc name: a make run, its stderr shown when it failed
    is "$rc" 0 "$2"
    [ "$rc" -eq 0 ] || tail -n 30 "$T/err" | sed 's/^/# /'
}
# compare STREAM [-t summary]: the single-process and the sharded STREAM of directories $ref, $got
compare() {
    f=$1
    shift
    set +e
    out=$("$CMP" -i shards "$@" "$ref/$f" "$got/$f" 2>&1)
    c=$?
    set -e
    is "$c" 0 "$(basename "$got"): $f as the single process's"
    diag "$(echo "$out" | sed "s|$T/||g")"
}

# ---- 1. the sharded graph, one task failing once ------------------------------------------------
t0=$(date +%s)
run mk OUT="$T/local" "$T/local/alloc-mode.ms"
ran "$rc" "the single-process run up to alloc-mode.ms"
t1=$(date +%s)
MODE_SLURM_FAIL_ONCE=sens-kl.layers-2-2
export MODE_SLURM_FAIL_ONCE
run mk SCHED=slurm SHARDS=4 OUT="$T/slurm" "$T/slurm/alloc-mode.ms"
unset MODE_SLURM_FAIL_ONCE
ran "$rc" "the sharded run on Slurm up to alloc-mode.ms"
t2=$(date +%s)
diag "single process $((t1 - t0)) s, on Slurm $((t2 - t1)) s"
cp "$T/err" "$T/slurm.err"
ref=$T/local got=$T/slurm
for f in calib.ms trace.ms freq.ms keep.ms; do compare $f; done
for f in sens-kl.ms alloc-mode.ms; do compare $f -t summary; done
same_file "$ref/freq.png" "$got/freq.png" "slurm: freq.png as the single process's"
same_file "$ref/alloc-mode.png" "$got/alloc-mode.png" "slurm: alloc-mode.png as the single process's"
is "$("$MODE_BIN/mode-cat" --header "$got/trace.ms" | sed 's/.*,"shards"://')" \
    '[{"layers":[0,0]},{"layers":[1,1]},{"layers":[2,2]},{"layers":[3,3]}]}' "the merged trace is made of 4 layer shards"
is "$("$MODE_BIN/mode-cat" --header "$got/sens-kl.ms" | sed 's/.*,"shards"://')" \
    '[{"layers":[0,0]},{"layers":[1,1]},{"layers":[2,2]},{"layers":[3,3]}]}' "the merged sensitivity is made of 4 layer shards"
logs=$got/slurm/logs
has "$logs/sens-kl.layers-0-0.log" "--vision-tokens key --keep $got/keep.ms" "the sensitivity tasks measure the key tokens of the merged trace's keep masks"
is "$(grep -c '^== sens-kl.layers-2-2: start' "$logs/sens-kl.layers-2-2.log")" 2 "the failing task ran twice"
has "$logs/sens-kl.layers-2-2.log" "failing once on purpose" "its first attempt failed through the hook"
is "$(grep '^== sens-kl.layers-2-2: start' "$logs/sens-kl.layers-2-2.log" | sed -n '2s/.*task \([0-9]*\) (\([0-9]*\) task(s) in this submission).*/\1 \2/p')" \
    "2 1" "it was resubmitted alone: array task 2 in a submission of 1 task"
has "$T/slurm.err" "sens-kl: resubmitting the failed task(s) alone: sens-kl.layers-2-2 (array indices 2)" "submit.sh says so"
n_once=0
for l in 0-0 1-1 3-3; do [ "$(grep -c '^== sens-kl.layers-'$l': start' "$logs/sens-kl.layers-$l.log")" -eq 1 ] && n_once=$((n_once + 1)); done
is "$n_once" 3 "the other sensitivity tasks ran once"
diag "per task (seconds, peak resident memory):"
diag "$(grep -h '^== .*: exit' "$logs"/*.log)"

# ---- 2. sample shards and batch x layer boxes -------------------------------------------------------
t0=$(date +%s)
run mk OUT="$T/local-300" BATCH_TOKENS=300 "$T/local-300/trace.ms"
ran "$rc" "the single-process trace in batches of 300 tokens"
set +e
out=$("$CMP" -i shards "$T/local/trace.ms" "$T/local-300/trace.ms" 2>&1)
c=$?
set -e
is "$c" 1 "the comparer tells batches of 16384 from batches of 300 tokens"
diag "$(echo "$out" | sed "s|$T/||g")"
run mk SCHED=slurm TRACE_BY=samples SHARDS=4 BATCH_TOKENS=300 OUT="$T/samples" "$T/samples/trace.ms"
ran "$rc" "the trace sharded by samples"
run mk SCHED=slurm TRACE_BY=layers SHARDS=2 BATCH_TOKENS=300 OUT="$T/grid" "$T/grid/trace.ms"
ran "$rc" "the trace sharded by batch and layer"
is "$(cut -f1 "$T/samples/slurm/trace.tasks" | tr '\n' ' ')" \
    "trace.samples-0-7 trace.samples-8-11 trace.samples-12-15 trace.samples-16-21 " "4 sample shards of whole batches"
is "$(wc -l <"$T/grid/slurm/trace.tasks" | tr -d ' ')" 10 "5 batches x 2 layer ranges"
ref=$T/local-300
for got in "$T/samples" "$T/grid"; do compare trace.ms; done
diag "trace by samples and by batch x layer: $(($(date +%s) - t0)) s"

# ---- 3. what a second run submits ----------------------------------------------------------------
run mk SCHED=slurm SHARDS=4 OUT="$T/slurm" "$T/slurm/alloc-mode.ms"
ran "$rc" "a second run of the sharded graph"
ok=$(grep -c 'submitting' "$T/err" || true)
is "$ok" 0 "it submits nothing"
rm -f "$T/samples/shards/trace/samples-8-11.ms" "$T/samples/trace.ms"
run mk SCHED=slurm TRACE_BY=samples SHARDS=4 BATCH_TOKENS=300 OUT="$T/samples" "$T/samples/trace.ms"
ran "$rc" "a run with one shard removed"
has "$T/err" "trace: submitting 1 of 4 task(s)" "only that shard is submitted"
got=$T/samples
compare trace.ms
touch "$T/samples/calib.ms"
run mk SCHED=slurm TRACE_BY=samples SHARDS=4 BATCH_TOKENS=300 OUT="$T/samples" "$T/samples/trace.ms"
ran "$rc" "a run after the calibration stream changed"
has "$T/err" "trace: submitting 4 of 4 task(s)" "every shard runs again"

# ---- 4. make itself as a job (pipelines/slurm/driver.sbatch) ------------------------------------------
t0=$(date +%s)
run timeout 600 sbatch --wait --quiet --output="$T/driver.out" --cpus-per-task=1 --mem=1G pipelines/slurm/driver.sbatch \
    BIN="$MODE_BIN" CALIB_EVERY=8 BITS=2,4 THREADS=1 SHARDS=2 OUT="$T/driver" "$T/driver/trace.ms"
is "$rc" 0 "the driver job runs the graph, which submits its own arrays"
[ "$rc" -eq 0 ] || tail -n 30 "$T/driver.out" | sed 's/^/# /'
has "$T/driver.out" "trace: submitting 2 of 2 task(s)" "it submitted the trace's 2 shards"
ref=$T/local got=$T/driver
compare trace.ms
diag "driver job: $(($(date +%s) - t0)) s"

diag "make slurm-check: $(($(date +%s) - t_start)) s in all"
done_testing
