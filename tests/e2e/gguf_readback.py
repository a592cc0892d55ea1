"""Reads a GGUF file r1 wrote with gguf-py (llama.cpp's own Python reader) and compares
every tensor, dequantized by `gguf.quants.dequantize`, with r1's values for the same
bytes (a raw little-endian f32 dump, tensors in file order).

Usage: gguf_readback.py FILE.gguf DUMP.f32
Prints JSON: {"architecture", "file_type", "tokens", "tensors": [{"name", "type",
"shape", "max_abs_diff"}]}; exits non-zero if the dump's length does not match.
"""

import json
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize


def field_value(reader, key):
    field = reader.get_field(key)
    if field is None:
        return None
    return field.contents()


def main():
    gguf_path, dump_path = sys.argv[1], sys.argv[2]
    reader = GGUFReader(gguf_path)
    dump = np.fromfile(dump_path, dtype="<f4")
    at = 0
    tensors = []
    for t in reader.tensors:
        values = dequantize(t.data, t.tensor_type).astype(np.float32).reshape(-1)
        theirs = dump[at : at + values.size]
        at += values.size
        if theirs.size != values.size:
            sys.exit(f"{t.name}: the dump ends after {theirs.size} of {values.size} values")
        diff = float(np.max(np.abs(values - theirs))) if values.size else 0.0
        tensors.append(
            {
                "name": t.name,
                "type": t.tensor_type.name,
                "shape": [int(d) for d in t.shape],
                "max_abs_diff": diff,
            }
        )
    if at != dump.size:
        sys.exit(f"the dump has {dump.size} values, the file's tensors {at}")
    tokens = field_value(reader, "tokenizer.ggml.tokens")
    print(
        json.dumps(
            {
                "architecture": field_value(reader, "general.architecture"),
                "file_type": field_value(reader, "general.file_type"),
                "tokens": len(tokens) if tokens is not None else None,
                "tensors": tensors,
            }
        )
    )


if __name__ == "__main__":
    main()
