#!/bin/sh
# mode-pack --resume after a kill -9 at any point (issue 20): killed in the middle, after the last
# layer, while a layer's resume state is written and during the final write, the resumed
# checkpoint equals an uninterrupted run's, file for file, and warns as it did; the temporaries
# the killed run left are removed by the next run (with or without --resume), which says so with
# their size; a run on an output that another run holds stops and removes nothing; symbolic links
# of the model directory that lead outside it are not copied into the checkpoint.
. "${MODE_ROOT:?run through make check}/tests/tap.sh"
E=$MODE_FIXTURES/emoji-vl
M=$E/model
S=$MODE_FIXTURES/streams
mode-tokenize -m "$M" -o "$T/calib.ms" "$E/calib/data.jsonl"
mode-cat -J -o "$T/freq.ms" "$S/freq.jsonl"
mode-cat -J -o "$T/sens.ms" "$S/sens.jsonl"
mode-ilp -f "$T/freq.ms" -s "$T/sens.ms" --avg-bits 3 -o "$T/a3.ms"
# a mixed 2/3/4-bit allocation; 4 samples give a few experts GPTQ and most the RTN fallback
pack() { mode-pack -m "$M" -a "$T/a3.ms" --samples 4 --format gptq "$@"; }

run pack -o "$T/ref" "$T/calib.ms"
is "$rc" 0 "an uninterrupted run"
cp "$T/err" "$T/ref.err"
rtn=$(sed -n 's/.*"rtn_fallback_experts": *\([0-9]*\).*/\1/p' "$T/ref/config.json")
is "$([ "${rtn:-0}" -gt 0 ] && [ "$rtn" -lt 64 ] && echo yes)" yes "it rounds $rtn of 64 experts to nearest, GPTQ the rest"
has "$T/ref.err" "mode-pack: warning: $rtn experts had fewer than 32 calibration tokens" "and warns of it"
has "$T/ref/README.md" "| round-to-nearest fallback | $rtn experts |" "the model card counts them"

# killed POINT NAME: a run on $T/NAME that MODE_PACK_DIE_AT=POINT kills with SIGKILL
killed() {
    set +e
    env MODE_PACK_DIE_AT="$1" mode-pack -m "$M" -a "$T/a3.ms" --samples 4 --format gptq -o "$T/$2" "$T/calib.ms" 2>/dev/null
    krc=$?
    set -e
    is "$krc" 137 "$2: killed by SIGKILL at $1"
    [ ! -e "$T/$2" ] && pass "$2: nothing at the output path" || fail "$2: nothing at the output path"
}

# resumed NAME ARGS...: $T/NAME finished by `pack ARGS`, equal to $T/ref file for file, with the
# same warnings, nothing left beside it; the lines saying what it removed in $T/removed
resumed() {
    o=$T/$1
    shift
    run pack "$@" -o "$o" "$T/calib.ms"
    is "$rc" 0 "$(basename "$o"): the next run succeeds"
    if diff -r "$T/ref" "$o" >"$T/diff" 2>&1; then
        pass "$(basename "$o"): every file equals the uninterrupted run's"
    else
        fail "$(basename "$o"): every file equals the uninterrupted run's"
        diag "$(head -5 "$T/diff")"
    fi
    grep '^mode-pack: removed ' "$T/err" >"$T/removed" || true
    grep -v '^mode-pack: removed ' "$T/err" >"$T/warned" || true
    same_file "$T/warned" "$T/ref.err" "$(basename "$o"): the same warnings as the uninterrupted run"
    is "$(cd "$T" && ls -d "$(basename "$o")".resume "$(basename "$o")".tmp-?????? 2>/dev/null | tr '\n' ' ')" "" \
        "$(basename "$o"): no resume state or temporary left"
}

# bytes of the plain files of a directory
dir_bytes() { if [ -n "$1" ] && [ -d "$1" ]; then cat "$1"/* | wc -c | tr -d ' '; else echo none; fi; }

# in the middle: after layer 1 of 4
killed layer:1 mid
resumed mid --resume
is "$(cat "$T/removed")" "" "mid: nothing to remove"

# after the last layer: only the final write remains
killed layer:3 last
resumed last --resume

# while layer 2's resume state is written: its temporary stays in the resume state
killed layer-write:2 lw
t=$(ls -d "$T"/lw.resume/layer-002.tmp-* 2>/dev/null || true)
[ -n "$t" ] && [ -s "$t/model.safetensors" ] && pass "lw: layer 2's temporary is left" || fail "lw: layer 2's temporary is left"
bytes=$(dir_bytes "$t")
resumed lw --resume
is "$(cat "$T/removed")" "mode-pack: removed $t, left by an interrupted run ($bytes bytes)" "lw: the resumed run says what it removed and its size"

# during the final write: the checkpoint's temporary, model.safetensors in full, stays
killed write fw
t=$(ls -d "$T"/fw.tmp-* 2>/dev/null || true)
[ -n "$t" ] && cmp -s "$t/model.safetensors" "$T/ref/model.safetensors" && pass "fw: the final write's temporary holds the whole model.safetensors" ||
    fail "fw: the final write's temporary holds the whole model.safetensors"
bytes=$(dir_bytes "$t")
resumed fw --resume
is "$(cat "$T/removed")" "mode-pack: removed $t, left by an interrupted run ($bytes bytes)" "fw: the resumed run says what it removed and its size"

# ... and a run that starts over (the resume state removed by hand) removes it too
killed write fw2
t=$(ls -d "$T"/fw2.tmp-* 2>/dev/null || true)
bytes=$(dir_bytes "$t")
rm -rf "$T/fw2.resume"
resumed fw2
is "$(cat "$T/removed")" "mode-pack: removed $t, left by an interrupted run ($bytes bytes)" "fw2: a run without --resume removes it as well"

# a run on an output whose resume state another process holds stops, removing nothing
mkdir "$T/lk.resume" "$T/lk.tmp-AbC123" "$T/lk.tmp-AbC1234" "$T/lkx.tmp-AbC123"
echo 4242 >"$T/lk.resume/lock"
for d in lk.tmp-AbC123 lk.tmp-AbC1234 lkx.tmp-AbC123; do printf 12345 >"$T/$d/model.safetensors"; done
(
    exec 9>>"$T/lk.resume/lock"
    flock 9
    : >"$T/held"
    exec sleep 60
) &
holder=$!
i=0
while [ ! -e "$T/held" ] && [ $i -lt 1000 ]; do sleep 0.01; i=$((i + 1)); done
run pack --resume -o "$T/lk" "$T/calib.ms"
is "$rc" 73 "a run on an output another process holds: exit 73"
has "$T/err" "mode-pack: $T/lk.resume is in use by another mode-pack (pid 4242): wait for it to end" "names the holder"
[ -d "$T/lk.tmp-AbC123" ] && pass "and removes none of its temporaries" || fail "and removes none of its temporaries"
kill "$holder"
wait "$holder" 2>/dev/null || true
resumed lk --resume
is "$(cat "$T/removed")" "mode-pack: removed $T/lk.tmp-AbC123, left by an interrupted run (5 bytes)" "once it is gone, the next run removes the temporary"
[ -d "$T/lk.tmp-AbC1234" ] && [ -d "$T/lkx.tmp-AbC123" ] && pass "and nothing else" || fail "and nothing else"
# OUTDIR given with a trailing slash: the resume state and temporaries are still its siblings
run pack -o "$T/sl/" "$T/calib.ms"
is "$rc" 0 "-o DIR/: a trailing slash"
if diff -r "$T/ref" "$T/sl" >/dev/null 2>&1; then pass "-o DIR/ writes DIR"; else fail "-o DIR/ writes DIR"; fi
run env MODE_PACK_DIE_AT=layer:x mode-pack -m "$M" -a "$T/a3.ms" -o "$T/x" "$T/calib.ms"
is "$rc" 64 "MODE_PACK_DIE_AT=layer:x: exit 64"

# symbolic links in the model directory: followed inside it, not to the rest of the machine
echo "not for publication" >"$T/secret"
Tp=$(cd "$T" && pwd -P)
mkdir "$T/md" "$T/md/sub"
cp "$M"/* "$T/md/"
echo '{"inner": 1}' >"$T/md/sub/inner.json"
ln -s "$T/secret" "$T/md/secret.json"
ln -s ../secret "$T/md/escape.json"
ln -s nowhere "$T/md/dangling.json"
ln -s tokenizer_config.json "$T/md/chat_template.json"
ln -s sub/inner.json "$T/md/nested.json"
run mode-pack -m "$T/md" -a "$T/a3.ms" --samples 1 -o "$T/mdq" "$T/calib.ms"
is "$rc" 0 "a model directory with symbolic links"
for f in secret escape dangling; do
    [ ! -e "$T/mdq/$f.json" ] && pass "$f.json is not copied" || fail "$f.json is not copied"
done
grep -rqs "not for publication" "$T/mdq" && fail "the linked file's content is nowhere in the checkpoint" ||
    pass "the linked file's content is nowhere in the checkpoint"
has "$T/err" "mode-pack: warning: $T/md/secret.json: a symbolic link to $Tp/secret, outside the model directory: not copied into the checkpoint" \
    "a warning names the link and its target"
has "$T/err" "mode-pack: warning: $T/md/escape.json: a symbolic link to $Tp/secret, outside the model directory" "... a relative one too"
has "$T/err" "mode-pack: warning: $T/md/dangling.json: a symbolic link that does not resolve" "... and one to nothing"
same_file "$T/mdq/chat_template.json" "$M/tokenizer_config.json" "a link inside the model directory is copied as its content"
same_file "$T/mdq/nested.json" "$T/md/sub/inner.json" "... also into a subdirectory of it"
[ -f "$T/mdq/tokenizer.json" ] && [ ! -e "$T/mdq/sub" ] && pass "regular files are copied, directories not" || fail "regular files are copied, directories not"

# a Hugging Face cache snapshot links its files to the repository's blobs/
H=$T/hub/models--emoji--vl
mkdir -p "$H/blobs" "$H/snapshots/0123abc"
for f in "$M"/*; do
    cp "$f" "$H/blobs/$(basename "$f").blob"
    ln -s "../../blobs/$(basename "$f").blob" "$H/snapshots/0123abc/$(basename "$f")"
done
ln -s "$T/secret" "$H/snapshots/0123abc/evil.json"
run mode-pack -m "$H/snapshots/0123abc" -a "$T/a3.ms" --samples 1 -o "$T/hfq" "$T/calib.ms"
is "$rc" 0 "a Hugging Face cache snapshot"
same_file "$T/hfq/tokenizer.json" "$M/tokenizer.json" "its files linked to blobs/ are copied"
[ ! -e "$T/hfq/evil.json" ] && pass "a link elsewhere is not" || fail "a link elsewhere is not"
has "$T/err" "evil.json: a symbolic link to $Tp/secret, outside the model directory" "and is named"
done_testing
