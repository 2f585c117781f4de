"""What each limit the profile found would give if removed: the learner's step and the sampler's generation,
measured alone (one process, no Ray) on the real model and real batches, against threads and batch size.

    python bench/profile_levers.py --start-model runs/.../hf --buffer runs/profile/.../buffer.snapshot.pkl

1. learner step (`LearnerRank.train_step`, DeepSpeed ZeRO-0, gloo world 1): 32 RL trajectories from a real
   buffer + 32 supervised references (the learning preset), and the RL micro-step alone (supervised_ratio 0),
   at 1 and 2 torch threads; plus the same RL micro-step as plain torch (forward, backward, AdamW) for DeepSpeed's
   share.
2. generation (`models.generation.generate_programs`, the sampler's call): 8 prompts x 4, 8, 16 samples (32, 64,
   128 programs per call) at 1 and 2 threads: programs per second.
Writes bench/results/profile_levers.json and prints a table.
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402


def timed(fn, reps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def learner_steps(start_model: str, trajectories: list, reps: int, tmp: str) -> list[dict]:
    from configs import load_config
    from learner.loss import rl_loss
    from learner.rank import LearnerRank, free_port
    from models import load_policy
    from tasks import load_problems

    problems = load_problems("synthetic", split="train")
    rows = []
    for ratio in (1, 0):
        cfg = load_config("learning", [f"--model.name_or_path={start_model}", f"--run.output_dir={tmp}",
                                       f"--learner.supervised_ratio={ratio}", "--learner.warmup_steps=0",
                                       "--learner.warm_start_steps=0"])
        rank = LearnerRank(cfg, 0, 1)
        rank.setup("127.0.0.1", free_port(), problems)
        batch = trajectories[:cfg.learner.batch_size]
        for threads in (1, 2):
            torch.set_num_threads(threads)
            rows.append({"what": f"DeepSpeed train_step, 32 RL{' + 32 supervised' if ratio else ''}",
                         "threads": threads, "seconds": timed(lambda: rank.train_step(batch), reps)})
        if ratio == 0:  # the same RL micro-step in plain torch: DeepSpeed's share of it
            plain = load_policy(start_model).model
            plain.train()
            opt = torch.optim.AdamW(plain.parameters(), lr=cfg.learner.lr, weight_decay=cfg.learner.weight_decay)

            def plain_step():
                out = rl_loss(plain, rank._rl_batch(batch), global_tokens=rank._rl_batch(batch).num_tokens,
                              world_size=1)
                out.loss.backward()
                torch.nn.utils.clip_grad_norm_(plain.parameters(), 1.0)
                opt.step()
                opt.zero_grad(set_to_none=True)

            for threads in (1, 2):
                torch.set_num_threads(threads)
                rows.append({"what": "plain torch AdamW step, 32 RL", "threads": threads,
                             "seconds": timed(plain_step, reps)})
        import torch.distributed as dist

        dist.destroy_process_group()
    return rows


def generation(start_model: str, reps: int) -> list[dict]:
    from configs import load_config
    from models import load_policy
    from models.encoding import encode_prompt
    from models.generation import generate_programs
    from tasks import load_problems

    cfg = load_config("learning", [])
    policy = load_policy(start_model)
    policy.model.eval()
    problems = [p for p in load_problems("synthetic", split="train") if p.tests.cases][:: 37][:8]
    prompts = [encode_prompt(policy.tokenizer, p.prompt, cfg.model.max_prompt_tokens) for p in problems]
    rows = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for n in (4, 8, 16):
            torch.manual_seed(0)
            seconds = timed(lambda: generate_programs(
                policy.model, policy.tokenizer, prompts, is_seq2seq=False, num_samples=n,
                max_new_tokens=cfg.model.max_new_tokens, temperature=cfg.sampler.temperature,
                top_p=cfg.sampler.top_p), reps)
            rows.append({"what": f"generate_programs, {len(prompts)} prompts x {n}", "threads": threads,
                         "seconds": seconds, "programs_per_s": len(prompts) * n / seconds})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--start-model", required=True)
    parser.add_argument("--buffer", required=True, help="a buffer.snapshot.pkl from a run (real RL trajectories)")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--out", default="bench/results/profile_levers.json")
    args = parser.parse_args(argv)
    with open(args.buffer, "rb") as f:
        trajectories = [e.trajectory for e in pickle.load(f).entries]
    started, load = time.time(), os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        rows = learner_steps(args.start_model, trajectories, args.reps, tmp) + generation(args.start_model, args.reps)
    for row in rows:
        extra = f"  {row['programs_per_s']:6.1f} programs/s" if "programs_per_s" in row else ""
        print(f"{row['what']:50s} threads {row['threads']}: {row['seconds']:.3f} s{extra}")
    result = {"rows": rows, "load_avg_start": load, "load_avg_end": os.getloadavg(),
              "total_s": round(time.time() - started, 1), "settings": vars(args)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
