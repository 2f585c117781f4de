"""The parts of bench/loop.py that compare whole systems: the synchronous one-process loop (4), and what runs on
Ray: the weight push (3) and the asynchronous actor system (4)."""
from __future__ import annotations

import os
import time
from pathlib import Path
from statistics import median

import torch

from configs import load_config

# GPT-2 shapes for the weight-push sizes: (label, n_embd, n_layer, n_head, vocab, positions).
PUSH_SIZES = [("~3M", 256, 4, 4, 384, 512), ("~25M", 512, 6, 8, 8192, 512), ("~100M", 768, 12, 12, 32768, 1024)]


# --- 4a. synchronous loop --------------------------------------------------------------------------------------
class SyncLoop:
    """Generate a batch, grade it, take a learner step on it, copy the new weights into the sampler; repeat.

    Set up once; `measure` may run several windows (before and after the asynchronous side, so that a change in
    the machine's load during the run hits both sides alike)."""

    def __init__(self, cfg, problems, threads: int) -> None:
        from actors.sampler import Sampler
        from learner.rank import LearnerRank, free_port
        from sandbox import LocalSandboxPool

        self.pool = LocalSandboxPool(cfg.sandbox.num_workers, cfg.sandbox)
        self.sampler = Sampler(cfg, "sync", problems, None, self.pool, None)
        self.learner = LearnerRank(cfg, 0, 1)
        self.learner.setup("127.0.0.1", free_port(), problems)
        self.threads = threads
        torch.set_num_threads(threads)
        self.iteration()  # warm-up: first generation, first sandbox forks, DeepSpeed's first step

    def iteration(self) -> list:
        self.sampler.backend.load_weights(self.learner.engine.module.state_dict())  # the policy just trained
        self.sampler.version = self.learner.step
        trajectories = self.sampler.sample_batch()
        if trajectories:
            self.learner.train_step(trajectories)
        return trajectories

    def measure(self, window_s: float) -> dict:
        torch.set_num_threads(self.threads)
        start, samples, steps, tokens = time.perf_counter(), 0, 0, 0
        while time.perf_counter() - start < window_s:
            trajectories = self.iteration()
            samples, steps = samples + len(trajectories), steps + 1
            tokens += sum(len(t.program_ids) for t in trajectories)
        elapsed = time.perf_counter() - start
        return {"window_s": elapsed, "trajectories": samples, "learner_steps": steps, "torch_threads": self.threads,
                "samples_per_s": samples / elapsed, "learner_steps_per_s": steps / elapsed,
                "mean_program_tokens": tokens / max(samples, 1), "load_avg_1min": os.getloadavg()[0]}

    def close(self) -> None:
        self.pool.close()


def combine(windows: list[dict]) -> dict:
    elapsed = sum(w["window_s"] for w in windows)
    samples, steps = sum(w["trajectories"] for w in windows), sum(w["learner_steps"] for w in windows)
    return {"window_s": elapsed, "trajectories": samples, "learner_steps": steps, "samples_per_s": samples / elapsed,
            "learner_steps_per_s": steps / elapsed, "torch_threads": windows[0]["torch_threads"],
            "mean_program_tokens": sum(w["mean_program_tokens"] * w["trajectories"] for w in windows) / max(samples, 1),
            "windows": windows}


# --- Ray parts ---------------------------------------------------------------------------------------------------
def build_model_dir(tmp: str, size) -> tuple[str, int, int]:
    """A GPT-2 of the given shape saved with the tiny preset's tokenizer, so `Sampler` loads it like any policy."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from models import ensure_tiny

    label, embd, layers, heads, vocab, positions = size
    directory = Path(tmp) / f"gpt2-{label.strip('~')}"
    model = GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_embd=embd, n_layer=layers, n_head=heads,
                                       n_positions=positions, bos_token_id=0, eos_token_id=0, pad_token_id=0))
    model.save_pretrained(directory)
    AutoTokenizer.from_pretrained(ensure_tiny("tiny:gpt2")).save_pretrained(directory)
    params = sum(p.numel() for p in model.parameters())
    nbytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    return str(directory), params, nbytes


def bench_weight_push(cfg, problems, tmp: str, sizes, reps: int) -> list[dict]:
    import ray

    from actors.sampler import Sampler
    from learner.weight_sync import ObjectStoreSync, WeightStore
    from models import load_policy

    class PushReceiver(Sampler):
        def raw_fetch(self, refs: list) -> float:
            state = ray.get(refs[0])
            return time.time() if state else 0.0

    rows = []
    for size in sizes:
        model_dir, params, nbytes = build_model_dir(tmp, size)
        sized = load_config("smoke", [f"--model.name_or_path={model_dir}", f"--run.output_dir={tmp}"])
        state = load_policy(model_dir).model.state_dict()  # the learner side's tensors
        store = ray.remote(WeightStore).options(num_cpus=0).remote()
        transport = ObjectStoreSync(store)
        receivers = [ray.remote(PushReceiver).options(num_cpus=0, max_concurrency=2).remote(
            sized, f"push-{i}", problems, None, None, transport) for i in range(2)]
        ray.get([r.status.remote() for r in receivers])
        version = 0
        for n in (1, 2):
            ours, raw = [], []
            for rep in range(reps + 1):  # rep 0 warms both paths up
                version += 1
                t = time.time()
                transport.send(version, state)
                ray.get([r.refresh_weights.remote() for r in receivers[:n]])
                t_ours = time.time() - t
                t = time.time()
                ref = ray.put(state)
                ray.get([r.raw_fetch.remote([ref]) for r in receivers[:n]])
                t_raw = time.time() - t
                del ref
                if rep:
                    ours.append(t_ours)
                    raw.append(t_raw)
            running = ray.get([r.status.remote() for r in receivers[:n]])
            assert all(s.policy_version == version for s in running), running  # every receiver runs the push
            rows.append({"size": size[0], "parameters": params, "megabytes": nbytes / 2**20, "receivers": n,
                         "reps": reps, "push_to_running_s": median(ours), "raw_put_get_s": median(raw),
                         "ratio": median([o / r for o, r in zip(ours, raw)])})
        for r in receivers:
            ray.kill(r)
        ray.kill(store)
    return rows


def bench_async_loop(cfg, tmp: str, window_s: float, warm_batches: int = 2, warm_steps: int = 2) -> dict:
    """The real system on the run's config; trajectories accepted by its buffer per second, warm-up excluded."""
    import ray

    from train.controller import Controller

    controller = ray.remote(Controller).options(name=f"{cfg.run.name}:controller", num_cpus=0,
                                                max_concurrency=32).remote(cfg, str(Path(tmp) / "async-run"))
    done = controller.run.remote()
    buffer, deadline = None, time.time() + 300
    while buffer is None:
        try:
            buffer = ray.get_actor(f"{cfg.run.name}:buffer", namespace=cfg.run.namespace)
        except ValueError:
            if ray.wait([done], timeout=0.5)[0]:
                ray.get(done)  # raises the controller's error
            if time.time() > deadline:
                raise TimeoutError("the controller built no buffer within 300 s")

    def accepted() -> int:
        return ray.get(buffer.stats.remote()).accepted

    def learner_step() -> int:
        return ray.get(controller.status.remote()).progress.step

    per_batch = cfg.sampler.problems_per_batch * cfg.sampler.samples_per_problem
    while accepted() < warm_batches * per_batch or learner_step() < warm_steps:
        if ray.wait([done], timeout=0.5)[0]:
            raise RuntimeError(f"the controller ended during warm-up: {ray.get(done)}")
    # Measure from one accepted batch to another (as the synchronous side does) so no partial batch is counted.
    last = accepted()
    while accepted() == last:
        time.sleep(0.1)
    t0, a0, s0, wall0 = time.perf_counter(), accepted(), learner_step(), time.time()
    t1, a1 = t0, a0
    while time.perf_counter() - t0 < window_s:
        a = accepted()
        if a != a1:
            t1, a1 = time.perf_counter(), a
        time.sleep(0.25)  # a batch lands every second or two; polling faster would load the machine it measures
    s1, elapsed = learner_step(), time.perf_counter() - t0
    status = ray.get(controller.status.remote())
    # Program lengths of trajectories made in the window (a sample of what the buffer still holds): a policy that
    # learned to stop earlier makes cheaper programs, so both sides report it.
    held = ray.get(buffer.sample.remote(min(128, status.buffer.size), 1))
    made = [t for t in (held[0] if held else []) if t.created_at >= wall0]
    return {"window_s": t1 - t0, "trajectories": a1 - a0, "learner_steps": s1 - s0,
            "samples_per_s": (a1 - a0) / (t1 - t0), "learner_steps_per_s": (s1 - s0) / elapsed,
            "mean_program_tokens": sum(len(t.program_ids) for t in made) / max(len(made), 1),
            "policy_version": status.progress.version, "sampler_versions": status.progress.sampling.sampler_versions,
            "load_avg_1min": os.getloadavg()[0]}
