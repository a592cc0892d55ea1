#!/usr/bin/env bash
# r1 beside llama.cpp on the same GGUF files, every type of issue 11's table:
#   bench/reference/decode_matrix.sh VENV/bin/python OUT_DIR [SHAPE ...] 
# (shapes: qwen2.5-0.5b r1-distill-1.5b; default: both). Writes the files with
# make_bench_gguf.py (skipping those that exist), then one `r1host bench decode --model`
# line per file, with llama.cpp's figures under "reference". Env: TYPES (default
# "f32 f16 bf16 q8_0 q4_0 q4_k_m"), TOKENS (64), ROUNDS (3), R1HOST (target/release/r1host).
set -euo pipefail
py=$1; out=$2; shift 2
shapes=${*:-qwen2.5-0.5b r1-distill-1.5b}
here="$(cd "$(dirname "$0")" && pwd)"
r1host=${R1HOST:-$here/../../target/release/r1host}
for shape in $shapes; do
    for ty in ${TYPES:-f32 f16 bf16 q8_0 q4_0 q4_k_m}; do
        "$py" "$here/make_bench_gguf.py" "$out" "$shape" "$ty" >&2
        "$r1host" bench decode --model "$out/$shape.$ty.gguf" --tokens "${TOKENS:-64}" \
            --rounds "${ROUNDS:-3}" --reference "$here/llamacpp_decode.py" --python "$py"
    done
done
