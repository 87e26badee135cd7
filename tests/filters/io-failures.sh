#!/bin/sh
# Write failures: every filter that writes to standard output, against a full disk (/dev/full),
# a closed stdout (with and without stderr), a pipe whose reader is already gone, and a reader
# that exits early (| head -c 10). A full disk and a closed stdout are exit 74 with a message
# naming the failure; a gone reader kills the filter with SIGPIPE (left at its default), or, where
# the caller ignores SIGPIPE, is the write error EPIPE, exit 74 (so is a reader that exits early
# from an output larger than a pipe holds; a small one may fit before it exits: exit 0); nothing
# hangs, crashes or trips a sanitizer. Then the files named by -o and the side outputs (--keep-out, --json, --png,
# --logits): on a full disk exit 74 naming the file, the other outputs not left behind; a device
# or FIFO given as the output is written in place, never replaced.
. "${MODE_ROOT:?run through make check}/tests/tap.sh"
HUB=$MODE_FIXTURES/reference/tiny-random-qwen3vlmoe
E=$MODE_FIXTURES/emoji-vl
S=$MODE_FIXTURES/streams
id=$(mode-cat -m "$HUB" | sed 's/.*"identity":{"arch":"[^"]*","config":"\([0-9a-f]*\)".*/\1/')
sed "1s/\"config\":\"[0-9a-f]*\"/\"config\":\"$id\"/" "$S/samples.jsonl" | mode-cat -J -o "$T/samples.ms"
mode-route-trace -m "$HUB" -o "$T/trace.ms" "$T/samples.ms"
mode-cat -J -o "$T/freq.ms" "$S/freq.jsonl"
mode-cat -J -o "$T/sens.ms" "$S/sens.jsonl"
sed -n '1,3p' "$E/calib/data.jsonl" >"$T/small.jsonl"
# a full disk reached through a link: a filter that wrongly renamed its temporary over the output
# would replace the link, not the device
ln -s /dev/full "$T/full"

# a crash or a sanitizer report in $T/err
clean() { ! grep -qE 'Sanitizer|runtime error|Segmentation|Aborted|core dumped' "$T/err"; }

# pipe_gone CMD: runs CMD (a shell command line) with its stdout on a pipe whose read end is
# closed before CMD starts (perl, which prove needs anyway, makes the pipe)
pipe_gone() {
    run timeout 60 perl -e 'pipe(my $r, my $w) or die "pipe: $!"; close $r; open(STDOUT, ">&", $w) or die "dup: $!";
        close $w; exec @ARGV or die "exec: $!"' sh -c "$1"
}

while IFS='|' read -r name cmd; do
    [ -n "$name" ] || continue
    cmd=$(printf '%s' "$cmd" | sed "s|@HUB|$HUB|g; s|@E|$E|g; s|@S|$S|g; s|@T|$T|g")
    run timeout 60 sh -c "$cmd >/dev/full"
    is "$rc" 74 "$name to a full disk: exit 74"
    has "$T/err" "<stdout>: write failed: No space left on device" "... naming the failed write"
    run timeout 60 sh -c "$cmd >&-"
    is "$rc" 74 "$name with stdout closed: exit 74"
    has "$T/err" "stdout: Bad file descriptor" "... saying so"
    # stderr closed too: its /dev/null must not take stdout's place and swallow the data
    run timeout 60 sh -c "$cmd >&- 2>&-"
    is "$rc" 74 "$name with stdout and stderr closed: exit 74"
    pipe_gone "$cmd"
    case $rc in
    141) pass "$name into a pipe with no reader: killed by SIGPIPE" ;;
    74) has "$T/err" "write failed: Broken pipe" "$name into a pipe with no reader (SIGPIPE ignored): exit 74, EPIPE said" ;;
    *) fail "$name into a pipe with no reader: exit $rc"; diag "$(cat "$T/err")" ;;
    esac
    run timeout 60 sh -c "{ $cmd; echo \$? >'$T/st'; } | head -c 10 >'$T/head'"
    st=$(cat "$T/st" 2>/dev/null || echo none)
    case $st in
    0 | 74 | 141) pass "$name | head -c 10: exit $st, no hang" ;;
    *) fail "$name | head -c 10: exit $st"; diag "$(cat "$T/err")" ;;
    esac
    is "$(wc -c <"$T/head" | tr -d ' ')" 10 "... head got its 10 bytes"
    clean && pass "... no crash, no sanitizer report" || { fail "... no crash, no sanitizer report"; diag "$(cat "$T/err")"; }
done <<'EOF'
mode-tokenize|mode-tokenize -m @E/model @T/small.jsonl
mode-route-trace|mode-route-trace -m @HUB @T/samples.ms
mode-vis-denoise|mode-vis-denoise @T/trace.ms
mode-sensitivity|mode-sensitivity -m @HUB --metric layer @T/samples.ms
mode-ilp|mode-ilp -f @T/freq.ms -s @T/sens.ms --avg-bits 3
mode-eval|mode-eval -m @HUB @T/samples.ms
mode-cat|mode-cat --values @T/samples.ms
mode-cat -c|mode-cat -c @T/samples.ms
mode-cat -s|mode-cat -s @T/trace.ms
mode-cat -J|mode-cat -J @S/samples.jsonl
mode-cat -m|mode-cat -m @HUB --tensors
EOF

# outputs far larger than a pipe's buffer: the reader exits while the filter still writes, so
# exit 0 is wrong here
mode-tokenize -m "$E/model" -o "$T/calib.ms" "$E/calib/data.jsonl"
while IFS='|' read -r name cmd; do
    [ -n "$name" ] || continue
    cmd=$(printf '%s' "$cmd" | sed "s|@HUB|$HUB|g; s|@E|$E|g; s|@T|$T|g")
    run timeout 60 sh -c "{ $cmd; echo \$? >'$T/st'; } | head -c 10 >'$T/head'"
    st=$(cat "$T/st" 2>/dev/null || echo none)
    case $st in
    74 | 141) pass "$name | head -c 10: exit $st (SIGPIPE or EPIPE)" ;;
    *) fail "$name | head -c 10: exit $st"; diag "$(cat "$T/err")" ;;
    esac
    clean && pass "... no crash, no sanitizer report" || { fail "... no crash, no sanitizer report"; diag "$(cat "$T/err")"; }
done <<'EOF'
mode-tokenize (25 MB)|mode-tokenize -m @E/model @E/calib/data.jsonl
mode-eval --logits - (181 kB)|mode-eval -m @HUB --logits - -o @T/m.json @T/samples.ms
mode-cat --values (87 MB)|mode-cat --values @T/calib.ms
mode-cat -s (25 MB)|mode-cat -s @T/calib.ms
EOF
rm -f "$T/m.json"

# -o FILE and the side outputs on a full disk: exit 74 naming the file; no other output left
mkdir "$T/o"
outputs_gone() { is "$(ls -A "$T/o" | wc -l | tr -d ' ')" 0 "... no output and no temporary left in the output directory"; }
while IFS='|' read -r name cmd; do
    [ -n "$name" ] || continue
    cmd=$(printf '%s' "$cmd" | sed "s|@HUB|$HUB|g; s|@E|$E|g; s|@T|$T|g")
    run timeout 60 sh -c "$cmd"
    is "$rc" 74 "$name on a full disk: exit 74"
    has "$T/err" "$T/full: write failed: No space left on device" "... naming the file"
    outputs_gone
done <<'EOF'
mode-tokenize -o|mode-tokenize -m @E/model -o @T/full @T/small.jsonl
mode-route-trace -o|mode-route-trace -m @HUB -o @T/full @T/samples.ms
mode-vis-denoise --keep-out|mode-vis-denoise --keep-out @T/full -o @T/o/freq.ms @T/trace.ms
mode-vis-denoise --png|mode-vis-denoise --png @T/full -o @T/o/freq.ms @T/trace.ms
mode-sensitivity -o|mode-sensitivity -m @HUB --metric layer -o @T/full @T/samples.ms
mode-ilp --json|mode-ilp -f @T/freq.ms -s @T/sens.ms --avg-bits 3 -o @T/o/alloc.ms --json @T/full
mode-ilp --png|mode-ilp -f @T/freq.ms -s @T/sens.ms --avg-bits 3 -o @T/o/alloc.ms --png @T/full
mode-eval --logits|mode-eval -m @HUB --logits @T/full -o @T/o/m.json @T/samples.ms
mode-cat -s -o|mode-cat -s -o @T/full @T/trace.ms
EOF
[ -L "$T/full" ] && pass "the link to /dev/full is still a link: outputs are written in place" ||
    fail "the link to /dev/full is still a link: outputs are written in place"

# a FIFO as the output is written through, not replaced by a regular file
mkfifo "$T/fifo"
timeout 60 cat "$T/fifo" >"$T/through" &
reader=$!
run timeout 60 mode-cat -J -o "$T/fifo" "$S/samples.jsonl"
is "$rc" 0 "mode-cat -J -o FIFO: exit 0"
wait "$reader" || true
[ -p "$T/fifo" ] && pass "... the FIFO is still a FIFO" || fail "... the FIFO is still a FIFO"
mode-cat -J "$S/samples.jsonl" >"$T/direct"
same_file "$T/through" "$T/direct" "... and the stream went through it"
done_testing
