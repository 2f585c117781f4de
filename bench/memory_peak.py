"""Measured peak memory of one learner micro-step on CPU: gradient checkpointing on or off, and logits computed
over the program's positions only (the learner's loss) or over every position (the loss before, for comparison).

    python bench/memory_peak.py [--models tiny,gpt2-124m] [--batch 4] [--prompt 320] [--program 192]

Each variant runs in a fresh process: the model is built from its config in float32 (no download), its gradients
allocated, the peak resident set size reset (``/proc/self/clear_refs``), then one forward and backward of the RLTF
loss on random tokens; the figure is the peak during the step minus the memory before it (activations, logits and
their gradients). `launch.py plan`'s estimate for the same shape (float32, eager attention) is printed beside it.
Writes bench/results/memory_peak.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MODELS = {
    "tiny": ("tiny:gpt2", None),  # the project's tiny GPT-2 (3.4M parameters, 384-token vocabulary)
    # Logits dominate: a two-layer GPT-2 with GPT-2's 50257-token vocabulary (what program-only logits save)
    "wide-vocab": (None, dict(n_embd=64, n_layer=2, n_head=2, vocab_size=50257, n_positions=1024)),
    "gpt2-124m": (None, dict(n_embd=768, n_layer=12, n_head=12, vocab_size=50257, n_positions=1024)),  # GPT-2 small
}
VARIANTS = [  # (program positions only, gradient checkpointing)
    (False, False), (True, False), (False, True), (True, True),
]


def _rss(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def child(spec: dict) -> dict:
    """One measurement, in this (fresh) process."""
    import random

    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from learner.batching import make_batch
    from learner.engine import enable_checkpointing
    from learner.loss import rl_loss
    from models import load_policy

    torch.manual_seed(0)
    name, config = MODELS[spec["model"]]
    model = load_policy(name, dtype="float32").model if name else GPT2LMHeadModel(GPT2Config(**config))
    model.train()
    if spec["checkpointing"]:
        enable_checkpointing(model)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    rng = random.Random(0)
    vocab, b = model.config.vocab_size, spec["batch"]
    prompts = [[rng.randrange(1, vocab) for _ in range(spec["prompt"])] for _ in range(b)]
    programs = [[rng.randrange(1, vocab) for _ in range(spec["program"])] for _ in range(b)]
    per_token = {"returns": [[1.0] * spec["program"]] * b, "behaviour_logprobs": [[-1.0] * spec["program"]] * b}
    batch = make_batch(prompts, programs, is_seq2seq=False, pad_id=0, per_token=per_token)
    if not spec["program_only"]:
        # The loss before: float32 logits over every position; keep_logits slices them after they exist.
        model.forward = _every_position(model.forward)
    before = _rss("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM (peak RSS) to the current RSS
    start = time.perf_counter()
    out = rl_loss(model, batch, global_tokens=batch.num_tokens, world_size=1)
    out.loss.backward()
    return {**spec, "peak_bytes": _rss("VmHWM") - before, "step_s": round(time.perf_counter() - start, 2),
            "parameters": sum(p.numel() for p in model.parameters())}


def _every_position(forward):
    def wrapped(*args, logits_to_keep=0, **kwargs):
        out = forward(*args, **kwargs)
        out.logits = out.logits.float()
        return out
    return wrapped


def estimate(spec: dict) -> float:
    from transformers import GPT2Config

    from models.architecture import activation_bytes, architecture, describe

    name, config = MODELS[spec["model"]]
    arch = architecture(name) if name else describe(GPT2Config(**config), spec["model"])
    parts = activation_bytes(arch, spec["batch"], spec["prompt"], spec["program"], checkpointing=spec["checkpointing"],
                             value_bytes=4, program_only_logits=spec["program_only"])
    return parts["layers"] + parts["logits"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="tiny,gpt2-124m")
    parser.add_argument("--batch", type=int, default=4)
    # APPS-like proportions (800 + 512 tokens there), within the tiny model's 512 positions.
    parser.add_argument("--prompt", type=int, default=320)
    parser.add_argument("--program", type=int, default=192)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "memory_peak.json"))
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "PYTHONPATH": str(ROOT)}  # big buffers: mmap, freed at once
    rows = []
    for model in args.models.split(","):
        for program_only, checkpointing in VARIANTS:
            spec = dict(model=model, batch=args.batch, prompt=args.prompt, program=args.program,
                        program_only=program_only, checkpointing=checkpointing)
            done = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], env=env,
                                  capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(f"{spec}: the measurement failed:\n{done.stderr[-3000:]}")
            row = json.loads(done.stdout.strip().splitlines()[-1])
            row["estimate_bytes"] = estimate(spec)
            rows.append(row)
            print(f"{model:<10} logits {'program' if program_only else 'all    '} checkpointing "
                  f"{'on ' if checkpointing else 'off'}: peak {row['peak_bytes'] / 2**20:8.1f} MiB "
                  f"(plan's estimate {row['estimate_bytes'] / 2**20:8.1f} MiB), step {row['step_s']} s", flush=True)
    for model in args.models.split(","):
        peak = {(r["program_only"], r["checkpointing"]): r["peak_bytes"] for r in rows if r["model"] == model}
        print(f"{model}: program-only logits x{peak[False, False] / peak[True, False]:.2f}, checkpointing "
              f"x{peak[True, False] / peak[True, True]:.2f}, both x{peak[False, False] / peak[True, True]:.2f} "
              "less peak memory than neither")
    Path(args.out).write_text(json.dumps({"shape": vars(args), "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
