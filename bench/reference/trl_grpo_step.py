"""TRL's figure beside `r1host bench grpo`: seconds per `GRPOTrainer` step on CPU.

The same step r1 times: a random Qwen2 model of the given shape in float32,
PROMPTS_PER_STEP prompts per step (default 1) with G completions each of up to L tokens
(generation included), a think/answer format reward and an accuracy reward, beta = 0.04
(so the frozen reference model is scored too), AdamW at a constant learning rate of 1e-5. STEPS steps are timed after one warm-up step.

Usage:
    G=8 L=64 STEPS=3 [PROMPTS_PER_STEP=1] [LORA_R=16] [GRADIENT_CHECKPOINTING=1] trl_grpo_step.py [hidden layers heads kv_heads ffn vocab]

With LORA_R set, the policy is a PEFT LoRA adapter of that rank (alpha 2r, every linear
layer of the decoder, no dropout) over the frozen model, as `r1host bench grpo --lora R`
trains it; TRL then scores the reference with the adapter disabled (no copy). With
GRADIENT_CHECKPOINTING=1, GRPOConfig's `gradient_checkpointing` is on (every decoder layer
recomputed in the backward pass), as `r1host bench grpo --gradient-checkpointing` runs.

The shape arguments are in the order `r1host bench` passes them (its `shape_args`;
default: the `small` preset), G, L and STEPS come from the environment as it sets them.
Nothing is downloaded: the tokenizer is a byte-level BPE trained here on the prompts.
Prints one JSON line (with the process's peak resident memory); `r1host bench` reads
`step_s_median` from it.
"""

import argparse
import json
import os
import random
import resource
import tempfile
import time

# Set before transformers is imported: it reads them once.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
import trl  # noqa: E402
from datasets import Dataset  # noqa: E402
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM, TrainerCallback  # noqa: E402
from trl import GRPOConfig, GRPOTrainer  # noqa: E402

EOS = "<|endoftext|>"
PROMPTS = 64


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name, default in (("hidden", 256), ("layers", 4), ("heads", 4), ("kv_heads", 2), ("ffn", 688), ("vocab", 512)):
        p.add_argument(name, type=int, nargs="?", default=default)
    return p.parse_args()


def addition_problem(rng):
    """An addition prompt of about 20 tokens and its answer."""
    a, b = rng.randint(10, 99), rng.randint(10, 99)
    return f"What is {a}+{b}? Think in <think></think>, then answer in <answer></answer>.", str(a + b)


def local_tokenizer(vocab, rng):
    """A byte-level BPE tokenizer trained on addition prompts, filled up with placeholder
    tokens to exactly `vocab` entries so the model has the requested embedding size and
    every id it samples decodes."""
    corpus = [f"{addition_problem(rng)[0]} <think>{i}+{i}={2 * i}</think><answer>{2 * i}</answer>" for i in range(2000)]
    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(corpus, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=EOS, pad_token=EOS)
    missing = vocab - len(tokenizer)
    if missing > 0:
        tokenizer.add_tokens([f"<|filler{i}|>" for i in range(missing)])
    return tokenizer


def save_random_qwen2(a, tokenizer, model_dir):
    """Writes a random Qwen2 model (r1's bench hyper-parameters) and the tokenizer to
    `model_dir`; TRL loads the policy and the frozen reference from there. Returns the
    parameter count."""
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=a.hidden,
        intermediate_size=a.ffn,
        num_hidden_layers=a.layers,
        num_attention_heads=a.heads,
        num_key_value_heads=a.kv_heads,
        max_position_embeddings=4096,
        rope_theta=1_000_000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = Qwen2ForCausalLM(config).to(torch.float32)
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    return sum(p.numel() for p in model.parameters())


def think_format_reward(completions, **_):
    """1 when the completion holds a <think>…</think> block and then an <answer>…</answer>."""
    return [1.0 if "</think>" in c and "<answer>" in c.split("</think>", 1)[1] else 0.0 for c in completions]


def answer_text(completion):
    """The text inside the last <answer>…</answer>, stripped; None without one."""
    if "<answer>" not in completion:
        return None
    return completion.rsplit("<answer>", 1)[1].split("</answer>", 1)[0].strip()


def accuracy_reward(completions, answer, **_):
    """1 when the completion's answer is the expected sum."""
    return [1.0 if answer_text(c) == a else 0.0 for c, a in zip(completions, answer)]


class StepTimer(TrainerCallback):
    """Wall time of each optimizer step, generation and scoring included (TRL generates
    inside the step, in `_prepare_inputs`)."""

    def __init__(self):
        self.seconds = []
        self._start = None

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.seconds.append(time.perf_counter() - self._start)


def grpo_config(out_dir, generations, completion_length, steps, prompts_per_step):
    return GRPOConfig(
        gradient_checkpointing=os.environ.get("GRADIENT_CHECKPOINTING", "0") == "1",
        output_dir=out_dir,
        per_device_train_batch_size=generations * prompts_per_step,
        num_generations=generations,
        max_completion_length=completion_length,
        max_steps=steps + 1,
        beta=0.04,
        learning_rate=1e-5,
        lr_scheduler_type="constant",
        use_cpu=True,
        # `r1host bench grpo --compute bf16` sets R1_COMPUTE=bf16: torch's bf16 autocast.
        bf16=os.environ.get("R1_COMPUTE") == "bf16",
        seed=0,
        save_strategy="no",
        report_to=[],
        logging_steps=1,
        log_completions=False,
        disable_tqdm=True,
    )


def main():
    a = parse_args()
    generations = int(os.environ.get("G", 8))
    completion_length = int(os.environ.get("L", 64))
    steps = int(os.environ.get("STEPS", 3))
    prompts_per_step = max(1, int(os.environ.get("PROMPTS_PER_STEP", 1)))
    rng = random.Random(0)
    torch.manual_seed(0)
    tokenizer = local_tokenizer(a.vocab, rng)
    with tempfile.TemporaryDirectory() as work:
        model_dir = os.path.join(work, "model")
        params = save_random_qwen2(a, tokenizer, model_dir)
        rows = [dict(zip(("prompt", "answer"), addition_problem(rng))) for _ in range(PROMPTS)]
        timer = StepTimer()
        lora_r = int(os.environ.get("LORA_R", "0"))
        peft_config = None
        if lora_r > 0:
            from peft import LoraConfig

            peft_config = LoraConfig(
                r=lora_r, lora_alpha=2 * lora_r, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM"
            )
        trainer = GRPOTrainer(
            model=model_dir,
            reward_funcs=[think_format_reward, accuracy_reward],
            args=grpo_config(os.path.join(work, "out"), generations, completion_length, steps, prompts_per_step),
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            callbacks=[timer],
            peft_config=peft_config,
        )
        trainer.train()
    timed = timer.seconds[1:]
    # The upper median, as r1's figure is taken.
    median = sorted(timed)[len(timed) // 2] if timed else float("nan")
    print(
        json.dumps(
            {
                "params": params,
                "G": generations,
                "prompts_per_step": prompts_per_step,
                "L": completion_length,
                "beta": 0.04,
                "threads": torch.get_num_threads(),
                "torch": torch.__version__,
                "trl": trl.__version__,
                "lora_r": lora_r,
                "gradient_checkpointing": os.environ.get("GRADIENT_CHECKPOINTING", "0") == "1",
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3, 1),
                "steps_s": [round(s, 4) for s in timed],
                "step_s_median": round(median, 4),
            }
        )
    )


if __name__ == "__main__":
    main()
