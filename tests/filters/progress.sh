#!/bin/sh
# Progress of long work on stderr (issue 24: make demo wrote to a log silently for minutes,
# progress appeared only on a terminal): --progress log prints whole lines — one at the start,
# then at most one every MODE_PROGRESS_SECONDS, and one at the end — with the time elapsed and,
# where the total is known, an ETA; auto is log when stderr is not a terminal; off prints none;
# a bad value is a usage error.
. "${MODE_ROOT:?run through make check}/tests/tap.sh"
E=$MODE_FIXTURES/emoji-vl
M=$E/model
head -n 12 "$E/calib/data.jsonl" | sed "s|\"images/|\"$E/calib/images/|g" >"$T/d.jsonl"

run mode-tokenize --progress log -m "$M" -o "$T/s.ms" "$T/d.jsonl"
is "$rc" 0 "mode-tokenize --progress log"
has "$T/err" "mode-tokenize: lines 1/12 (8%), 0s, ETA " "a first line at once, with the fraction and an ETA"
has "$T/err" "mode-tokenize: lines 12/12 (100%), " "a last line at the end"
is "$(grep -c '' "$T/err")" 2 "and nothing between them within 10 s"
cr=$(tr -cd '\r' <"$T/err" | wc -c)
is "$cr $(tail -c 1 "$T/err" | od -An -c | tr -d ' ')" '0 \n' "whole lines: no carriage return, a newline at the end"

# auto under make or a pipe (stderr not a terminal) is log; MODE_PROGRESS chooses when no flag
unset MODE_PROGRESS
run mode-route-trace -m "$M" -o "$T/t.ms" "$T/s.ms"
has "$T/err" "mode-route-trace: samples " "auto, stderr not a terminal: lines (route-trace)"
has "$T/err" "mode-route-trace: samples 12/12 (100%), " "... the last one with the total once the input has ended"
MODE_PROGRESS=off run mode-route-trace -m "$M" -o "$T/t.ms" "$T/s.ms"
is "$(cat "$T/err")" "" "MODE_PROGRESS=off: nothing"
MODE_PROGRESS=off run mode-route-trace --progress log -m "$M" -o "$T/t.ms" "$T/s.ms"
has "$T/err" "mode-route-trace: samples 12/12 (100%), " "--progress wins over MODE_PROGRESS"
# a line every N seconds: with a tiny interval every batch prints one
MODE_PROGRESS_SECONDS=0.001 run mode-eval --progress log --batch-tokens 1 -m "$M" -o "$T/e.json" "$T/s.ms"
n=$(grep -c "mode-eval: .* tokens/s; samples" "$T/err")
ok=no; [ "$n" -ge 12 ] && ok=yes
is "$ok" yes "MODE_PROGRESS_SECONDS=0.001: a line per batch of one sample ($n lines for 12)"

run mode-sensitivity --progress log --metric layer --layers 0 -m "$M" -o "$T/sens.ms" "$T/s.ms"
has "$T/err" "mode-sensitivity: measurements " "mode-sensitivity --progress log"
has "$T/err" "(100%), " "... to the end"
mode-ilp --method uniform --avg-bits 4 -m "$M" -o "$T/u4.ms"
run mode-pack --progress log -m "$M" -a "$T/u4.ms" -o "$T/pk" "$T/s.ms"
has "$T/err" "mode-pack: layer 1/4, expert " "mode-pack --progress log"
has "$T/err" "mode-pack: layer 4/4, expert 16/16, " "... to the last expert"

run mode-eval --progress sometimes -m "$M" "$T/s.ms"
is "$rc" 64 "a bad --progress: exit 64"
has "$T/err" "mode-eval: --progress: 'sometimes' is not auto, tty, log or off" "... naming the value"
MODE_PROGRESS=loud run mode-vis-denoise -o "$T/f.ms" "$T/t.ms"
is "$rc" 64 "a bad MODE_PROGRESS: exit 64"
MODE_PROGRESS_SECONDS=-1 run mode-vis-denoise -o "$T/f.ms" "$T/t.ms"
is "$rc" 64 "a bad MODE_PROGRESS_SECONDS: exit 64"
done_testing
