"""The profile's analysis (bench/profile_run.py): py-spy stacks into categories, seconds per process, table, PNG.

A sample's category is the first rule below whose function names (and, where one function does several jobs,
line numbers, looked up in the source so they follow edits) all appear on its stack. CPU seconds per process come
from /proc; py-spy's active samples split the Python threads' share of them, and what py-spy cannot see (Ray's
C++ core-worker threads, gloo, OpenMP workers, child processes) is reported from /proc per thread or process.
"""
from __future__ import annotations

import collections
import itertools
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def line_of(relpath: str, text: str) -> str:
    """``"file:line"`` of the first line of a project file containing ``text`` (as py-spy prints frames)."""
    for number, line in enumerate((REPO / relpath).read_text().splitlines(), 1):
        if text in line:
            return f"{relpath}:{number})"
    raise LookupError(f"{text!r} is no longer in {relpath}: update bench/profile_report.py's rules")


def rules() -> list[tuple[str, tuple[str, ...]]]:
    """(category, substrings that must all be on the stack); the first match wins, so specific rules come first."""
    rl = line_of("learner/rank.py", "self.micro_step(rl_loss")
    logprobs = line_of("models/generation.py", "logprobs[rows, step] =")
    return [
        # weights: learner side, then sampler side
        ("learner: publish weights (state_dict, ray.put)", ("publish (learner/rank.py",)),
        ("sampler: fetch new weights (ray.get)", ("refresh_weights (actors/sampler.py", "fetch (learner/weight_sync.py")),
        ("sampler: load new weights (load_state_dict)", ("refresh_weights (actors/sampler.py", "load_state_dict")),
        ("sampler: ask for a newer weight version", ("refresh_weights (actors/sampler.py",)),
        # the sampler's batch
        ("sampler: behaviour log-probs (log_softmax, gather)", (logprobs,)),
        ("sampler: behaviour log-probs (log_softmax, gather)", ("BehaviourLogprobs",)),
        ("sampler: generation, model forward", ("generate_programs", "modeling_gpt2")),
        ("sampler: generation, sampling loop (top-p, cache, stopping)", ("generate_programs", "decode_causal")),
        ("sampler: generation, sampling loop (top-p, cache, stopping)", ("generate_programs", "generate (")),
        ("sampler: generation, decode and bookkeeping", ("generate_programs",)),
        ("sampler: waiting for sandbox verdicts", ("run (sandbox/pool.py",)),
        ("sampler: rewards (score_program)", ("grade_batch (actors/sampler.py", "rewards/")),
        ("sampler: batch bookkeeping (trajectories, metrics)", ("_batch (actors/sampler.py",)),
        ("sampler: waiting under back-pressure (buffer.put)", ("_wait_pushed (actors/sampler.py",)),
        ("sampler: grading thread, waiting under back-pressure (buffer.put)", ("_grade_and_push (actors/sampler.py",)),
        ("sampler: waiting for the first weights", (line_of("actors/sampler.py", "time.sleep(0.2)"),)),
        # the sandbox worker
        ("sandbox: trusted-side grading", ("run_batch (sandbox/pool.py", "sandbox/grading.py")),
        ("sandbox: fork-server round trip (fork, wait, reap)", ("run_batch (sandbox/pool.py", "sandbox/forkserver.py")),
        ("sandbox: other", ("run_batch (sandbox/pool.py",)),
        # the learner's step
        ("learner: batching (make_batch, padding)", ("train_step (learner/rank.py", "make_batch")),
        ("learner: supervised batch draw", ("train_step (learner/rank.py", "_supervised_batch")),
        ("learner: token-count all-reduce (gloo)", ("train_step (learner/rank.py", "_global_tokens")),
        ("learner: RL micro-step, model forward", ("train_step (learner/rank.py", rl, "rl_loss", "modeling_gpt2")),
        ("learner: RL micro-step, loss (log-softmax, returns)", ("train_step (learner/rank.py", rl, "rl_loss")),
        ("learner: RL micro-step, backward", ("train_step (learner/rank.py", rl, "backward (torch/")),
        ("learner: optimizer step (AdamW)", ("train_step (learner/rank.py", "torch/optim/")),
        ("learner: RL micro-step, DeepSpeed overhead", ("train_step (learner/rank.py", rl, "deepspeed/")),
        ("learner: supervised micro-step, model forward",
         ("train_step (learner/rank.py", "supervised_loss", "modeling_gpt2")),
        ("learner: supervised micro-step, loss (log-softmax)", ("train_step (learner/rank.py", "supervised_loss")),
        ("learner: supervised micro-step, backward", ("train_step (learner/rank.py", "backward (torch/")),
        ("learner: supervised micro-step, DeepSpeed overhead", ("train_step (learner/rank.py", "deepspeed/")),
        ("learner: step other", ("train_step (learner/rank.py",)),
        ("learner: checkpoint", ("save_checkpoint (learner/rank.py",)),
        # buffer, controller
        ("buffer: write-ahead log (pickle)", (line_of("actors/buffer.py", "pickle.dump((batch_id"),)),
        ("buffer: put / sample / stats", ("actors/buffer.py",)),
        ("controller: progress tick, metrics", ("_tick (train/controller.py",)),
        ("controller: run log (JSONL, TensorBoard)", ("train/run_log.py",)),
        ("controller: checkpoint", ("_checkpoint (train/controller.py",)),
        ("controller: learner loop", ("train/",)),
        ("metrics (ray.util.metrics)", ("cluster/metrics.py",)),
        # Ray's own work in a Python frame: (de)serialising arguments and results, object store calls
        ("Ray: (de)serialisation", ("ray/_private/serialization.py",)),
        ("Ray: object store get/put", ("ray/_private/worker.py", "get_objects")),
    ]


IDLE = "idle: waiting for work"
_IDLE_MARKERS = ("main_loop (ray/_private/worker.py", "asyncio/base_events.py", "threading.py", "queue.py",
                 "concurrent/futures")


class Classifier:
    def __init__(self) -> None:
        self.rules = rules()
        self.cache: dict[str, str] = {}

    def __call__(self, stack: str) -> str:
        found = self.cache.get(stack)
        if found is None:
            found = next((name for name, needles in self.rules if all(n in stack for n in needles)), None)
            if found is None:
                # Nothing of the project on the stack: the process waits for work (Ray's task loop, an event loop,
                # a thread pool) or Ray runs its own Python code.
                found = IDLE if any(m in stack for m in _IDLE_MARKERS) else "Ray worker internals"
            self.cache[stack] = found
        return found


def read_raw(path: Path) -> dict[str, collections.Counter]:
    """py-spy raw output (``thread (tid): name;frame;frame... count``) -> {thread: Counter(stack -> samples)}."""
    threads: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    if not path.exists():
        return threads
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        thread, _, frames = stack.partition(";")
        threads[thread][frames] += int(count)
    return threads


def native_group(name: str) -> str:
    """A native (non-Python) thread's category, by the name the kernel knows it by."""
    if name.startswith(("gloo", "pt_")):
        return "native: gloo / torch.distributed threads"
    if name.startswith(("omp", "ray::", "python")):
        return "native: OpenMP / unnamed worker threads"  # intra-op compute threads of torch
    return "native: Ray core-worker threads (gRPC, object transfer, io)"


def split_cpu(threads_cpu: dict[str, float], active: dict[str, collections.Counter], classify,
              idle_as: str) -> tuple[collections.Counter, float]:
    """Each thread's /proc CPU seconds, split over categories in proportion to its py-spy active samples; threads
    py-spy never saw active are native ones (named by the kernel). Returns the split and the seconds py-spy saw."""
    by_tid = {name.rpartition("/")[2]: (name.rpartition("/")[0], s) for name, s in threads_cpu.items()}
    samples = {re.match(r"thread \((\d+)\)", t).group(1): c for t, c in active.items() if t.startswith("thread (")}
    out, seen = collections.Counter(), 0.0
    for tid, (name, seconds) in by_tid.items():
        stacks = samples.get(tid)
        total = sum(stacks.values()) if stacks else 0
        if not total:
            if seconds > 0:
                out[native_group(name)] += seconds
            continue
        seen += seconds
        for stack, n in stacks.items():
            category = classify(stack)
            out[idle_as if category == IDLE else category] += seconds * n / total
    return out, seen


def analyse(files: dict, cpu: dict, records: list[dict], t0: float, window_s: float, rate: int) -> dict:
    classify = Classifier()
    processes = {}
    for role, paths in files.items():
        group = cpu["groups"].get(role, {"cpu_s": 0.0, "threads": {}})
        threads = group.get("threads", {})
        active = read_raw(paths["cpu"]) if "cpu" in paths else {}
        # A thread "active" with no project frame on its stack is Ray dispatching calls (event loop, task loop).
        if active:
            cpu_by, seen = split_cpu(threads, active, classify, "Ray: task dispatch (no project frame)")
        else:  # not sampled: a quiet actor
            cpu_by, seen = collections.Counter({f"{role}: all threads (not sampled), by /proc": sum(threads.values())}), 0.0
        own = sum(threads.values())
        if group["cpu_s"] > own + 0.01:
            cpu_by["child processes (fork-server, programs), by /proc"] += group["cpu_s"] - own
        wall = read_raw(paths["wall"])
        # The work thread: the one with the most active samples (Ray runs a threaded actor's calls off MainThread).
        if active:
            busiest = max(active, key=lambda t: sum(active[t].values()), default=None)
        else:  # a quiet actor: the thread that runs its calls most often
            busiest = max(wall, key=lambda t: sum(n for st, n in wall[t].items() if "(actors/" in st or
                                                  "(learner/" in st), default=None)
        wall_by = collections.Counter()
        for stack, n in (wall.get(busiest) or {}).items():
            wall_by[classify(stack)] += n / rate
        processes[role] = {
            "cpu_s": round(group["cpu_s"], 2), "python_threads_cpu_s": round(seen, 2),
            "cpu_by_category": _rounded(cpu_by), "work_thread": busiest, "wall_by_category": _rounded(wall_by),
            "py_spy_samples": {"cpu": sum(sum(c.values()) for c in active.values()),
                               "wall_work_thread": sum((wall.get(busiest) or {}).values())},
        }
    others = {name: round(g["cpu_s"], 2) for name, g in cpu["groups"].items() if name not in files}
    accounted = sum(p["cpu_s"] for p in processes.values()) + sum(others.values())
    learner = [r for r in records if r.get("kind") == "learner" and "step_s" in r]
    return {
        "window_s": round(cpu["window_s"], 1), "rate_hz": rate,
        "machine": {"busy_core_s": round(cpu["machine"]["busy"], 1), "idle_core_s": round(cpu["machine"]["idle"], 1),
                    "unaccounted_busy_s": round(cpu["machine"]["busy"] - accounted, 1)},
        "processes": processes, "other_processes_cpu_s": others,
        "learner_steps": _step_stats(learner, t0, window_s),
    }


def _step_stats(learner: list[dict], t0: float, budget_s: float) -> dict:
    inside = [r for r in learner if t0 <= r["time"] <= t0 + budget_s + 5]
    steps = sorted(r["step_s"] for r in inside)
    gaps = [b["time"] - a["time"] - b["step_s"] for a, b in itertools.pairwise(inside)]
    first = inside[0]["time"] - inside[0]["step_s"] - t0 if inside else None
    return {"count": len(steps), "step_s_median": steps[len(steps) // 2] if steps else None,
            "step_s_mean": sum(steps) / len(steps) if steps else None,
            "gap_s_median": sorted(gaps)[len(gaps) // 2] if gaps else None,
            "first_step_starts_s": first,
            "timeline": [(round(r["time"] - t0, 2), round(r["step_s"], 3)) for r in inside]}


def _rounded(counter: collections.Counter, top: int | None = None) -> dict[str, float]:
    items = counter.most_common(top)
    return {k: round(v, 2) for k, v in items if v >= 0.005}


def table(result: dict) -> str:
    lines = [(f"Profile of {result['window_s']} s of training on {result.get('cores')} cores "
              f"({result['machine']['busy_core_s']} busy core-seconds, {result['machine']['idle_core_s']} idle; "
              f"{result['machine']['unaccounted_busy_s']} busy outside the run's processes)"), ""]
    for role, p in result["processes"].items():
        lines.append(f"{role}: {p['cpu_s']:.1f} CPU s ({p['python_threads_cpu_s']:.1f} s in Python threads)")
        for name, s in p["cpu_by_category"].items():
            if s >= 0.1:
                lines.append(f"    cpu  {s:7.1f} s  {name}")
        lines.append(f"  wall of its work thread ({p['work_thread']}):")
        for name, s in p["wall_by_category"].items():
            if s >= 0.1:
                lines.append(f"    wall {s:7.1f} s  {name}")
    lines.append("other processes: " + ", ".join(f"{k.removeprefix('other: ')} {v:.1f} s"
                                                  for k, v in sorted(result["other_processes_cpu_s"].items(),
                                                                     key=lambda kv: -kv[1]) if v >= 0.1))
    steps = result["learner_steps"]
    if steps["count"]:
        lines.append(f"learner: {steps['count']} steps from the window's start to the run's end, median {steps['step_s_median']:.2f} s a step, "
                     f"median gap between steps {steps['gap_s_median'] or 0:.2f} s, first step began at "
                     f"{steps['first_step_starts_s']:.1f} s")
    return "\n".join(lines)


def machine_split(result: dict) -> dict[str, float]:
    """The machine's core-seconds in the window: each actor, the other processes of the run, the rest, idle."""
    out = {role: p["cpu_s"] for role, p in result["processes"].items()}
    out["Ray system processes (raylet, GCS, agents, idle workers)"] = sum(
        v for k, v in result["other_processes_cpu_s"].items() if "py-spy" not in k)
    out["py-spy (the profiler)"] = sum(v for k, v in result["other_processes_cpu_s"].items() if "py-spy" in k)
    out["other processes on the machine"] = max(0.0, result["machine"]["unaccounted_busy_s"])
    out["idle"] = result["machine"]["idle_core_s"]
    return out


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    procs = result["processes"]
    roles = [r for r in procs if procs[r]["cpu_s"] > 0.5 or procs[r]["wall_by_category"]]
    categories = sorted({c for r in roles for kind in ("cpu_by_category", "wall_by_category")
                         for c in procs[r][kind]})
    colours = {c: plt.get_cmap("tab20")(i % 20) if i < 20 else plt.get_cmap("tab20b")(i % 20)
               for i, c in enumerate(categories)}
    fig, axes = plt.subplots(1, 3, figsize=(19, 8.5), gridspec_kw={"width_ratios": [1.1, 3, 3]})
    bottom, machine = 0.0, machine_split(result)
    for i, (name, s) in enumerate(machine.items()):
        colour = "#dddddd" if name == "idle" else plt.get_cmap("Set2")(i % 8)
        axes[0].bar(0, s, bottom=bottom, color=colour, edgecolor="white")
        if s >= 2:
            axes[0].text(0, bottom + s / 2, f"{name[:28]} {s:.0f}", ha="center", va="center", fontsize=7)
        bottom += s
    axes[0].set_xticks([0], [f"{result.get('cores')} cores x {result['window_s']} s"])
    axes[0].set_title("the machine's core-seconds", fontsize=10)
    for ax, kind, title in ((axes[1], "cpu_by_category", "CPU seconds per process (all threads and children)"),
                            (axes[2], "wall_by_category", "wall seconds of each process's work thread")):
        for i, role in enumerate(roles):
            bottom = 0.0
            for c, s in procs[role][kind].items():
                ax.bar(i, s, bottom=bottom, color=colours[c], edgecolor="white", linewidth=0.3)
                bottom += s
        ax.set_xticks(range(len(roles)), roles, rotation=20)
        ax.set_title(title, fontsize=10)
    for ax in axes:
        ax.set_ylabel("seconds")
    axes[1].axhline(result["window_s"], color="black", lw=0.8, ls="--")
    axes[1].text(len(roles) - 0.5, result["window_s"], " one core", va="bottom", ha="right", fontsize=8)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[c]) for c in categories]
    fig.legend(handles, categories, loc="lower center", ncol=3, fontsize=7, frameon=False)
    fig.suptitle(f"Where the cores go: {result['window_s']} s of training, {result.get('cores')} cores "
                 f"({result['machine']['busy_core_s']} busy core-seconds)", fontsize=11)
    fig.tight_layout(rect=(0, 0.24, 1, 0.95))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
