"""What each limit the profile found would give if removed: the learner's step and the sampler's generation,
measured alone (one process, no Ray) on the real model and real batches, against threads and batch size.

    python bench/profile_levers.py --start-model runs/.../hf --buffer runs/profile/.../buffer.snapshot.pkl

1. learner step (`LearnerRank.train_step`, DeepSpeed ZeRO-0, gloo world 1): 32 RL trajectories from a real
   buffer + 32 supervised references (the learning preset), and the RL micro-step alone, at 1 and 2 torch
   threads; plus the same RL micro-step in plain torch (forward, backward, AdamW): DeepSpeed's share.
2. generation (`models.generation.generate_programs`, the sampler's call): 8 prompts x 4, 8, 16 samples (32, 64,
   128 programs per call) at 1 and 2 threads, with the sampler's decode loop and through transformers' `generate`:
   programs per second; and 8 x 4 on one thread while another process takes learner steps back to back on 1 or 2
   threads, its OpenMP threads spinning (the default) or waiting passively (what sharing the 2 cores costs each;
   that learner alone too), inside a Ray actor, and on the run's own batches (the buffer's prompts) with the
   starting and the trained model.
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

    cfg = load_config("learning", [f"--model.name_or_path={start_model}", f"--run.output_dir={tmp}",
                                   "--learner.warmup_steps=0", "--learner.warm_start_steps=0"])
    rank = LearnerRank(cfg, 0, 1)  # one DeepSpeed engine per process: its groups cannot be built twice
    rank.setup("127.0.0.1", free_port(), load_problems("synthetic", split="train"))
    batch = trajectories[:cfg.learner.batch_size]
    plain = load_policy(start_model).model
    plain.train()
    opt = torch.optim.AdamW(plain.parameters(), lr=cfg.learner.lr, weight_decay=cfg.learner.weight_decay)

    def rl_micro_steps():  # two, so that DeepSpeed's accumulation boundary (one optimizer step) is in each rep
        for _ in range(2):
            rank.micro_step(rl_loss, rank.rl_batch(batch))

    def plain_step():  # the RL micro-step in plain torch, with its optimizer step: DeepSpeed's share of it
        rl = rank.rl_batch(batch)
        out = rl_loss(plain, rl, global_tokens=rl.num_tokens, world_size=1)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(plain.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    rows = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        rows.append({"what": "DeepSpeed train_step: 32 RL + 32 supervised", "threads": threads,
                     "seconds": timed(lambda: rank.train_step(batch), reps)})
        rows.append({"what": "DeepSpeed RL micro-step (32), optimizer every 2nd", "threads": threads,
                     "seconds": timed(rl_micro_steps, reps) / 2})
        rows.append({"what": "plain torch RL step (32) + AdamW", "threads": threads,
                     "seconds": timed(plain_step, reps)})
    return rows


def generation(start_model: str, reps: int, threads=(1, 2), samples=(4, 8, 16), decoders=(False, True)) -> list[dict]:
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
    for count in threads:
        torch.set_num_threads(count)
        for n in samples:
            for use_generate in decoders:
                torch.manual_seed(0)
                seconds = timed(lambda n=n, g=use_generate: generate_programs(
                    policy.model, policy.tokenizer, prompts, is_seq2seq=False, num_samples=n,
                    max_new_tokens=cfg.model.max_new_tokens, temperature=cfg.sampler.temperature,
                    top_p=cfg.sampler.top_p, use_generate=g), reps)
                how = "through generate" if use_generate else "decode loop"
                rows.append({"what": f"generate_programs ({how}), {len(prompts)} prompts x {n}", "threads": count,
                             "seconds": seconds, "programs_per_s": len(prompts) * n / seconds})
    return rows


def run_batches(model_dir: str, buffer: str, reps: int) -> list[dict]:
    """Generation on the run's own batches (its 8 prompts per batch, from the buffer) with ``model_dir``."""
    import collections

    from configs import load_config
    from models import load_policy
    from models.generation import generate_programs

    cfg = load_config("learning", [])
    policy = load_policy(model_dir)
    policy.model.eval()
    with open(buffer, "rb") as f:
        batches = collections.defaultdict(list)
        for e in pickle.load(f).entries:
            batches[e.trajectory.created_at].append(e.trajectory.prompt_ids)
    prompt_sets = [list({tuple(p): p for p in ps}.values()) for ps in list(batches.values())[:reps]]
    torch.set_num_threads(1)
    times = []
    for prompts in prompt_sets:
        torch.manual_seed(0)
        t = time.perf_counter()
        out = generate_programs(policy.model, policy.tokenizer, prompts, is_seq2seq=False, num_samples=4,
                                max_new_tokens=cfg.model.max_new_tokens, temperature=cfg.sampler.temperature,
                                top_p=cfg.sampler.top_p)
        times.append(time.perf_counter() - t)
    return [{"what": f"generate_programs on the run's batches ({len(times)}), {Path(model_dir).parent.name}",
             "threads": 1, "seconds": statistics.median(times), "programs_per_s": len(out) / statistics.median(times)}]


def _learner_loop(start_model: str, buffer: str, threads: int, ready, stop, timing) -> None:
    """Learner steps back to back (another process), as the learner actor runs beside the sampler."""
    with open(buffer, "rb") as f:
        trajectories = [e.trajectory for e in pickle.load(f).entries]
    from configs import load_config
    from learner.rank import LearnerRank, free_port
    from tasks import load_problems

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config("learning", [f"--model.name_or_path={start_model}", f"--run.output_dir={tmp}"])
        rank = LearnerRank(cfg, 0, 1)
        rank.setup("127.0.0.1", free_port(), load_problems("synthetic", split="train"))
        rank.train_step(trajectories[:32])
        ready.set()
        while not stop.is_set():
            t = time.perf_counter()
            rank.train_step(trajectories[:32])
            timing[0] += 1
            timing[1] += time.perf_counter() - t


def shared_cores(start_model: str, buffer: str, reps: int, alone_s: float = 20.0) -> list[dict]:
    """A learner process taking steps back to back, alone and while this process generates on one thread: what
    sharing the 2 cores costs each, by the learner's threads and its OpenMP threads' wait policy (spinning, the
    default, or passive, as cluster/connect.py sets for actors)."""
    import multiprocessing as mp

    rows = []
    for learner_threads, policy in ((1, "ACTIVE"), (2, "ACTIVE"), (2, "PASSIVE")):
        ctx = mp.get_context("spawn")
        ready, stop, timing = ctx.Event(), ctx.Event(), ctx.Array("d", 2)
        os.environ["OMP_WAIT_POLICY"] = policy  # read when the child loads OpenMP
        proc = ctx.Process(target=_learner_loop, args=(start_model, buffer, learner_threads, ready, stop, timing))
        proc.start()
        del os.environ["OMP_WAIT_POLICY"]
        ready.wait(300)
        setting = f"{learner_threads} thread(s), OpenMP wait {policy.lower()}"
        timing[0] = timing[1] = 0.0
        time.sleep(alone_s)
        rows.append({"what": f"learner train_step (32 RL + 32 supervised) alone, {setting}",
                     "threads": learner_threads, "seconds": timing[1] / max(timing[0], 1)})
        timing[0] = timing[1] = 0.0
        for row in generation(start_model, reps, threads=(1,), samples=(4,), decoders=(False,)):
            rows.append({**row, "what": row["what"] + f", beside a learner on {setting}"})
        rows.append({"what": f"  that learner's train_step meanwhile, {setting}", "threads": learner_threads,
                     "seconds": timing[1] / max(timing[0], 1)})
        stop.set()
        proc.join(120)
    return rows


def in_ray_actor(start_model: str, reps: int) -> list[dict]:
    """The same generation inside a Ray actor with one CPU, as the sampler actor runs it (alone on the cluster),
    from its main thread and from a thread of a threaded actor (the sampler's `run` is one)."""
    import ray

    from cluster.connect import init_ray

    init_ray(None, "rltf-levers", num_cpus=2)
    rows = []
    try:
        for concurrency in (1, 8):
            actor = ray.remote(GenerationActor).options(num_cpus=1, max_concurrency=concurrency).remote()
            for row in ray.get(actor.run.remote(start_model, reps)):
                rows.append({**row, "what": row["what"] + f", in a Ray actor (max_concurrency={concurrency})"})
            ray.kill(actor)
    finally:
        ray.shutdown()
    return rows


class GenerationActor:
    def run(self, start_model: str, reps: int) -> list[dict]:
        torch.set_num_threads(1)  # as actors.sampler.Sampler does
        return generation(start_model, reps, threads=(1,), samples=(4,), decoders=(False,))


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
    rows += shared_cores(args.start_model, args.buffer, args.reps) + in_ray_actor(args.start_model, args.reps)
    # The run's own batches (its prompt mix), with the starting model and, if saved beside the buffer, the run's.
    for model in (args.start_model, Path(args.buffer).parent / "hf"):
        if Path(model).is_dir():
            rows += run_batches(str(model), args.buffer, 6)
    for row in rows:
        extra = f"  {row['programs_per_s']:6.1f} programs/s" if "programs_per_s" in row else ""
        print(f"{row['what']:90s} threads {row['threads']}: {row['seconds']:.3f} s{extra}")
    result = {"rows": rows, "load_avg_start": load, "load_avg_end": os.getloadavg(),
              "total_s": round(time.time() - started, 1), "settings": vars(args)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
