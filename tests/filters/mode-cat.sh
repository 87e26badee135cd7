#!/bin/sh
# mode-cat: JSON round trips of every stream kind, validation, merging shards, checkpoint
# description, and every documented failure with its message and exit code.
. "${MODE_ROOT:?run through make check}/tests/tap.sh"
S=$MODE_FIXTURES/streams
HUB=$MODE_FIXTURES/reference/tiny-random-qwen3vlmoe
V5=$MODE_FIXTURES/reference/tiny-random-qwen3vlmoe-v5layout

# ---- round trips: JSON lines -> stream -> JSON lines, byte for byte
for k in samples trace freq keep sens alloc logits; do
    run mode-cat -J -o "$T/$k.ms" "$S/$k.jsonl"
    is "$rc" 0 "$k: -J encodes"
    run mode-cat --values "$T/$k.ms"
    is "$rc" 0 "$k: prints"
    same_file "$T/out" "$S/$k.jsonl" "$k: --values output equals the JSON it came from"
done
run mode-cat -c "$T/samples.ms" "$T/alloc.ms"
is "$rc" 0 "-c on two streams"
is "$(cat "$T/out")" "$T/samples.ms: samples from mode-tokenize, 2 records, ok
$T/alloc.ms: alloc from mode-ilp, 4 records, ok" "-c summary lines"
mode-cat "$T/samples.ms" | sed -n 2p >"$T/line"
has "$T/line" '"tokens":{"dtype":"i32","shape":[6]}' "tensors are summarised without --values"
mode-cat --header "$T/trace.ms" >"$T/h"
is "$(wc -l <"$T/h" | tr -d ' ')" 1 "--header prints one line"
has "$T/h" '"shards":[{"layers":[0,3],"samples":[0,1]}]' "--header shows the shards"
cat "$T/samples.ms" | mode-cat -c >"$T/out"
has "$T/out" "<stdin>: samples" "stdin is the default input"
# a hand-written stream needs no trailer: mode-cat adds it
printf '%s\n' '{"magic":"MODE","version":1,"kind":"alloc"}' '{"layer":0,"bits":{"dtype":"i32","shape":[4],"data":[2,3,4,3]}}' |
    mode-cat -J | mode-cat >"$T/out"
is "$(tail -n 1 "$T/out")" '{"end":"MODE","records":1}' "-J adds the trailer"

# ---- merging shards
for k in a b c d; do mode-cat -J -o "$T/trace-$k.ms" "$S/trace-$k.jsonl"; done
run mode-cat -s -o "$T/merged.ms" "$T/trace-a.ms" "$T/trace-b.ms"
is "$rc" 0 "-s merges two layer shards"
mode-cat -c "$T/merged.ms" >"$T/out"
has "$T/out" "trace from mode-route-trace, 8 records, ok" "merged stream has the records of both"
mode-cat --header "$T/merged.ms" >"$T/out"
has "$T/out" '"shards":[{"layers":[0,1],"samples":[0,1]},{"layers":[2,3],"samples":[0,1]}]' "merged header lists both shards"
cat "$T/trace-a.ms" "$T/trace-b.ms" | mode-cat -s | mode-cat -c >"$T/out"
has "$T/out" "8 records, ok" "concatenated shards on stdin merge too"
cat "$T/trace-a.ms" "$T/trace-b.ms" >"$T/two.ms"
run mode-cat -c "$T/two.ms"
is "$(wc -l <"$T/out" | tr -d ' ')" 2 "-c reports each stream of a concatenation"
run mode-cat -s -o "$T/bad.ms" "$T/trace-a.ms" "$T/trace-c.ms"
is "$rc" 65 "overlapping shards: exit 65"
has "$T/err" "mode-cat: $T/trace-c.ms: shard {layers 1-2, samples 0-1} overlaps shard {layers 0-1, samples 0-1} of $T/trace-a.ms" "... named"
ok_absent=0; [ -e "$T/bad.ms" ] || ok_absent=1
is "$ok_absent" 1 "... and no output file is left"
run mode-cat -s "$T/trace-a.ms" "$T/trace-d.ms"
is "$rc" 65 "different arguments: exit 65"
has "$T/err" "cannot be merged with $T/trace-a.ms: argument 'router_logits' differs" "... names the argument"
run mode-cat -s "$T/trace-a.ms" "$T/alloc.ms"
is "$rc" 65 "different kinds: exit 65"
has "$T/err" "the headers' 'kind' differ" "... says so"

# ---- bad streams
head -c 1000 "$T/samples.ms" >"$T/trunc.ms"
run mode-cat -c "$T/trunc.ms"
is "$rc" 65 "truncated stream: exit 65"
has "$T/err" "mode-cat: $T/trunc.ms: truncated: the input ends inside record 2 (327 of its bytes present)" "... names the truncation"
size=$(wc -c <"$T/alloc.ms")
head -c $((size - 5)) "$T/alloc.ms" >"$T/notrailer.ms"
run mode-cat "$T/notrailer.ms"
is "$rc" 65 "stream cut inside its trailer: exit 65"
printf 'not a stream at all\n' >"$T/garbage"
run mode-cat "$T/garbage"
is "$rc" 65 "garbage: exit 65"
has "$T/err" "not a mode stream: expected a msgpack map, got byte 0x6e" "... says it is not a stream"
: >"$T/empty"
run mode-cat "$T/empty"
is "$rc" 65 "empty input: exit 65"
has "$T/err" "empty input: expected a mode stream header" "... says so"
run mode-cat -s -o "$T/out.ms" "$T/trace-a.ms" "$T/trunc.ms"
is "$rc" 65 "-s with a truncated input: exit 65"
ok_absent=0; [ -e "$T/out.ms" ] || ok_absent=1
is "$ok_absent" 1 "... and no partial output at the target path"
ls -a "$T" >"$T/listing"
is "$(grep -c 'tmp-' "$T/listing" || true)" 0 "... nor a temporary file beside it"
printf '%s\n' '{"layer":0}' >"$T/norec.jsonl"
run mode-cat -J "$T/norec.jsonl"
is "$rc" 65 "-J: a record before the header: exit 65"
has "$T/err" "$T/norec.jsonl: line 1: a record before any header" "... names the line"
printf '%s\n' '{"magic":"MODE","version":1,"kind":"alloc"}' '{"layer":0,' >"$T/badjson.jsonl"
run mode-cat -J "$T/badjson.jsonl"
is "$rc" 65 "-J: invalid JSON: exit 65"
has "$T/err" "$T/badjson.jsonl: line 2: invalid JSON" "... names the line"
printf '%s\n' '{"magic":"MODE","version":1,"kind":"alloc"}' '{"t":{"dtype":"u8","shape":[1],"data":[300]}}' >"$T/range.jsonl"
run mode-cat -J "$T/range.jsonl"
is "$rc" 65 "-J: value out of range: exit 65"
has "$T/err" "line 2: field 't': data[0]: 300 is out of range for dtype u8" "... names the field"
printf '%s\n' '{"magic":"MODE","version":1,"kind":"alloc"}' '{"end":"MODE","records":3}' >"$T/count.jsonl"
run mode-cat -J "$T/count.jsonl"
is "$rc" 65 "-J: wrong trailer count: exit 65"
# MODE_CAT_MAX_LINE (mode-cat(1), LIMITS): a line of 64 MiB + 1 byte is refused unparsed
{ printf '%s\n' '{"magic":"MODE","version":1,"kind":"alloc"}'; head -c 67108865 /dev/zero | tr '\0' ' '; echo; } >"$T/long.jsonl"
run mode-cat -J -o "$T/long.ms" "$T/long.jsonl"
is "$rc" 65 "-J: a line over 64 MiB: exit 65"
is "$(cat "$T/err")" "mode-cat: $T/long.jsonl: line 2: longer than the limit of 67108864 bytes (MODE_CAT_MAX_LINE)" "... names the line and the limit"
[ ! -e "$T/long.ms" ] && pass "... no output left" || fail "... no output left"
rm -f "$T/long.jsonl"

# ---- checkpoints
run mode-cat -m "$HUB"
is "$rc" 0 "-m describes the hub checkpoint"
has "$T/out" '"config_form":"hub","expert_layout":"hub"' "... hub forms"
has "$T/out" '"tensors":104,"bound":104' "... every tensor bound"
cp "$T/out" "$T/hub.json"
run mode-cat -m "$V5"
has "$T/out" '"config_form":"transformers-5","expert_layout":"transformers-5"' "-m on the transformers-5 checkpoint"
# the same architecture (arch, config); the weights fingerprint is of the bytes, which the
# transposed experts change
id_hub=$(sed 's/.*"identity":\({[^}]*}\).*/\1/; s/"name":"[^"]*"//' "$T/hub.json")
id_v5=$(sed 's/.*"identity":\({[^}]*}\).*/\1/; s/"name":"[^"]*"//' "$T/out")
is "$(echo "$id_hub" | sed 's/"weights":"[0-9a-f]*",//')" "$(echo "$id_v5" | sed 's/"weights":"[0-9a-f]*",//')" \
    "both layouts have the same arch and config"
[ "$id_hub" != "$id_v5" ] && pass "... and different weights fingerprints" || fail "... and different weights fingerprints"
run mode-cat -m "$HUB" --tensors
is "$(wc -l <"$T/out" | tr -d ' ')" 105 "--tensors adds one line per tensor"
has "$T/out" '{"name":"lm_head.weight","dtype":"BF16","shape":[2048,96],"file":"model-00001-of-00002.safetensors","offset":0,"bytes":393216}' "... with file and offset"

broken() { # name: a copy of the hub checkpoint in $T/name
    rm -rf "${T:?}/$1"
    cp -r "$HUB" "$T/$1"
    chmod -R u+w "$T/$1"
}
le64() { # n: 8 little-endian bytes
    n=$1; i=0
    while [ $i -lt 8 ]; do printf "\\$(printf %03o $((n % 256)))"; n=$((n / 256)); i=$((i + 1)); done
}
st_file() { # path header-json data-bytes [header-length]
    { le64 "${4:-$(printf %s "$2" | wc -c)}"; printf %s "$2"; head -c "$3" /dev/zero; } >"$1"
}

broken trunc
size=$(wc -c <"$T/trunc/model-00002-of-00002.safetensors")
head -c $((size - 100)) "$HUB/model-00002-of-00002.safetensors" >"$T/trunc/model-00002-of-00002.safetensors"
run mode-cat -m "$T/trunc"
is "$rc" 65 "truncated shard: exit 65"
has "$T/err" "model-00002-of-00002.safetensors: tensor 'model.visual.pos_embed.weight' ends past the file" "... names file and tensor"

broken hlen
st_file "$T/hlen/model-00002-of-00002.safetensors" '{}' 16 4096
run mode-cat -m "$T/hlen"
is "$rc" 65 "header length past the end: exit 65"
has "$T/err" "model-00002-of-00002.safetensors: header length 4096 runs past the end of the file (26 bytes)" "... names the file"

broken overlap
st_file "$T/overlap/model-00002-of-00002.safetensors" \
    '{"model.visual.pos_embed.weight":{"dtype":"BF16","shape":[4],"data_offsets":[0,8]},"model.visual.merger.norm.bias":{"dtype":"BF16","shape":[4],"data_offsets":[6,14]}}' 16
run mode-cat -m "$T/overlap"
is "$rc" 65 "overlapping ranges: exit 65"
has "$T/err" "model-00002-of-00002.safetensors: tensors 'model.visual.pos_embed.weight' and 'model.visual.merger.norm.bias' overlap" "... names both tensors"

broken size
st_file "$T/size/model-00002-of-00002.safetensors" '{"model.visual.pos_embed.weight":{"dtype":"F32","shape":[64,48],"data_offsets":[0,6144]}}' 6144
run mode-cat -m "$T/size"
is "$rc" 65 "dtype/size mismatch: exit 65"
has "$T/err" "tensor 'model.visual.pos_embed.weight': F32 (64, 48) needs 12288 bytes, data_offsets give 6144" "... names the tensor"

broken missing
rm "$T/missing/model-00002-of-00002.safetensors"
run mode-cat -m "$T/missing"
is "$rc" 65 "missing shard: exit 65"
has "$T/err" "model.safetensors.index.json: names model-00002-of-00002.safetensors (for tensor '" "... names the index and the shard"

broken shape
sed 's/"num_experts_per_tok": 4/"num_experts_per_tok": 40/' "$HUB/config.json" >"$T/shape/config.json"
run mode-cat -m "$T/shape"
is "$rc" 65 "inconsistent config: exit 65"
has "$T/err" "config.json: text_config.num_experts_per_tok (40) exceeds the number of experts (16)" "... names the key"

run mode-cat -m "$T/nowhere"
is "$rc" 66 "missing model directory: exit 66"

# ---- usage and I/O
run mode-cat --frobnicate
is "$rc" 64 "unknown option: exit 64"
run mode-cat -c -s
is "$rc" 64 "exclusive modes: exit 64"
run mode-cat "$T/absent.ms"
is "$rc" 66 "missing input: exit 66"
has "$T/err" "mode-cat: $T/absent.ms: No such file or directory" "... named"
run mode-cat -o "$T/no/such/dir/x" "$T/alloc.ms"
is "$rc" 73 "uncreatable output: exit 73"
set +e
mode-cat "$T/samples.ms" >/dev/full 2>"$T/err"; rc=$?
set -e
is "$rc" 74 "stdout on a full disk: exit 74"
has "$T/err" "mode-cat: <stdout>: write failed: No space left on device" "... says so"
set +e
mode-cat -J "$S/samples.jsonl" >/dev/full 2>"$T/err"; rc=$?
set -e
is "$rc" 74 "binary stream on a full disk: exit 74"
set +e
mode-cat "$T/samples.ms" >&- 2>"$T/err"; rc=$?
set -e
is "$rc" 74 "closed stdout: exit 74"
has "$T/err" "mode-cat: stdout: Bad file descriptor" "... says so"
# a reader that stops early: mode-cat dies of SIGPIPE (left at its default), no error message
set +e
mode-cat --values "$T/samples.ms" 2>"$T/err" | head -c 10 >/dev/null
set -e
is "$(wc -c <"$T/err" | tr -d ' ')" 0 "an early-closing reader ends mode-cat quietly"
run mode-cat --help
is "$rc" 0 "--help: exit 0"
has "$T/out" "usage: mode-cat" "--help prints the synopsis"
run mode-cat -V
has "$T/out" "mode-cat 0.1.0" "-V prints the version"

done_testing
