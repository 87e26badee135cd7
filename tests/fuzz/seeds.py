#!/usr/bin/env python3
"""Writes the seed corpus of the fuzz targets into tests/fuzz/corpus/<target>/ from the vendored
fixtures (run from the project root after `make`: it calls bin/mode-cat). Python 3.11 with
msgpack 1.2.4 (pip). Seeds are small valid inputs; libFuzzer mutates them."""
import glob, json, os, struct, subprocess
import msgpack

root = os.getcwd()
corpus = os.path.join(root, "tests/fuzz/corpus")

def put(target, name, data):
    d = os.path.join(corpus, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)

streams = {}
for path in sorted(glob.glob("tests/fixtures/streams/*.jsonl")):
    name = os.path.basename(path)[:-6]
    streams[name] = subprocess.run(["bin/mode-cat", "-J", path], check=True, capture_output=True).stdout

# fuzz_stream: a chunk-size byte, then a stream
for i, (name, data) in enumerate(sorted(streams.items())):
    if len(data) < 20000:
        put("fuzz_stream", name, bytes([i % 8]) + data)
put("fuzz_stream", "two-streams", b"\x00" + streams["trace-a"] + streams["trace-b"])

# fuzz_samples: the records of the samples stream, without header and trailer
objs = list(msgpack.Unpacker(__import__("io").BytesIO(streams["samples"]), raw=False, strict_map_key=False))
for i, o in enumerate(objs[1:-1]):
    put("fuzz_samples", f"record{i}", msgpack.packb(o, use_bin_type=True))

# fuzz_safetensors: small valid files
def st(tensors, meta=None):
    header, off, blob = {}, 0, b""
    if meta: header["__metadata__"] = meta
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(data)]}
        off += len(data); blob += data
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + blob
put("fuzz_safetensors", "two", st({"a": ("F32", [2], struct.pack("<2f", 1, 2)), "b": ("BF16", [2, 2], b"\x80\x3f" * 4)}, {"format": "pt"}))
put("fuzz_safetensors", "empty-tensor", st({"e": ("F16", [0], b""), "i": ("I64", [1], struct.pack("<q", 7))}))

# fuzz_index
put("fuzz_index", "valid", json.dumps({"metadata": {"total_size": 16}, "weight_map": {"x": "a.safetensors", "y": "b.safetensors"}}).encode())
put("fuzz_index", "tiny", open("tests/fixtures/reference/tiny-random-qwen3vlmoe/model.safetensors.index.json", "rb").read())

# fuzz_config
for path in ["tests/fixtures/reference/tiny-random-qwen3vlmoe/config.json",
             "tests/fixtures/reference/tiny-random-qwen3vlmoe-v5layout/config.json",
             "tests/fixtures/reference/tiny-random-qwen3vlmoe/preprocessor_config.json",
             "tests/fixtures/emoji-vl/model/config.json"]:
    put("fuzz_config", path.replace("/", "_"), open(path, "rb").read())

# fuzz_mpjson: short lines of the JSON fixtures
for path in sorted(glob.glob("tests/fixtures/streams/*.jsonl")):
    for i, line in enumerate(open(path, "rb")):
        if len(line) < 4000:
            put("fuzz_mpjson", f"{os.path.basename(path)[:-6]}-{i}", line.rstrip(b"\n"))
