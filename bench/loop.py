"""Benchmark: the actor-learner loop's parts against plain baselines, each pair measured side by side in one run.

1. generation: `generate_programs` (the sampler's decode loop: prompts encoded once per group, finished programs
   leave the batch, behaviour log-probs) against a plain `model.generate` on the same model, prompts, batch and
   sampling settings; and `generate_programs` through `generate` (``use_generate``), which must decode the same
   tokens as the plain call from the same seed (its log-prob recorder changes nothing); reps interleaved.
   The whole sampler batch (generate + greedy + sandbox + rewards) is timed too, for information.
2. learner step: one DeepSpeed optimizer step (`LearnerRank`, ZeRO 0, gloo, world 1) against a plain torch AdamW
   step (same model, batch, loss, clipping, dropout seeds); the parameters must end up equal.
3. weight push: push on the `ObjectStoreSync` + `WeightStore` path until every receiving `Sampler` actor
   runs it (`refresh_weights`: latest, fetch, load_state_dict), against a raw `ray.put` + `ray.get` of the same
   tensors in the same actors, by model size (GPT-2s built from `GPT2Config`) and number of receivers.
4. loop: trajectories accepted per second by the real asynchronous system (`Controller` on the `smoke` preset:
   sampler actor, Ray sandbox worker, buffer, DeepSpeed learner) against a synchronous generate-grade-learn loop
   in one process, the strongest plain loop on these cores: the same model and batch, generation with every core
   and the same decode loop (key/value cache, prompts encoded once), the same grading (`Sampler.sample_batch` on a
   `LocalSandboxPool` of as many workers), then the same `LearnerRank.train_step` on every core, then the new
   weights copied into the sampler; over the same window, half before and half after the asynchronous side.

    python bench/loop.py [--quick] [--out bench/results/loop.json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402

from bench.loop_systems import (  # noqa: E402
    PUSH_SIZES,
    SyncLoop,
    bench_async_loop,
    bench_weight_push,
    combine,
)
from cluster.connect import init_ray  # noqa: E402
from configs import load_config  # noqa: E402
from train.command import cpus_needed  # noqa: E402

CORES = os.cpu_count() or 1


def bench_config(tmp: str, name: str = "benchloop"):
    """The smoke preset with no warm start (both loop sides start RL from the same untrained model) and no periodic
    checkpoints (neither side writes one inside the measured window)."""
    return load_config("smoke", [f"--run.name={name}", f"--run.output_dir={tmp}", "--learner.warm_start_steps=0",
                                 "--learner.checkpoint_every=0", "--learner.total_steps=1000000"])




# --- 1. generation ---------------------------------------------------------------------------------------------
def plain_generate(model, tokenizer, prompts, n: int, max_new_tokens: int, temperature: float, top_p: float):
    from models.generation import left_pad

    ids, mask = left_pad(prompts, tokenizer.pad_token_id)
    with torch.inference_mode():
        return model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                              num_return_sequences=n, do_sample=True, temperature=temperature, top_p=top_p, top_k=0,
                              pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)


def bench_generation(cfg, sampler, reps: int) -> dict:
    from models.generation import generate_programs

    torch.set_num_threads(max(1, int(cfg.sampler.num_cpus)))  # what a sampler actor uses
    pol, s = sampler.backend.policy, cfg.sampler
    problems = sampler.problems[: s.problems_per_batch]
    prompts = [sampler.prompt_ids(p) for p in problems]
    n, new = s.samples_per_problem, cfg.model.max_new_tokens
    ours, through_generate, plain, same = [], [], [], True

    def timed(fn, rep: int) -> tuple[float, object]:
        torch.manual_seed(rep)
        t = time.perf_counter()
        out = fn()
        return time.perf_counter() - t, out

    def generate(use_generate: bool):
        return generate_programs(pol.model, pol.tokenizer, prompts, is_seq2seq=False, num_samples=n, max_new_tokens=new,
                                 temperature=s.temperature, top_p=s.top_p, use_generate=use_generate)

    for rep in range(reps + 1):  # rep 0 is warm-up for all three
        t_ours, _ = timed(lambda: generate(False), rep)
        t_gen, progs = timed(lambda: generate(True), rep)
        t_plain, seqs = timed(lambda: plain_generate(pol.model, pol.tokenizer, prompts, n, new, s.temperature, s.top_p),
                              rep)
        width = max(len(p) for p in prompts)
        for prog, row in zip(progs, seqs[:, width:].tolist()):
            same &= row[: len(prog.token_ids)] == prog.token_ids
        if rep:
            ours.append(t_ours)
            through_generate.append(t_gen)
            plain.append(t_plain)
    batch = len(prompts) * n
    whole = []
    for _ in range(max(2, reps // 2)):
        t = time.perf_counter()
        trajectories = sampler.sample_batch()
        whole.append(time.perf_counter() - t)
    programs = batch + (len(prompts) if sampler.scorer.needs_greedy else 0)
    return {
        "batch": f"{len(prompts)} prompts x {n} samples, {new} new tokens, T={s.temperature}, top_p={s.top_p}",
        "torch_threads": torch.get_num_threads(), "reps": reps, "same_tokens": same,
        "ours_programs_per_s": batch / median(ours), "plain_programs_per_s": batch / median(plain),
        "through_generate_programs_per_s": batch / median(through_generate),
        "ratio": median([p / o for p, o in zip(plain, ours)]),  # each pair ran back to back
        "sampler_batch_s": median(whole), "sampler_programs_per_s": programs / median(whole),
        "sampler_trajectories_per_s": len(trajectories) / median(whole),
    }


# --- 2. learner step -------------------------------------------------------------------------------------------
def fake_returns(programs, prompts, seed: int = 0):
    """Real sampled programs with random per-token returns: the learner's work does not depend on the values."""
    import random

    from rewards.trajectory import Trajectory

    rng = random.Random(seed)
    return [Trajectory(problem_id=f"p{p.prompt_index}", prompt_ids=prompts[p.prompt_index], program_ids=p.token_ids,
                       returns=[rng.uniform(-1.3, 1.0) for _ in p.token_ids], behaviour_logprobs=p.logprobs,
                       policy_version=0, reward=0.0, baseline_reward=0.0, outcome="failed") for p in programs]


def bench_learner_step(tmp: str, sampler, reps: int) -> dict:
    from learner.loss import rl_loss
    from learner.rank import LearnerRank, free_port
    from models import load_policy
    from models.generation import generate_programs

    cfg = load_config("smoke", [f"--run.output_dir={tmp}", "--learner.supervised_ratio=0",
                                "--learner.warm_start_steps=0", "--learner.warmup_steps=0"])
    torch.set_num_threads(max(1, int(cfg.learner.num_cpus)))  # what a learner actor uses
    problems = sampler.problems[:4]
    prompts = [sampler.prompt_ids(p) for p in problems]
    torch.manual_seed(0)
    programs = generate_programs(sampler.backend.policy.model, sampler.backend.tokenizer, prompts, is_seq2seq=False,
                                 num_samples=cfg.learner.batch_size // len(prompts), max_new_tokens=cfg.model.max_new_tokens)
    batch_trajs = fake_returns(programs, prompts)

    rank = LearnerRank(cfg, 0, 1)
    rank.setup("127.0.0.1", free_port(), problems)
    plain = load_policy(cfg.model.name_or_path).model
    plain.load_state_dict(rank.engine.module.state_dict())
    plain.train()
    opt = torch.optim.AdamW(plain.parameters(), lr=cfg.learner.lr, weight_decay=cfg.learner.weight_decay)
    ds_times, plain_times, cpu_ratios = [], [], []
    for step in range(reps + 2):  # two warm-up steps each
        torch.manual_seed(1000 + step)  # same dropout masks on both sides
        t, c = time.perf_counter(), time.process_time()
        rank.train_step(batch_trajs)
        ds, ds_cpu = time.perf_counter() - t, time.process_time() - c
        torch.manual_seed(1000 + step)
        t, c = time.perf_counter(), time.process_time()
        batch = rank.rl_batch(batch_trajs)  # the same batching code as the learner's
        out = rl_loss(plain, batch, global_tokens=batch.num_tokens, world_size=1)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(plain.parameters(), 1.0)  # the DeepSpeed JSON's gradient_clipping
        opt.step()
        opt.zero_grad(set_to_none=True)
        pl, pl_cpu = time.perf_counter() - t, time.process_time() - c
        if step >= 2:
            ds_times.append(ds)
            plain_times.append(pl)
            cpu_ratios.append(pl_cpu / ds_cpu)
    ours = rank.engine.module.state_dict()
    diff = max(float((ours[k] - v).abs().max()) for k, v in plain.state_dict().items())
    return {"batch": f"{len(batch_trajs)} trajectories, {batch.num_tokens} target tokens",
            "torch_threads": torch.get_num_threads(), "reps": reps, "max_param_diff": diff,
            "deepspeed_step_s": median(ds_times), "plain_step_s": median(plain_times),
            "ratio": median([p / d for p, d in zip(plain_times, ds_times)]), "cpu_time_ratio": median(cpu_ratios)}


# --- report ------------------------------------------------------------------------------------------------------
def table(results: dict) -> str:
    g, ls, loop = results["generation"], results["learner_step"], results["loop"]
    rows = [("measure", "ours", "baseline", "ratio", "target"),
            ("generation programs/s (generate_programs vs plain generate)", f"{g['ours_programs_per_s']:.1f}",
             f"{g['plain_programs_per_s']:.1f}", f"{g['ratio']:.2f}", ">= 0.9"),
            ("  generate_programs through generate (log-probs recorded; same tokens as plain)",
             f"{g['through_generate_programs_per_s']:.1f}", f"{g['plain_programs_per_s']:.1f}",
             f"{g['through_generate_programs_per_s'] / g['plain_programs_per_s']:.2f}", "info"),
            ("  whole sampler batch programs/s (gen+greedy+sandbox+rewards)", f"{g['sampler_programs_per_s']:.1f}",
             "-", "-", "info"),
            ("learner step s (DeepSpeed ZeRO-0 vs torch AdamW; ratio=plain/ds)", f"{ls['deepspeed_step_s']:.4f}",
             f"{ls['plain_step_s']:.4f}", f"{ls['ratio']:.2f}", "report"),
            ("  same, ratio of CPU time (plain/ds)", "-", "-", f"{ls['cpu_time_ratio']:.2f}", "info")]
    for r in results["weight_push"]:
        rows.append((f"weight push->running s, {r['size']} ({r['megabytes']:.0f} MB), {r['receivers']} sampler(s)"
                     " (ratio=ours/raw)", f"{r['push_to_running_s']:.3f}", f"{r['raw_put_get_s']:.3f}",
                     f"{r['ratio']:.2f}", "report"))
    rows.append(("loop samples/s (async system vs sync one-process loop)", f"{loop['async']['samples_per_s']:.2f}",
                 f"{loop['sync']['samples_per_s']:.2f}", f"{loop['ratio']:.2f}", ">= 1.3"))
    rows.append(("  loop program tokens/s (async vs sync; length-independent)",
                 f"{loop['async']['program_tokens_per_s']:.0f}", f"{loop['sync']['program_tokens_per_s']:.0f}",
                 f"{loop['token_ratio']:.2f}", "info"))
    for key, label in (("learner_steps_per_s", "learner steps/s"), ("mean_program_tokens", "mean program tokens")):
        rows.append((f"  loop {label} (async vs sync)", f"{loop['async'][key]:.2f}", f"{loop['sync'][key]:.2f}",
                     "-", "info"))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter windows, fewer reps, no ~100M model (< 3 min)")
    parser.add_argument("--window", type=float, default=None, help="seconds each loop side is measured [60; quick 20]")
    parser.add_argument("--sync-threads", type=int, default=CORES,
                        help=f"torch threads of the sync loop's generation and learner step [{CORES}: every core]")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "loop.json"))
    args = parser.parse_args(argv)
    window = args.window or (20.0 if args.quick else 60.0)
    reps = 3 if args.quick else 7
    sizes = PUSH_SIZES[:2] if args.quick else PUSH_SIZES
    started = time.time()

    from actors.sampler import Sampler
    from sandbox import LocalSandboxPool
    from tasks import load_problems

    results: dict = {"quick": args.quick, "cores": CORES, "load_avg_start": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="benchloop-") as tmp:
        cfg = bench_config(tmp)
        problems = load_problems(cfg.data.source, fmt=cfg.data.format, split=cfg.data.split, limit=cfg.data.limit)
        pool = LocalSandboxPool(cfg.sandbox.num_workers, cfg.sandbox)
        try:
            sampler = Sampler(cfg, "bench", problems, None, pool, None)
            print(f"1/4 generation ... ({time.time() - started:.0f} s)", flush=True)
            results["generation"] = bench_generation(cfg, sampler, reps)
        finally:
            pool.close()
        print(f"2/4 learner step ... ({time.time() - started:.0f} s)", flush=True)
        results["learner_step"] = bench_learner_step(tmp, sampler, reps * 2)
        print(f"4/4 loop, synchronous side, first half ({window / 2:.0f} s) ... ({time.time() - started:.0f} s)",
              flush=True)
        sync_loop = SyncLoop(cfg, problems, args.sync_threads)
        sync_windows = [sync_loop.measure(window / 2)]
        import ray

        init_ray(None, cfg.run.namespace, cpus_needed(cfg), log_to_driver=False)
        try:
            print(f"3/4 weight push ... ({time.time() - started:.0f} s)", flush=True)
            results["weight_push"] = bench_weight_push(cfg, problems, tmp, sizes, max(2, reps // 2))
            print(f"4/4 loop, asynchronous side ({window:.0f} s) ... ({time.time() - started:.0f} s)", flush=True)
            results["load_avg_before_async"] = os.getloadavg()
            asynchronous = bench_async_loop(cfg, tmp, window)
        finally:
            ray.shutdown()
        print(f"4/4 loop, synchronous side, second half ({window / 2:.0f} s) ... ({time.time() - started:.0f} s)",
              flush=True)
        sync_windows.append(sync_loop.measure(window / 2))
        sync_loop.close()
        sync = combine(sync_windows)
        for side in (sync, asynchronous):
            side["program_tokens_per_s"] = side["samples_per_s"] * side["mean_program_tokens"]
        results["loop"] = {"sync": sync, "async": asynchronous,
                           "ratio": asynchronous["samples_per_s"] / sync["samples_per_s"],
                           # The two policies train for different numbers of steps, so their programs differ in length;
                           # tokens/s shows that. (A batch's decode cost follows its longest program, so neither
                           # figure fully removes the effect.)
                           "token_ratio": asynchronous["program_tokens_per_s"] / sync["program_tokens_per_s"],
                           "settings": {"model": cfg.model.name_or_path, "problems_per_batch": cfg.sampler.problems_per_batch,
                                        "samples_per_problem": cfg.sampler.samples_per_problem,
                                        "max_new_tokens": cfg.model.max_new_tokens, "sandbox_workers": cfg.sandbox.num_workers,
                                        "learner_batch": cfg.learner.batch_size, "supervised_ratio": cfg.learner.supervised_ratio,
                                        "warm_start_steps": 0}}
    results["total_s"] = time.time() - started
    print()
    print(table(results))
    print(f"\n(total {results['total_s']:.0f} s on {CORES} cores; generation tokens identical on both sides: "
          f"{results['generation']['same_tokens']}; DeepSpeed vs AdamW max parameter difference "
          f"{results['learner_step']['max_param_diff']:.2e})")
    loop = results["loop"]
    print("(1-minute load average: start {:.1f}; sync windows {}; async window {:.1f}. Figures from a busy machine "
          "are noisier; the sync windows bracket the async one in time.)".format(
              results["load_avg_start"][0], ", ".join(f"{w['load_avg_1min']:.1f}" for w in loop["sync"]["windows"]),
              loop["async"]["load_avg_1min"]))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str))
    print(f"figures written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
