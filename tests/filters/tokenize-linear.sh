#!/bin/sh
# Regression: mode-tokenize was quadratic in the length of a line (PCRE2 re-validated the UTF-8 of
# the rest of the subject on every match: a 0.5 MB line took 81 s, 16 MB never finished). An 8 MB
# line must now finish inside a timeout that linear time meets with a wide margin (~3 s on the
# 2-core build machine) and that the old quadratic cost exceeded by an hour; the ids must equal
# those of the same text tokenized in pieces at the separators.
. "${MODE_ROOT:?run through make check}/tests/tap.sh"
M=$MODE_FIXTURES/emoji-vl/model
piece='the quick brown fox jumps over 123 lazy dogs, élan café naïve — '
# 8 MiB of whole pieces (each piece ends in a space, so the pretokenizer splits between pieces)
n=$(( 8 * 1024 * 1024 / $(printf '%s' "$piece" | wc -c) ))
{ printf '{"text": "'; yes "$piece" | head -n "$n" | tr -d '\n'; printf '"}\n'; } >"$T/long.jsonl"
run timeout 240 mode-tokenize -m "$M" -o "$T/long.ms" "$T/long.jsonl"
is "$rc" 0 "an 8 MB line is tokenized within 240 s (exit $rc)"
ntok() { mode-cat --values "$1" | sed -n 2p | sed 's/.*"tokens":{"dtype":"i32","shape":\[\([0-9]*\)\].*/\1/'; }
printf '{"text": "%s"}\n' "$piece" | mode-tokenize -m "$M" -o "$T/1.ms"
printf '{"text": "%s%s"}\n' "$piece" "$piece" | mode-tokenize -m "$M" -o "$T/2.ms"
c1=$(ntok "$T/1.ms") c2=$(ntok "$T/2.ms")
is "$(ntok "$T/long.ms")" "$((c1 + (n - 1) * (c2 - c1)))" "as many tokens as the first piece ($c1) and $((n - 1)) more ($((c2 - c1)) each)"
done_testing
