#!/bin/sh
# Regression (issue 20): a filter killed by SIGKILL (which no handler sees) left its hidden
# temporary ".NAME.tmp-XXXXXX" beside the output, and nothing named or removed it. A writer now
# holds an flock on its temporary; the next run that writes the same output removes the
# temporaries of that output nobody holds, says so on stderr, and leaves alone those of a
# writer still running and anything else in the directory (mode-stream(5), OUTPUT FILES).
. "${MODE_ROOT:?run through make check}/tests/tap.sh"
S=$MODE_FIXTURES/streams
M=$MODE_FIXTURES/emoji-vl/model
mode-cat -J -o "$T/alloc.ms" "$S/alloc.jsonl"
mkdir "$T/o"

# start_writer FIFO N: mode-cat -s -o $T/o/out.ms reading FIFO, whose writer never finishes;
# waits until $T/o holds more than N files (its temporary exists); sets $pid, and $feeder for
# the process holding the FIFO
start_writer() {
    mkfifo "$1"
    { head -c 100 "$T/alloc.ms"; sleep 60; } >"$1" &
    feeder=$!
    mode-cat -s -o "$T/o/out.ms" <"$1" 2>/dev/null &
    pid=$!
    i=0
    while [ $i -lt 100 ] && [ "$(ls -A "$T/o" | wc -l)" -le "$2" ]; do sleep 0.1; i=$((i + 1)); done
}
stop_feeder() { kill "$1" 2>/dev/null || true; pkill -P "$1" 2>/dev/null || true; }

start_writer "$T/f1" 0
stale=$(ls -A "$T/o")
killed=$pid killed_feeder=$feeder
# a second writer of the same output, still running when the next run comes: its temporary
# must survive
start_writer "$T/f2" 1
live=$(ls -A "$T/o" | grep -v "^$stale\$")
is "$(printf '%s\n' "$live" | grep -c '^\.out\.ms\.tmp-......$')" 1 "a second writer of the same output runs"
kill -s KILL "$killed"
set +e
wait "$killed"
status=$?
set -e
stop_feeder "$killed_feeder"
is "$status" 137 "the first is killed by SIGKILL"
ok_left=0; [ -e "$T/o/$stale" ] && ok_left=1
is "$ok_left" 1 "... and leaves its temporary behind"

# what must survive: another output's stale temporary, names that are not mkstemp's, a link
: >"$T/o/.other.ms.tmp-AAAAAA"
: >"$T/o/.out.ms.tmp-abc"
: >"$T/target"
ln -s "$T/target" "$T/o/.out.ms.tmp-LINK00"

# another filter writes the same output: the stale temporary goes, and it says so
printf '{"text": "a cold face"}\n' >"$T/in.jsonl"
run mode-tokenize -m "$M" -o "$T/o/out.ms" "$T/in.jsonl"
is "$rc" 0 "the next run writes the output"
is "$(cat "$T/err")" "mode-tokenize: warning: removed $T/o/$stale, the temporary file of an earlier run that was killed" \
    "... naming the stale temporary it removed"
ok_gone=0; [ -e "$T/o/$stale" ] || ok_gone=1
is "$ok_gone" 1 "... which is gone"
ok_live=0; [ -e "$T/o/$live" ] && ok_live=1
is "$ok_live" 1 "the running writer's temporary is left alone"
for f in .other.ms.tmp-AAAAAA .out.ms.tmp-abc .out.ms.tmp-LINK00; do
    ok_left=0; [ -e "$T/o/$f" ] || [ -L "$T/o/$f" ] && ok_left=1
    is "$ok_left" 1 "$f is left alone"
done
ok_target=0; [ -e "$T/target" ] && ok_target=1
is "$ok_target" 1 "... and so is what the link points to"
run mode-cat -c "$T/o/out.ms"
has "$T/out" "samples from mode-tokenize, 1 records, ok" "the output is complete"

# the running writer ends normally (SIGTERM: its handler removes its temporary)
kill -s TERM "$pid"
set +e
wait "$pid"
set -e
stop_feeder "$feeder"
rm "$T/o/.other.ms.tmp-AAAAAA" "$T/o/.out.ms.tmp-abc" "$T/o/.out.ms.tmp-LINK00"
is "$(ls -A "$T/o")" "out.ms" "nothing else is left"

# no stale temporary: nothing is said
run mode-cat -J -o "$T/o/out.ms" "$S/alloc.jsonl"
is "$rc" 0 "a run with no stale temporary"
is "$(cat "$T/err")" "" "... says nothing"
done_testing
