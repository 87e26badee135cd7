#!/bin/sh
# Non-finite weights (issue 20, point 5): a NaN in one routed expert, or an Inf in a bf16 tensor,
# used to pass silently (mode-eval printed perplexity nan with exit 0, mode-sensitivity gave
# every delta 0, mode-pack packed the NaNs) and the model's `weights` fingerprint equalled the
# clean model's. Now every program that opens the model refuses it (exit 65) naming the file, the
# tensor and the element; the fingerprint changes with any byte (one finite element's lowest bit
# flipped); and finite weights that overflow in the forward pass make mode-eval fail naming the
# sample instead of reporting nan.
. "${MODE_ROOT:?run through make check}/tests/tap.sh"
E=$MODE_FIXTURES/emoji-vl
M=$E/model

# poke FILE TENSOR ELEMENT[-LAST] HEX|flip: overwrites elements of a safetensors tensor in place,
# at the offset its header gives (HEX: the element's bits, most significant first; flip: xor of
# its lowest bit)
poke() {
    perl -MJSON::PP -e '
        my ($f, $name, $el, $v) = @ARGV;
        open my $h, "+<", $f or die "$f: $!\n"; binmode $h;
        read($h, my $l, 8) == 8 or die "$f: short\n"; my $n = unpack "Q<", $l;
        read($h, my $j, $n) == $n or die "$f: short header\n";
        my $t = decode_json($j)->{$name} or die "$f: no tensor $name\n";
        my $es = {BF16 => 2, F16 => 2, F32 => 4}->{$t->{dtype}} or die "$name: dtype $t->{dtype}\n";
        my ($e0, $e1) = $el =~ /^(\d+)(?:-(\d+))?$/ or die "$el: not an element\n";
        for my $e ($e0 .. ($e1 // $e0)) {
            my $at = 8 + $n + $t->{data_offsets}[0] + $e * $es;
            seek $h, $at, 0; read $h, my $old, $es;
            my $new = $v eq "flip" ? chr(ord(substr $old, 0, 1) ^ 1) . substr($old, 1) : reverse pack("H*", $v);
            seek $h, $at, 0; print $h $new;
        }
        close $h or die "$f: $!\n";' "$@"
}

head -n 3 "$E/calib/data.jsonl" >"$T/d.jsonl"
mode-tokenize -m "$M" -o "$T/s.ms" "$T/d.jsonl"
mode-ilp --method uniform --avg-bits 4 -m "$M" -o "$T/u4.ms"

# layer 1, expert 5, gate_up_proj (16, 128, 192) hub layout: element [5][17][3] = NaN (bf16 7fc0)
X=model.language_model.layers.1.mlp.experts.gate_up_proj
cp -R "$M" "$T/nan"
poke "$T/nan/model.safetensors" $X $((5 * 128 * 192 + 17 * 192 + 3)) 7fc0
want="$T/nan/model.safetensors: tensor '$X' holds a non-finite value (nan) at element 126147"
run mode-route-trace -m "$T/nan" -o "$T/trace.ms" "$T/s.ms"
is "$rc" 65 "mode-route-trace refuses a NaN in an expert: exit 65"
has "$T/err" "mode-route-trace: $want" "... naming file, tensor and element"
run mode-sensitivity -m "$T/nan" --metric layer -o "$T/sens.ms" "$T/s.ms"
is "$rc" 65 "mode-sensitivity refuses it: exit 65"
has "$T/err" "mode-sensitivity: $want" "... naming the tensor"
run mode-pack -m "$T/nan" -a "$T/u4.ms" -o "$T/packed" "$T/s.ms"
is "$rc" 65 "mode-pack refuses it: exit 65"
has "$T/err" "mode-pack: $want" "... naming the tensor"
[ ! -e "$T/packed" ] && pass "... and writes no checkpoint" || fail "... and writes no checkpoint"
run mode-eval -m "$T/nan" -o "$T/m.json" "$T/s.ms"
is "$rc" 65 "mode-eval refuses it: exit 65"
has "$T/err" "mode-eval: $want" "... naming the tensor"
[ ! -e "$T/m.json" ] && pass "... and writes no report" || fail "... and writes no report"

# +Inf (bf16 7f80) in layer 2's down_proj (16, 96, 128), element [3][40][9]
Y=model.language_model.layers.2.mlp.experts.down_proj
cp -R "$M" "$T/inf"
poke "$T/inf/model.safetensors" $Y $((3 * 96 * 128 + 40 * 128 + 9)) 7f80
run mode-eval -m "$T/inf" "$T/s.ms"
is "$rc" 65 "mode-eval refuses a bf16 +Inf: exit 65"
has "$T/err" "mode-eval: $T/inf/model.safetensors: tensor '$Y' holds a non-finite value (inf) at element 41993" \
    "... naming the tensor, the element and inf"
run mode-route-trace -m "$T/inf" -o "$T/trace.ms" "$T/s.ms"
is "$rc" 65 "mode-route-trace refuses it: exit 65"

# the fingerprint identifies the bytes: one finite element's lowest bit flipped changes it
cp -R "$M" "$T/flip"
poke "$T/flip/model.safetensors" $X 1000 flip
mode-route-trace -m "$M" -o "$T/tc.ms" "$T/s.ms"
mode-route-trace -m "$T/flip" -o "$T/tf.ms" "$T/s.ms"
# the first "weights" of the header is the stream's own model (the inputs' headers follow it)
fp() { mode-cat --header "$1" | grep -o '"weights":"[0-9a-f]*"' | head -n 1 | cut -d'"' -f4; }
a=$(fp "$T/tc.ms") b=$(fp "$T/tf.ms")
is "${#a} ${#b}" "64 64" "both trace headers carry a 64-digit weights fingerprint"
[ "$a" != "$b" ] && pass "one flipped low bit changes the weights fingerprint" ||
    { fail "one flipped low bit changes the weights fingerprint"; diag "both $a"; }
# mode-tokenize reads no weight: its identity's weights is empty (it does not read 61 GB to tokenize)
mode-cat --header "$T/s.ms" >"$T/sh"
has "$T/sh" '"weights":""' "mode-tokenize, which reads no weight, leaves weights empty"
is "$(mode-cat -m "$T/flip" | sed -n 's/.*"identity":{[^}]*"weights":"\([0-9a-f]*\)".*/\1/p')" "$b" \
    "mode-cat -m shows the same fingerprint as the stream header"
run mode-eval -m "$T/flip" "$T/s.ms"
is "$rc" 0 "the flipped (finite) model is evaluated"

# finite weights that overflow: the final norm at the largest bf16 (7f7f, 3.39e38) makes the
# logits non-finite; mode-eval names the sample instead of printing perplexity nan
cp -R "$M" "$T/big"
poke "$T/big/model.safetensors" model.language_model.norm.weight 0-127 7f7f
run mode-eval -m "$T/big" -o "$T/big.json" "$T/s.ms"
is "$rc" 65 "finite weights whose logits overflow: mode-eval exit 65"
has "$T/err" "mode-eval: $T/s.ms: record 1 (id 'd.jsonl:1'): the logits predicting token 1 hold" "... naming the sample"
[ ! -e "$T/big.json" ] && pass "... and writes no report" || fail "... and writes no report"
done_testing
