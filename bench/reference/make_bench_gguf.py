"""Random-weight Qwen2 models as GGUF files, for `r1host bench decode --model` and
llamacpp_decode.py: the same files go to both.

Writes OUT_DIR/{shape}.{type}.gguf for each TYPE: f32, f16 and bf16 with the `gguf`
package (2-D weights in the type, norms and biases f32, as llama.cpp's converter does),
and q8_0, q4_0, q4_k_m with llama.cpp's own quantizer (`llama_model_quantize` from
`llama-cpp-python`) applied to the f32 file, so the quantized files are exactly what
llama.cpp's `llama-quantize` makes (for a hidden size that is not a multiple of 256,
Q4_K_M then holds Q5_0/Q8_0 fallback tensors, as real Qwen2.5-0.5B files do).

Shapes (hidden layers heads kv_heads ffn vocab):
    qwen2.5-0.5b   896 24 14 2 4864 151936
    r1-distill-1.5b 1536 28 12 2 8960 151936
    small          256 4 4 2 688 512   (for a quick check)

Weights are N(0, 0.02²), norms 1, biases 0; the tokenizer is a byte-level GPT-2 BPE
(`tokenizer.ggml.pre` = qwen2) with a few merges and filler tokens up to the vocabulary.

Usage:
    make_bench_gguf.py OUT_DIR SHAPE [TYPE ...]     (default types: all six)
"""

import ctypes
import os
import sys

import gguf
import numpy as np

SHAPES = {
    "qwen2.5-0.5b": (896, 24, 14, 2, 4864, 151936),
    "r1-distill-1.5b": (1536, 28, 12, 2, 8960, 151936),
    "small": (256, 4, 4, 2, 688, 512),
}
# llama.cpp's `llama_ftype` numbers.
FTYPES = {"q8_0": 7, "q4_0": 2, "q4_k_m": 15}


def bytes_to_unicode():
    """GPT-2's byte → printable character map (what byte-level BPE vocabularies hold)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def vocabulary(vocab):
    byte_tokens = list(bytes_to_unicode().values())
    merges = ["Ġ t", "Ġ a", "h e", "i n", "Ġt he"]
    merged = ["Ġt", "Ġa", "he", "in", "Ġthe"]
    tokens = byte_tokens + merged
    tokens += [f"<|filler_{i}|>" for i in range(vocab - len(tokens) - 2)]
    tokens += ["<|im_start|>", "<|endoftext|>"]
    types = [1] * (vocab - 2) + [3, 3]
    return tokens, types, merges


def write_plain(path, shape, kind):
    h, layers, heads, kv, ffn, vocab = shape
    hd = h // heads
    rng = np.random.default_rng(0)
    w = gguf.GGUFWriter(path, "qwen2")
    w.add_context_length(4096)
    w.add_embedding_length(h)
    w.add_block_count(layers)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    w.add_rope_freq_base(1e6)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_file_type({"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16, "bf16": gguf.LlamaFileType.MOSTLY_BF16}[kind])
    tokens, types, merges = vocabulary(vocab)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(vocab - 1)
    w.add_eos_token_id(vocab - 1)

    def mat(name, rows, cols):
        a = rng.standard_normal((rows, cols), dtype=np.float32) * np.float32(0.02)
        if kind == "f16":
            w.add_tensor(name, a.astype(np.float16))
        elif kind == "bf16":
            w.add_tensor(name, gguf.quants.quantize(a, gguf.GGMLQuantizationType.BF16), raw_dtype=gguf.GGMLQuantizationType.BF16)
        else:
            w.add_tensor(name, a)

    def vec(name, n, value):
        w.add_tensor(name, np.full(n, value, np.float32))

    mat("token_embd.weight", vocab, h)
    for i in range(layers):
        p = f"blk.{i}."
        vec(p + "attn_norm.weight", h, 1.0)
        mat(p + "attn_q.weight", h, h)
        vec(p + "attn_q.bias", h, 0.0)
        mat(p + "attn_k.weight", kv * hd, h)
        vec(p + "attn_k.bias", kv * hd, 0.0)
        mat(p + "attn_v.weight", kv * hd, h)
        vec(p + "attn_v.bias", kv * hd, 0.0)
        mat(p + "attn_output.weight", h, h)
        vec(p + "ffn_norm.weight", h, 1.0)
        mat(p + "ffn_gate.weight", ffn, h)
        mat(p + "ffn_up.weight", ffn, h)
        mat(p + "ffn_down.weight", h, ffn)
    vec("output_norm.weight", h, 1.0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def quantize(src, dst, kind):
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = FTYPES[kind]
    params.nthread = os.cpu_count() or 1
    rc = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params))
    if rc != 0:
        raise SystemExit(f"llama_model_quantize {kind} failed ({rc})")


def main():
    out_dir, shape_name = sys.argv[1], sys.argv[2]
    kinds = sys.argv[3:] or ["f32", "f16", "bf16", "q8_0", "q4_0", "q4_k_m"]
    shape = SHAPES[shape_name]
    os.makedirs(out_dir, exist_ok=True)
    f32 = os.path.join(out_dir, f"{shape_name}.f32.gguf")
    for kind in kinds:
        path = os.path.join(out_dir, f"{shape_name}.{kind}.gguf")
        if os.path.exists(path):
            print(path, "(exists)")
            continue
        if kind in FTYPES:
            if not os.path.exists(f32):
                write_plain(f32, shape, "f32")
            quantize(f32, path, kind)
        else:
            write_plain(path, shape, kind)
        print(path)


if __name__ == "__main__":
    main()
