#!/bin/sh
# Regression (issue 20): with a path of some 4000 bytes the reason of a message was cut off
# (messages were cut at 1024 bytes, stream names at 255): "mode-cat: /tmp/.../ddd" and nothing
# after. A message naming a path of up to PATH_MAX bytes is now printed whole; a longer one
# loses the middle of the path, never the reason.
. "${MODE_ROOT:?run through make check}/tests/tap.sh"
M=$MODE_FIXTURES/emoji-vl/model
# nested directories: a directory path of about 4000 bytes (4096 with the file names at most)
seg=$(printf '%0199d' 0 | tr 0 d)
L=$T
while [ ${#L} -lt 3990 ]; do L=$L/$seg; done
mkdir -p "$L"
diag "a directory path of ${#L} bytes"
mode-cat -J -o "$L/a.ms" "$MODE_FIXTURES/streams/alloc.jsonl"

run mode-cat "$L/missing.ms"
is "$rc" 66 "a missing input: exit 66"
is "$(cat "$T/err")" "mode-cat: $L/missing.ms: No such file or directory" "... the whole path and the reason"

head -c 1000 "$L/a.ms" >"$L/cut.ms"
run mode-cat -c "$L/cut.ms"
is "$rc" 65 "a truncated stream: exit 65"
is "$(cat "$T/err")" "mode-cat: $L/cut.ms: truncated: the input ends inside record 3 (69 of its bytes present)" "... the whole path and the reason"

run mode-ilp --avg-bits 3 -f "$L/a.ms" -s "$L/a.ms"
is "$rc" 65 "a stream of the wrong kind: exit 65"
is "$(cat "$T/err")" "mode-ilp: $L/a.ms: expected kind 'freq', got 'alloc'" "... the whole path and the reason"

printf '%s\n' '{"magic":"MODE","version":1,"kind":"alloc"}' '{bad' >"$L/bad.jsonl"
run mode-cat -J -o "$T/x.ms" "$L/bad.jsonl"
is "$rc" 65 "mode-cat -J, a bad line: exit 65"
is "$(cat "$T/err")" "mode-cat: $L/bad.jsonl: line 2: invalid JSON at column 4: string or '}' expected near 'bad'" \
    "... the whole path, the line and the reason"

run mode-cat -o "$L/nodir/x.ms" "$L/a.ms"
is "$rc" 73 "an output that cannot be created: exit 73"
is "$(cat "$T/err")" "mode-cat: $L/nodir/x.ms: cannot create: No such file or directory" "... the whole path and the reason"

# two long paths in one message: the JSONL's and the image's
printf '{"image": "%s/none.png", "conversations": [{"from": "human", "value": "hi"}]}\n' "$L" >"$L/in.jsonl"
run mode-tokenize -m "$M" -o "$T/s.ms" "$L/in.jsonl"
is "$rc" 66 "mode-tokenize, a missing image: exit 66"
is "$(cat "$T/err")" "mode-tokenize: $L/in.jsonl:1: $L/none.png: No such file or directory" "... both paths whole and the reason"

# longer than any buffer (a relative path of 9000 bytes): the middle goes, the reason stays
long=$(printf '%09000d' 0 | tr 0 x)
run mode-cat "$long"
is "$rc" 66 "a path of 9000 bytes: exit 66"
has "$T/err" "...xxxx" "... its middle elided"
is "$(sed 's/.*\(.\{30\}\)$/\1/' "$T/err")" "xxxxxxxxxx: File name too long" "... the reason kept whole"
done_testing
