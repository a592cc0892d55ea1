"""PyTorch / transformers figures beside `r1host bench decode` and `r1host bench train`.

For a random Qwen2 model of the given shape (or, when `R1_MODEL_CONFIG` holds a
`config.json` text, a random model of that config: how `r1host bench` passes its
DeepSeek-V3 presets), on CPU, in float32:

- decode tokens/s: transformers greedy `generate` with its KV cache, batch 1, after a
  16-token prompt (the prompt's prefill is inside the timing, as in r1's figure);
- training tokens/s: forward + backward + AdamW on a batch of `train_batch` sequences of
  `train_seq` tokens, next-token cross-entropy over every position; with
  `R1_COMPUTE=bf16` (what `r1host bench train --compute bf16` sets) the forward runs under
  torch's CPU bf16 autocast (products in bf16, master weights f32).

Usage:
    torch_decode_train.py hidden layers heads kv_heads ffn vocab [decode_tokens] [train_seq] [train_batch]

The argument order is the one `r1host bench` passes (its `shape_args`). Prints one JSON
line; `r1host bench` reads `decode_tok_s` and `train_tok_s` from it.
"""

import argparse
import json
import os
import time

import torch
import transformers
from transformers import Qwen2Config, Qwen2ForCausalLM

PROMPT_TOKENS = 16
WARMUP_TOKENS = 4
TRAIN_STEPS = 3
BF16_COMPUTE = os.environ.get("R1_COMPUTE") == "bf16"


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name in ("hidden", "layers", "heads", "kv_heads", "ffn", "vocab"):
        p.add_argument(name, type=int)
    p.add_argument("decode_tokens", type=int, nargs="?", default=64)
    p.add_argument("train_seq", type=int, nargs="?", default=128)
    p.add_argument("train_batch", type=int, nargs="?", default=8)
    return p.parse_args()


def random_qwen2(a):
    """A random Qwen2 model with the hyper-parameters of r1's bench presets."""
    config = Qwen2Config(
        vocab_size=a.vocab,
        hidden_size=a.hidden,
        intermediate_size=a.ffn,
        num_hidden_layers=a.layers,
        num_attention_heads=a.heads,
        num_key_value_heads=a.kv_heads,
        max_position_embeddings=4096,
        rope_theta=1_000_000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
    )
    return Qwen2ForCausalLM(config).to(torch.float32)


def random_model(a):
    """The preset's model: `R1_MODEL_CONFIG` (any architecture transformers knows, eager
    attention) or the Qwen2 shape of the arguments."""
    text = os.environ.get("R1_MODEL_CONFIG")
    if not text:
        return random_qwen2(a)
    config = transformers.AutoConfig.for_model(**json.loads(text))
    config._attn_implementation = "eager"
    return transformers.AutoModelForCausalLM.from_config(config).to(torch.float32)


def greedy_decode_tok_s(model, vocab, new_tokens):
    """Tokens/s of greedy decoding `new_tokens` tokens (never stopping early) after a
    16-token prompt, with the KV cache, batch 1; one short warm-up run first."""
    model.eval()
    prompt = torch.randint(0, vocab, (1, PROMPT_TOKENS))

    def generate(n):
        return model.generate(
            prompt,
            max_new_tokens=n,
            min_new_tokens=n,
            do_sample=False,
            use_cache=True,
            pad_token_id=0,
        )

    with torch.inference_mode():
        generate(WARMUP_TOKENS)
        start = time.perf_counter()
        out = generate(new_tokens)
        seconds = time.perf_counter() - start
    produced = out.shape[1] - PROMPT_TOKENS
    return produced / seconds


def train_tok_s(model, vocab, seq, batch):
    """Tokens/s of training steps (forward, backward, AdamW step) on one random batch,
    timed over TRAIN_STEPS steps after one warm-up step."""
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(0, vocab, (batch, seq))

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=BF16_COMPUTE):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()
    start = time.perf_counter()
    for _ in range(TRAIN_STEPS):
        step()
    seconds = time.perf_counter() - start
    return TRAIN_STEPS * batch * seq / seconds


def main():
    a = parse_args()
    torch.manual_seed(0)
    model = random_model(a)
    decode = greedy_decode_tok_s(model, a.vocab, a.decode_tokens)
    train = train_tok_s(model, a.vocab, a.train_seq, a.train_batch)
    print(
        json.dumps(
            {
                "params": sum(p.numel() for p in model.parameters()),
                "threads": torch.get_num_threads(),
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "decode_tokens": a.decode_tokens,
                "decode_tok_s": round(decode, 1),
                "train_batch": [a.train_batch, a.train_seq],
                "train_tok_s": round(train, 1),
                "compute": "bf16 autocast" if BF16_COMPUTE else "f32",
            }
        )
    )


if __name__ == "__main__":
    main()
