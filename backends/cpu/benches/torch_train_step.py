"""PyTorch's SFT training-step throughput for the models of benches/train_step.rs, as the
reference figure: random Qwen2ForCausalLM (transformers), batch 8×128, cross-entropy on
next tokens, backward, torch.optim.AdamW, eager mode, SDPA attention.

Run: /tmp/refenv/bin/python backends/cpu/benches/torch_train_step.py [threads]   (default 2)
Prints tokens/s (wall) and tokens per CPU-second (process time) per model, with the load.
"""
import os
import sys
import time

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
torch.set_num_threads(threads)
torch.manual_seed(0)
BATCH, SEQ = 8, 128
MODELS = [
    ("h256 L4 ffn688 V512", dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=688, vocab_size=512)),
    ("h512 L8 ffn1376 V4096", dict(hidden_size=512, num_hidden_layers=8, num_attention_heads=8, intermediate_size=1376, vocab_size=4096)),
]

print(f"PyTorch {torch.__version__}, {threads} threads; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
for name, shape in MODELS:
    cfg = Qwen2Config(num_key_value_heads=2, rope_theta=1e6, rms_norm_eps=1e-6, tie_word_embeddings=False,
                      max_position_embeddings=SEQ, attn_implementation="sdpa", **shape)
    model = Qwen2ForCausalLM(cfg).float().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.01)
    ids = torch.randint(0, cfg.vocab_size, (BATCH, SEQ))

    def step():
        out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()
    reps = 3
    t, c = time.perf_counter(), time.process_time()
    for _ in range(reps):
        step()
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    tokens = reps * BATCH * SEQ
    print(f"{name}: {tokens / wall:.0f} tokens/s wall, {tokens / cpu:.0f} tokens per CPU-second")
