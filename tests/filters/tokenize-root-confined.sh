#!/bin/sh
# Regression (issue 20): mode-tokenize --root DIR did not confine image paths: "../x.png" and
# "/abs/x.png" were read from outside DIR. With --root, an absolute path, a path that leaves
# DIR through "..", and one that leaves it through a symbolic link are bad lines (exit 65) named
# as file:line: path; paths that stay inside (also through ".." or a link) are read; without
# --root nothing changes (mode-tokenize(1), --root).
. "${MODE_ROOT:?run through make check}/tests/tap.sh"
M=$MODE_FIXTURES/emoji-vl/model
IMG=$MODE_FIXTURES/emoji-vl/calib/images/1f976.png
mkdir -p "$T/root/sub" "$T/outside"
cp "$IMG" "$T/root/a.png"
cp "$IMG" "$T/outside/secret.png"
ln -s ../outside/secret.png "$T/root/escape.png"
ln -s ../a.png "$T/root/sub/up.png"

line() { printf '{"image": "%s", "conversations": [{"from": "human", "value": "hi"}]}\n' "$1"; }
# refused PATH WHY: one line with PATH, tokenized with --root, must fail with exit 65 and WHY
refused() {
    line "$1" >"$T/in.jsonl"
    run mode-tokenize -m "$M" --root "$T/root" -o "$T/o.ms" "$T/in.jsonl"
    is "$rc" 65 "--root: $1 is refused with exit 65"
    is "$(cat "$T/err")" "mode-tokenize: $T/in.jsonl:1: $1: $2" "... and named"
    is "$(ls "$T" | grep -c '^o.ms$' || true)" 0 "... no output"
}
refused ../outside/secret.png "outside --root $T/root (it resolves to $T/outside/secret.png)"
refused sub/../../outside/secret.png "outside --root $T/root (it resolves to $T/outside/secret.png)"
refused escape.png "outside --root $T/root (it resolves to $T/outside/secret.png)"
refused "$T/outside/secret.png" "an absolute image path is refused with --root (paths are relative to $T/root)"
refused "$T/root/a.png" "an absolute image path is refused with --root (paths are relative to $T/root)"

# paths that stay inside are read
{ line a.png; line sub/../a.png; line sub/up.png; } >"$T/ok.jsonl"
run mode-tokenize -m "$M" --root "$T/root" -o "$T/ok.ms" "$T/ok.jsonl"
is "$rc" 0 "--root: a.png, sub/../a.png and a link inside the root are read"
run mode-cat -c "$T/ok.ms"
has "$T/out" "samples from mode-tokenize, 3 records, ok" "... three samples"

# --skip-bad skips an escaping line with a warning and keeps the rest
{ line ../outside/secret.png; line a.png; } >"$T/mixed.jsonl"
run mode-tokenize -m "$M" --root "$T/root" --skip-bad -o "$T/mixed.ms" "$T/mixed.jsonl"
is "$rc" 0 "--skip-bad goes on past an escaping path"
has "$T/err" "mode-tokenize: warning: $T/mixed.jsonl:1: skipped: ../outside/secret.png: outside --root $T/root" "... with a warning"
run mode-cat -c "$T/mixed.ms"
has "$T/out" "samples from mode-tokenize, 1 records, ok" "... keeping the good line"

# a --root that does not exist: the image is missing (66), not read from elsewhere
line a.png >"$T/in.jsonl"
run mode-tokenize -m "$M" --root "$T/nowhere" -o "$T/o.ms" "$T/in.jsonl"
is "$rc" 66 "a missing --root: exit 66"
is "$(cat "$T/err")" "mode-tokenize: $T/in.jsonl:1: --root $T/nowhere: No such file or directory" "... naming it"

# without --root: paths are relative to the input's directory and absolute ones are read
{ line ../outside/secret.png; line "$T/outside/secret.png"; } >"$T/root/free.jsonl"
run mode-tokenize -m "$M" -o "$T/free.ms" "$T/root/free.jsonl"
is "$rc" 0 "without --root, paths are not confined"
done_testing
