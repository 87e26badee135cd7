# mode-ilp(1) examples: the hand-made freq and sens streams (emoji-vl's identity) and that model
mode-cat -J -o "$W/freq.msgpack" "$S/freq.jsonl"
mode-cat -J -o "$W/sens.msgpack" "$S/sens.jsonl"
ln -sfn "$MODE_FIXTURES/emoji-vl/model" "$W/emoji-vl"
# MC-MoE's loss stream: the same numbers under the metric mcmoe
sed '1s/"metric":"kl"/"metric":"mcmoe"/; s/"metric":"kl","bits"/"metric":"mcmoe","bits"/' "$S/sens.jsonl" | mode-cat -J -o "$W/sens-mcmoe.msgpack"
