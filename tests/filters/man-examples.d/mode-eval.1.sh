# mode-eval(1) examples: samples.msgpack must fit the tiny model in ./model (re-labelled copy of
# the hand-made samples stream, whose header names emoji-vl)
id=$(mode-cat -m "$W/model" | sed 's/.*"identity":{"arch":"[^"]*","config":"\([0-9a-f]*\)".*/\1/')
sed "1s/\"config\":\"[0-9a-f]*\"/\"config\":\"$id\"/" "$S/samples.jsonl" | mode-cat -J -o "$W/samples.msgpack"
