#!/bin/sh
# Regression (issue 20): an invalid config.json was named with its path twice
# ("dir//dir/config.json: invalid JSON ..."): the parser named the whole path and the model
# loader prefixed the directory again. Every message about config.json and
# preprocessor_config.json now names the file once, as DIR/FILE.
. "${MODE_ROOT:?run through make check}/tests/tap.sh"
HUB=$MODE_FIXTURES/reference/tiny-random-qwen3vlmoe
mkdir "$T/m"
for f in "$HUB"/*; do ln -s "$f" "$T/m/$(basename "$f")"; done
rm "$T/m/config.json"

printf '{bad\n' >"$T/m/config.json"
run mode-cat -m "$T/m"
is "$rc" 65 "invalid config.json: exit 65"
is "$(cat "$T/err")" "mode-cat: $T/m/config.json: invalid JSON at line 1, column 4: string or '}' expected near 'bad'" \
    "... named once"
run mode-cat -m "$T/m/"
is "$(cat "$T/err")" "mode-cat: $T/m/config.json: invalid JSON at line 1, column 4: string or '}' expected near 'bad'" \
    "... also when the directory is given with a trailing slash"

printf '[1, 2]\n' >"$T/m/config.json"
run mode-cat -m "$T/m"
is "$(cat "$T/err")" "mode-cat: $T/m/config.json: expected a JSON object at the top" "a config.json that is not an object: named once"

# over the 64 MiB limit of a config file (mode(7), LIMITS): refused by its size, named once
rm "$T/m/config.json"
truncate -s 67108865 "$T/m/config.json"
run mode-cat -m "$T/m"
is "$rc" 65 "a config.json over the limit: exit 65"
is "$(cat "$T/err")" "mode-cat: $T/m/config.json: 67108865 bytes, larger than the limit of 67108864 bytes" "... named once"

# the same for preprocessor_config.json, and through another filter
rm "$T/m/config.json" "$T/m/preprocessor_config.json"
ln -s "$HUB/config.json" "$T/m/config.json"
printf '{"patch_size": 16,\n' >"$T/m/preprocessor_config.json"
run mode-eval -m "$T/m" /dev/null
is "$rc" 65 "invalid preprocessor_config.json: exit 65"
is "$(cat "$T/err")" "mode-eval: $T/m/preprocessor_config.json: invalid JSON at line 2, column 0: string or '}' expected near end of file" \
    "... named once"

# a message about a key was right before and stays so
printf '{"patch_size": "16"}\n' >"$T/m/preprocessor_config.json"
run mode-cat -m "$T/m"
has "$T/err" "mode-cat: $T/m/preprocessor_config.json: patch_size" "a bad key is named after the file, once"
done_testing
