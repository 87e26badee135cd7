# mode-tokenize(1) examples: emoji-vl and its calibration and evaluation sets
ln -sfn "$MODE_FIXTURES/emoji-vl/model" "$W/emoji-vl"
ln -s "$MODE_FIXTURES/emoji-vl/calib" "$W/emoji-vl-calib"
ln -s "$MODE_FIXTURES/emoji-vl/eval" "$W/emoji-vl-eval"
