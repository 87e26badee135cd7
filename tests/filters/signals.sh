#!/bin/sh
# Interrupted runs leave nothing at the output path: each filter that writes a file is stopped by
# SIGINT or SIGTERM while it waits for the rest of its input (fed through a pipe that pauses), and
# neither the output nor its temporary file may remain. A stage whose producer died mid-way exits
# 65 naming the truncation.
. "${MODE_ROOT:?run through make check}/tests/tap.sh"
HUB=$MODE_FIXTURES/reference/tiny-random-qwen3vlmoe
id=$(mode-cat -m "$HUB" | sed 's/.*"identity":{"arch":"[^"]*","config":"\([0-9a-f]*\)".*/\1/')
sed "1s/\"config\":\"[0-9a-f]*\"/\"config\":\"$id\"/" "$MODE_FIXTURES/streams/samples.jsonl" | mode-cat -J -o "$T/samples.ms"
half=$(( $(wc -c <"$T/samples.ms") / 2 ))

# interrupted: $1 = signal, rest = the command, which reads the stream from stdin and writes
# $T/o/result; the input arrives through a FIFO whose writer stops half-way
mkfifo "$T/fifo"
interrupted() {
    sig=$1; shift
    rm -rf "$T/o"; mkdir -p "$T/o"
    { head -c "${feed_bytes:-$half}" "${feed:-$T/samples.ms}"; sleep 30; } >"$T/fifo" &
    feeder=$!
    "$@" <"$T/fifo" 2>"$T/err" &
    pid=$!
    # wait until the output's temporary file exists: the filter runs, blocked on its input
    i=0
    while [ $i -lt 100 ] && [ -z "$(ls -A "$T/o")" ]; do sleep 0.1; i=$((i + 1)); done
    started=$(ls -A "$T/o" | wc -l)
    kill -s "$sig" "$pid"
    set +e
    wait "$pid"
    status=$?
    set -e
    kill "$feeder" 2>/dev/null || true
    pkill -P "$feeder" 2>/dev/null || true
    name=$(basename "$1")
    is "$started" "${expect_files:-1}" "$name started its output ($sig test)"
    case $sig in INT) signo=2 ;; TERM) signo=15 ;; esac
    is "$status" "$((128 + signo))" "$name died of SIG$sig"
    is "$(ls -A "$T/o" | wc -l)" 0 "$name killed by SIG$sig leaves no output and no temporary file"
}
interrupted TERM mode-eval -m "$HUB" -o "$T/o/result"
interrupted INT mode-route-trace -m "$HUB" -o "$T/o/result"
interrupted TERM mode-cat -s -o "$T/o/result"
# mode-vis-denoise opens its outputs before it reads the trace
mode-route-trace -m "$HUB" -o "$T/trace.ms" "$T/samples.ms"
feed=$T/trace.ms feed_bytes=$(( $(wc -c <"$T/trace.ms") / 2 ))
expect_files=2
interrupted INT mode-vis-denoise --keep-out "$T/o/keep" -o "$T/o/result"
unset feed feed_bytes expect_files

# a full disk on standard output: exit 74, said
E=$MODE_FIXTURES/emoji-vl
mode-cat -J -o "$T/freq.ms" "$MODE_FIXTURES/streams/freq.jsonl"
mode-cat -J -o "$T/sens.ms" "$MODE_FIXTURES/streams/sens.jsonl"
run sh -c "mode-ilp -f '$T/freq.ms' -s '$T/sens.ms' --avg-bits 3 >/dev/full"
is "$rc" 74 "mode-ilp to a full disk: exit 74"
run sh -c "mode-tokenize -m '$E/model' '$E/calib/data.jsonl' >/dev/full"
is "$rc" 74 "mode-tokenize to a full disk: exit 74"
run sh -c "mode-vis-denoise '$T/trace.ms' >/dev/full"
is "$rc" 74 "mode-vis-denoise to a full disk: exit 74"

# a producer that dies mid-way: the consumer names the truncation, exit 65
head -c "$half" "$T/samples.ms" >"$T/half.ms"
run mode-eval -m "$HUB" "$T/half.ms"
is "$rc" 65 "mode-eval on a stream cut in half: exit 65"
has "$T/err" "truncated" "... names the truncation"
run mode-route-trace -m "$HUB" -o "$T/t.ms" "$T/half.ms"
is "$rc" 65 "mode-route-trace on a stream cut in half: exit 65"
run mode-cat -c "$T/half.ms"
is "$rc" 65 "mode-cat -c on a stream cut in half: exit 65"
done_testing
