"""llama.cpp figures beside `r1host bench decode --model FILE`, on the same GGUF file.

Runs llama.cpp through `llama-cpp-python` (PyPI; `pip install llama-cpp-python` compiles
llama.cpp from source for this machine) with the same thread count, and measures what r1
measures:

- load_s: constructing `Llama` (llama.cpp memory-maps the file; pages are read as used);
- prefill_tok_s: evaluating the PROMPT-token prompt in one call (batch = prompt);
- decode_tok_s: TOKENS greedy tokens, one `eval` of one token each, the next token the
  argmax of the logits (the median of ROUNDS timed runs after one untimed run);
- peak_rss_mb: the process's peak resident set (`ru_maxrss`).

Usage:
    llamacpp_decode.py FILE.gguf [TOKENS=64] [PROMPT=128] [THREADS=all] [ROUNDS=3] [TYPE_K] [TYPE_V]

The argument order is the one `r1host bench decode --model` passes. TYPE_K / TYPE_V are
the KV cache's types (f32, f16, bf16, q8_0, q4_0; llama.cpp's default, f16, when not
given); a quantized value cache needs flash attention in llama.cpp, which is then turned
on. Prints one JSON line.
"""

import json
import os
import resource
import sys
import time

import numpy as np
from llama_cpp import Llama


def main():
    path = sys.argv[1]
    tokens = int(sys.argv[2]) if len(sys.argv) > 2 else 64
    prompt_len = int(sys.argv[3]) if len(sys.argv) > 3 else 128
    threads = int(sys.argv[4]) if len(sys.argv) > 4 else os.cpu_count()
    rounds = int(sys.argv[5]) if len(sys.argv) > 5 else 3
    # ggml's type ids (ggml.h: GGML_TYPE_F32 = 0, F16 = 1, Q4_0 = 2, Q8_0 = 8, BF16 = 30).
    ggml_types = {"f32": 0, "f16": 1, "q4_0": 2, "q8_0": 8, "bf16": 30}
    # llama.cpp's defaults unless given.
    cache_names = {"type_k": "f16", "type_v": "f16"}
    for key, i in (("type_k", 6), ("type_v", 7)):
        if len(sys.argv) > i:
            if sys.argv[i] not in ggml_types:
                sys.exit(f"unknown KV cache type {sys.argv[i]!r} (one of {', '.join(ggml_types)})")
            cache_names[key] = sys.argv[i]
    cache = {key: ggml_types[name] for key, name in cache_names.items()}
    if cache_names["type_v"].startswith("q"):
        cache["flash_attn"] = True

    t = time.perf_counter()
    llm = Llama(
        model_path=path,
        n_threads=threads,
        n_threads_batch=threads,
        n_ctx=prompt_len + tokens + 16,
        n_batch=max(512, prompt_len),
        verbose=False,
        logits_all=False,
        **cache,
    )
    load_s = time.perf_counter() - t
    vocab = llm.n_vocab()
    # The same prompt ids as r1's bench: (i * 7919 + 13) mod vocab.
    prompt = [(i * 7919 + 13) % vocab for i in range(prompt_len)]

    def run():
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(prompt)
        tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        t1 = time.perf_counter()
        for _ in range(tokens - 1):
            llm.eval([tok])
            tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        t2 = time.perf_counter()
        return prompt_len / (t1 - t0), (tokens - 1) / (t2 - t1)

    run()  # warm-up
    results = sorted((run() for _ in range(rounds)), key=lambda r: r[1])
    prefill = sorted(r[0] for r in results)
    mid = len(results) // 2
    print(
        json.dumps(
            {
                "engine": "llama.cpp",
                "llama_cpp_python": __import__("llama_cpp").__version__,
                "model": path,
                "threads": threads,
                "cache_type_k": cache_names["type_k"],
                "cache_type_v": cache_names["type_v"],
                "load_s": round(load_s, 2),
                "prefill_tok_s": round(prefill[mid], 1),
                "decode_tok_s": round(results[mid][1], 1),
                "decode_tok_s_range": [round(results[0][1], 1), round(results[-1][1], 1)],
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
