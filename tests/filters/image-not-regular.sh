#!/bin/sh
# Regression (issue 20): an image path naming /dev/zero was read up to the 1 GiB limit (over a
# gigabyte allocated) before it was refused, and a FIFO without a writer blocked mode-tokenize
# for ever. Anything but a regular file is now refused before a byte is read: exit 66 naming
# the path and what it is (mode-tokenize(1), LIMITS), and --skip-bad skips the line.
. "${MODE_ROOT:?run through make check}/tests/tap.sh"
M=$MODE_FIXTURES/emoji-vl/model

line() { printf '{"image": "%s", "conversations": [{"from": "human", "value": "hi"}]}\n' "$1"; }

line /dev/zero >"$T/zero.jsonl"
run mode-tokenize -m "$M" -o "$T/zero.ms" "$T/zero.jsonl"
is "$rc" 66 "/dev/zero as an image: exit 66"
is "$(cat "$T/err")" "mode-tokenize: $T/zero.jsonl:1: /dev/zero: not a regular file (a character device)" "... naming the path and its type"
is "$(ls "$T" | grep -c 'zero.ms' || true)" 0 "... and no output is left"

mkfifo "$T/fifo.png"
line fifo.png >"$T/fifo.jsonl"
# a FIFO nobody writes: without the check, open(2) blocks; timeout ends such a run with 124
run timeout 20 mode-tokenize -m "$M" -o "$T/fifo.ms" "$T/fifo.jsonl"
is "$rc" 66 "a FIFO as an image: exit 66, without waiting for a writer"
is "$(cat "$T/err")" "mode-tokenize: $T/fifo.jsonl:1: $T/fifo.png: not a regular file (a FIFO)" "... naming it"

mkdir "$T/dir.png"
line dir.png >"$T/dir.jsonl"
run mode-tokenize -m "$M" -o "$T/dir.ms" "$T/dir.jsonl"
is "$rc" 66 "a directory as an image: exit 66"
is "$(cat "$T/err")" "mode-tokenize: $T/dir.jsonl:1: $T/dir.png: is a directory" "... naming it"

# --skip-bad: the line is skipped, the good one kept
cp "$MODE_FIXTURES/emoji-vl/calib/images/1f976.png" "$T/a.png"
{ line /dev/zero; line a.png; } >"$T/two.jsonl"
run mode-tokenize -m "$M" --skip-bad -o "$T/two.ms" "$T/two.jsonl"
is "$rc" 0 "--skip-bad skips the /dev/zero line"
has "$T/err" "mode-tokenize: warning: $T/two.jsonl:1: skipped: /dev/zero: not a regular file (a character device)" "... with a warning"
run mode-cat -c "$T/two.ms"
has "$T/out" "samples from mode-tokenize, 1 records, ok" "... and keeps the other line"
done_testing
