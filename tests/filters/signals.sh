#!/bin/sh
# Interrupted runs leave nothing at the output path: each filter that writes a file with -o
# (mode-eval, mode-route-trace, mode-cat, mode-vis-denoise, mode-sensitivity, mode-ilp,
# mode-tokenize; mode-pack is tests/filters/mode-pack.sh) is stopped by SIGINT or SIGTERM while it
# waits for the rest of its input (fed through a pipe that pauses), computes, or blocks on a FIFO,
# and neither the output nor its temporary file may remain. Every stage fed a stream whose
# producer died mid-way exits 65 naming the truncation.
. "${MODE_ROOT:?run through make check}/tests/tap.sh"
HUB=$MODE_FIXTURES/reference/tiny-random-qwen3vlmoe
id=$(mode-cat -m "$HUB" | sed 's/.*"identity":{"arch":"[^"]*","config":"\([0-9a-f]*\)".*/\1/')
sed "1s/\"config\":\"[0-9a-f]*\"/\"config\":\"$id\"/" "$MODE_FIXTURES/streams/samples.jsonl" | mode-cat -J -o "$T/samples.ms"
half=$(( $(wc -c <"$T/samples.ms") / 2 ))

# interrupted: $1 = signal, rest = the command, which reads the stream from stdin and writes
# $T/o/result; the input arrives through a FIFO whose writer stops half-way (feed=none: the
# command reads its own input and is stopped once its output exists, while it computes or
# blocks on a FIFO of its own)
mkfifo "$T/fifo"
interrupted() {
    sig=$1; shift
    rm -rf "$T/o"; mkdir -p "$T/o"
    if [ "${feed:-}" = none ]; then
        sleep 30 >"$T/fifo" &
    else
        { head -c "${feed_bytes:-$half}" "${feed:-$T/samples.ms}"; sleep 30; } >"$T/fifo" &
    fi
    feeder=$!
    "$@" <"$T/fifo" 2>"$T/err" &
    pid=$!
    # wait until the output's temporary file exists: the filter runs, blocked on its input
    i=0
    while [ $i -lt 100 ] && [ -z "$(ls -A "$T/o")" ]; do sleep 0.1; i=$((i + 1)); done
    started=$(ls -A "$T/o" | wc -l)
    kill -s "$sig" "$pid" 2>/dev/null || true
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
unset feed feed_bytes
interrupted TERM mode-eval -m "$HUB" --logits "$T/o/logits" -o "$T/o/result"
unset expect_files
E=$MODE_FIXTURES/emoji-vl
feed=none
# mode-sensitivity reads all its samples, then opens its output and computes (seconds)
mode-tokenize -m "$E/model" -o "$T/calib.ms" "$E/calib/data.jsonl"
interrupted INT mode-sensitivity -m "$E/model" --metric layer -o "$T/o/result" "$T/calib.ms"
# mode-ilp writes its alloc stream, then the picture: here a FIFO nobody reads, where it blocks
mode-cat -J -o "$T/freq.ms" "$MODE_FIXTURES/streams/freq.jsonl"
mode-cat -J -o "$T/sens.ms" "$MODE_FIXTURES/streams/sens.jsonl"
mkfifo "$T/png-fifo"
interrupted TERM mode-ilp -f "$T/freq.ms" -s "$T/sens.ms" --avg-bits 3 -o "$T/o/result" --png "$T/png-fifo"
# mode-tokenize opens its output before the first line, then decodes 20000 images (seconds; an
# image that is a FIFO is refused, not waited for: image-not-regular.sh)
cp "$E/calib/images/1f976.png" "$T/image.png"
awk 'BEGIN { for (i = 0; i < 20000; i++) print "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"image\", \"image\": \"image.png\"}]}]}" }' >"$T/img.jsonl"
interrupted INT mode-tokenize -m "$E/model" --min-pixels 1024 --max-pixels 1024 -o "$T/o/result" "$T/img.jsonl"
unset feed

# a full disk on standard output: exit 74, said (every filter: io-failures.sh)
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
# every other stage that reads a stream
cut_half() { head -c $(( $(wc -c <"$1") / 2 )) "$1" >"$2"; }
cut_half "$T/trace.ms" "$T/trace-half.ms"
cut_half "$T/freq.ms" "$T/freq-half.ms"
cut_half "$T/sens.ms" "$T/sens-half.ms"
cut_half "$T/calib.ms" "$T/calib-half.ms"
mode-ilp --method uniform --avg-bits 4 -m "$E/model" -o "$T/u4.ms"
cut_half "$T/u4.ms" "$T/u4-half.ms"
truncated() { # name, then the command
    name=$1; shift
    run "$@"
    is "$rc" 65 "$name on a stream cut in half: exit 65"
    has "$T/err" "truncated" "... names the truncation"
}
truncated mode-vis-denoise mode-vis-denoise -o "$T/x.ms" "$T/trace-half.ms"
truncated "mode-sensitivity" mode-sensitivity -m "$E/model" --metric layer -o "$T/x.ms" "$T/calib-half.ms"
truncated "mode-ilp (freq)" mode-ilp -f "$T/freq-half.ms" -s "$T/sens.ms" --avg-bits 3 -o "$T/x.ms"
truncated "mode-ilp (sens)" mode-ilp -f "$T/freq.ms" -s "$T/sens-half.ms" --avg-bits 3 -o "$T/x.ms"
truncated "mode-cat (print)" mode-cat "$T/trace-half.ms"
truncated "mode-cat -s" mode-cat -s -o "$T/x.ms" "$T/trace.ms" "$T/trace-half.ms"
truncated "mode-pack (alloc)" mode-pack -m "$E/model" -a "$T/u4-half.ms" -o "$T/x.pack" "$T/calib.ms"
truncated "mode-pack (samples)" mode-pack -m "$E/model" -a "$T/u4.ms" -o "$T/x.pack" "$T/calib-half.ms"
# a live producer that dies mid-way, in a pipeline
run sh -c "sh -c 'head -c $half $T/samples.ms; kill -9 \$\$' | mode-route-trace -m '$HUB' -o '$T/x.ms'"
is "$rc" 65 "mode-route-trace fed by a producer killed mid-way: exit 65"
has "$T/err" "truncated" "... names the truncation"
[ ! -e "$T/x.ms" ] && [ ! -e "$T/x.pack" ] && pass "none of them left an output" || fail "none of them left an output"
# JSONL cut in the middle of a line
head -c 150 "$E/calib/data.jsonl" >"$T/cut.jsonl"
run mode-tokenize -m "$E/model" -o "$T/x.ms" "$T/cut.jsonl"
is "$rc" 65 "mode-tokenize on JSONL cut inside a line: exit 65"
has "$T/err" "cut.jsonl:3: bad JSON" "... names the line"
done_testing
