#!/bin/sh
# Regression (issue 20): mode-cat printing a cut stream stopped at a 64 KiB buffer boundary: the
# last complete records read were lost and the output ended in half a line. It now prints the
# header and every complete record read, ends with a complete line, and then fails with 65
# naming where the input is cut.
. "${MODE_ROOT:?run through make check}/tests/tap.sh"
# 3000 records of about 100 bytes of JSON each: far more than one output buffer
awk 'BEGIN {
    print "{\"magic\":\"MODE\",\"version\":1,\"kind\":\"alloc\",\"producer\":{\"name\":\"test\",\"version\":\"0\"}}"
    for (i = 0; i < 3000; i++) printf "{\"layer\":%d,\"bits\":{\"dtype\":\"i32\",\"shape\":[4],\"data\":[2,3,4,%d]},\"note\":\"record %d\"}\n", i, i % 5, i
}' >"$T/all.jsonl"
mode-cat -J -o "$T/all.ms" "$T/all.jsonl"
mode-cat --values "$T/all.ms" >"$T/all.out"
# the first 1234 records as a stream of their own: its size less one byte falls inside record
# 1235 of the whole stream (a record is longer than a trailer)
k=1234
head -n $((k + 1)) "$T/all.jsonl" | mode-cat -J -o "$T/k.ms"
cut=$(($(wc -c <"$T/k.ms") - 1))
head -c "$cut" "$T/all.ms" >"$T/cut.ms"

run mode-cat --values "$T/cut.ms"
is "$rc" 65 "a stream cut inside record $((k + 1)): exit 65"
has "$T/err" "mode-cat: $T/cut.ms: truncated: the input ends inside record $((k + 1)) (" "... naming the record that is cut"
head -n $((k + 1)) "$T/all.out" >"$T/want"
same_file "$T/out" "$T/want" "the header and all $k complete records are printed, nothing more"
is "$(tail -c 1 "$T/out" | od -An -c | tr -d ' ')" '\n' "the output ends with a complete line"

# the same through a pipe, in the default (summary) form
head -c "$cut" "$T/all.ms" | mode-cat >"$T/out" 2>"$T/err" && rc=0 || rc=$?
is "$rc" 65 "from a pipe: exit 65"
mode-cat "$T/all.ms" | head -n $((k + 1)) >"$T/want"
same_file "$T/out" "$T/want" "... every complete record printed"

# cut inside the trailer: every record is printed, the trailer line is not
size=$(wc -c <"$T/all.ms")
head -c $((size - 3)) "$T/all.ms" >"$T/cut.ms"
run mode-cat --values "$T/cut.ms"
is "$rc" 65 "a stream cut inside its trailer: exit 65"
head -n 3001 "$T/all.out" >"$T/want"
has "$T/err" "mode-cat: $T/cut.ms: truncated: the input ends inside the trailer, after 3000 records (" "... named as a cut trailer"
same_file "$T/out" "$T/want" "... all 3000 records are printed"
done_testing
