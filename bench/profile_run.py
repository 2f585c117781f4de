"""Profile one training run of the learning experiment: where each second of each core goes.

    python bench/profile_run.py --start-model runs/learning/warm-start/checkpoints/step_000300/hf [--arm coarse]

One run of a `bench/learning.py` arm (configs/learning.yaml, the same overrides), on an embedded Ray, with, for
the run's training window (``--budget-s`` seconds from the moment the RL phase starts):
- `py-spy` attached to every actor of the run (controller, learner, sampler, sandbox workers, buffer, weight
  store) twice: once with ``--idle`` (where each thread's wall time goes, waiting included) and once without
  (where its CPU goes). Samples are put in categories by the functions on their stacks (bench/profile_report.py).
- CPU seconds of every process of the Ray session (actors with their child processes, raylet, GCS, idle workers,
  the profilers themselves) from /proc, per thread for the actors (Ray's and gloo's native threads have names),
  and of the whole machine from /proc/stat, so nothing busy goes unaccounted.

Writes bench/results/profile.json (every number), bench/results/profile.png (CPU and wall seconds per process by
category) and prints the table. py-spy samples without pausing the processes (``--nonblocking``); its own CPU
is measured and reported as a row of its own.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from bench.learning import checkpoints, train  # noqa: E402
from bench.learning_arms import ARMS  # noqa: E402

ROLES = ("controller", "learner-0", "sampler-0", "sandbox-0", "sandbox-1", "buffer", "weights")
QUIET_ROLES = ("controller", "buffer", "weights")
TICK = os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    print(f"[profile {time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- CPU accounting from /proc ----------------------------------------------------------------------------------
def _stat_fields(path: str) -> list[str]:
    with open(path) as f:
        text = f.read()
    return text[text.rindex(")") + 2:].split()  # the fields after "pid (comm)"


def process_cpu(pid: int) -> dict:
    """CPU seconds of a process: its own (user+system) and its reaped children's."""
    fields = _stat_fields(f"/proc/{pid}/stat")
    own = (int(fields[11]) + int(fields[12])) / TICK
    children = (int(fields[13]) + int(fields[14])) / TICK
    return {"own": own, "children": children}


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds per thread, keyed 'name/tid' (thread names: Ray's core-worker threads, gloo, OpenMP...)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            fields = _stat_fields(f"/proc/{pid}/task/{tid}/stat")
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f.read().strip()
        except OSError:
            continue
        out[f"{name}/{tid}"] = (int(fields[11]) + int(fields[12])) / TICK
    return out


def machine_cpu() -> dict[str, float]:
    """Busy and idle core-seconds of the whole machine since boot (/proc/stat)."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return {"busy": (sum(values[:8]) - idle) / TICK, "idle": idle / TICK}


def descendants(pid: int) -> list:
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def snapshot(actor_pids: dict[str, int], profiler_pids: set[int]) -> dict:
    """CPU of every process under this driver, grouped: each actor with its process tree, then the rest by name."""
    import psutil

    taken, groups = {}, {}
    for role, pid in actor_pids.items():
        tree = [pid] + [p.pid for p in descendants(pid)]
        total = 0.0
        for member in tree:
            try:
                cpu = process_cpu(member)
            except OSError:
                continue
            total += cpu["own"] + cpu["children"]
            taken[member] = True
        try:
            threads = thread_cpu(pid)
        except OSError:
            threads = {}
        groups[role] = {"cpu_s": total, "threads": threads, "tree": len(tree)}
    for proc in [psutil.Process(os.getpid()), *descendants(os.getpid())]:
        if proc.pid in taken:
            continue
        try:
            name = "py-spy (the profiler)" if proc.pid in profiler_pids else (
                "driver (this script)" if proc.pid == os.getpid() else proc.name())
            cpu = process_cpu(proc.pid)
        except (OSError, psutil.Error):
            continue
        group = groups.setdefault(f"other: {name}", {"cpu_s": 0.0, "processes": 0})
        group["cpu_s"] += cpu["own"] + (0.0 if proc.pid == os.getpid() else cpu["children"])
        group["processes"] += 1
    return {"time": time.time(), "machine": machine_cpu(), "groups": groups}


def cpu_deltas(before: dict, after: dict) -> dict:
    out = {}
    for name, end in after["groups"].items():
        start = before["groups"].get(name, {"cpu_s": 0.0, "threads": {}})
        row = {"cpu_s": end["cpu_s"] - start["cpu_s"]}
        if "threads" in end:
            row["threads"] = {t: s - start.get("threads", {}).get(t, 0.0) for t, s in end["threads"].items()}
        out[name] = row
    machine = {k: after["machine"][k] - before["machine"][k] for k in ("busy", "idle")}
    return {"window_s": after["time"] - before["time"], "machine": machine, "groups": out}


# --- py-spy ----------------------------------------------------------------------------------------------------
class Spies:
    """Two py-spy recorders per actor process (wall: --idle; cpu: active samples only), raw collapsed stacks."""

    def __init__(self, out_dir: Path, rate: int) -> None:
        self.out_dir, self.rate = out_dir, rate
        self.procs: dict[str, subprocess.Popen] = {}
        self.files: dict[str, dict[str, Path]] = {}

    def attach(self, role: str, pid: int, duration_s: float) -> None:
        self.files[role] = {}
        # The quiet actors (well under 1% of a core each) get no CPU recorder: every recorder costs CPU too.
        kinds = (("wall", ["--idle"]),) if role in QUIET_ROLES else (("wall", ["--idle"]), ("cpu", []))
        for kind, extra in kinds:
            path = self.out_dir / f"{role}.{kind}.txt"
            cmd = [py_spy(), "record", "--pid", str(pid), "--rate", str(self.rate), "--duration",
                   str(max(1, round(duration_s))), "--format", "raw", "--threads", "--nonblocking",
                   "--output", str(path), *extra]
            self.procs[f"{role}.{kind}"] = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            self.files[role][kind] = path

    def pids(self) -> set[int]:
        return {p.pid for p in self.procs.values()}

    def wait(self, timeout_s: float = 60.0) -> dict[str, str]:
        """Wait for every recorder to write its file; returns errors by recorder."""
        errors, deadline = {}, time.time() + timeout_s
        for key, proc in self.procs.items():
            try:
                proc.wait(timeout=max(1.0, deadline - time.time()))
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGINT)  # py-spy writes what it has on Ctrl-C
                proc.wait(timeout=30)
            if proc.returncode:
                errors[key] = proc.stderr.read().decode(errors="replace")[-500:]
        return errors


def py_spy() -> str:
    """The py-spy beside this interpreter (a venv's bin/, even when the venv is not activated), else on PATH."""
    import shutil

    here = Path(sys.executable).parent / "py-spy"
    found = str(here) if here.exists() else shutil.which("py-spy")
    if found is None:
        raise SystemExit("py-spy is not installed (it comes with ray[default]; or pip install py-spy)")
    return found


def actor_pid(handle) -> int:
    import ray

    return ray.get(handle.__ray_call__.remote(lambda self: os.getpid()), timeout=60)


class Watcher(threading.Thread):
    """Waits for the run's RL phase, then profiles every actor for ``budget_s`` seconds."""

    def __init__(self, run_name: str, namespace: str, budget_s: float, spies: Spies) -> None:
        super().__init__(daemon=True)
        self.run_name, self.ns, self.budget_s, self.spies = run_name, namespace, budget_s, spies
        self.pids: dict[str, int] = {}
        self.before = self.after = None
        self.t0 = 0.0
        self.error: BaseException | None = None

    def _find(self) -> None:
        import ray

        for role in ROLES:
            if role in self.pids:
                continue
            try:
                handle = ray.get_actor(f"{self.run_name}:{role}", namespace=self.ns)
                self.pids[role] = actor_pid(handle)
            except (ValueError, ray.exceptions.RayError):
                continue
            if self.t0:
                self.spies.attach(role, self.pids[role], self.t0 + self.budget_s - time.time())

    def run(self) -> None:
        import ray

        try:
            while True:  # the controller exists first; its phase says when training starts
                try:
                    controller = ray.get_actor(f"{self.run_name}:controller", namespace=self.ns)
                    if ray.get(controller.progress.remote(), timeout=10).phase in ("rl", "supervised"):
                        break
                except (ValueError, ray.exceptions.RayError):
                    pass
                time.sleep(0.2)
            self._find()
            # The window: from now (the RL phase has just begun) to a second before the run's budget ends, so the
            # final checkpoint, the plots and the teardown stay out of it.
            train_started = ray.get(controller.__ray_call__.remote(lambda self: self.train_started), timeout=60)
            self.t0 = time.time()
            self.budget_s = train_started + self.budget_s - 1.0 - self.t0
            self.before = snapshot(self.pids, set())
            for role, pid in self.pids.items():
                self.spies.attach(role, pid, self.budget_s)
            log(f"profiling {', '.join(self.pids)} for {self.budget_s:.1f} s "
                f"(training began {self.t0 - train_started:.1f} s ago)")
            while time.time() < self.t0 + self.budget_s - 0.5:
                self._find()  # the sampler starts a moment after the RL phase does
                time.sleep(0.5)
            time.sleep(max(0.0, self.t0 + self.budget_s - time.time()))
            self.after = snapshot(self.pids, self.spies.pids())
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            self.error = exc


def batch_shapes(run_dir: Path, start_model: str, batch: int = 32) -> dict:
    """Token counts of the learner's micro-batches: RL ones from the final buffer snapshot, supervised ones from
    the references (padded width = the longest prompt + program of a random batch, as learner/batching pads)."""
    import pickle
    import random

    from configs import load_config
    from learner.rank import supervised_examples
    from models import load_policy
    from tasks import load_problems

    found = checkpoints(run_dir)
    with open(found[-1][1].parent / "buffer.snapshot.pkl", "rb") as f:
        rl = [(len(e.trajectory.prompt_ids), len(e.trajectory.program_ids)) for e in pickle.load(f).entries]
    cfg = load_config("learning", [])
    tokenizer = load_policy(start_model).tokenizer
    sup = [(len(e.prompt_ids), len(e.program_ids)) for e in supervised_examples(
        load_problems("synthetic", split="train"), tokenizer, cfg)]
    rng, out = random.Random(0), {}
    for name, rows in (("rl", rl), ("supervised", sup)):
        widths = [max(p + w for p, w in rng.choices(rows, k=batch)) for _ in range(200)]
        out[name] = {"sequences": batch, "mean_prompt_tokens": sum(p for p, _ in rows) / len(rows),
                     "mean_program_tokens": sum(w for _, w in rows) / len(rows),
                     "mean_padded_width": sum(widths) / len(widths)}
    return out


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--start-model", default=None,
                        help="warm-start checkpoint (hf/ directory); default: run a warm start first")
    parser.add_argument("--warm-start-steps", type=int, default=300)
    parser.add_argument("--arm", default="coarse", choices=sorted(ARMS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget-s", type=float, default=75.0, help="seconds of training profiled [75]")
    parser.add_argument("--rate", type=int, default=10, help="py-spy samples per second per recorder [10]")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="an extra config override, e.g. --set sampler.num_cpus=2 (repeatable)")
    parser.add_argument("--out-dir", default="runs/profile", help="run directory and raw py-spy files go here")
    parser.add_argument("--results", default="bench/results/profile.json")
    parser.add_argument("--png", default="bench/results/profile.png")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import ray

    from bench.profile_report import analyse, plot, table
    from cluster.connect import init_ray

    out_dir = Path(args.out_dir).resolve() / time.strftime("%Y%m%d-%H%M%S")
    out_dir.mkdir(parents=True)
    init_ray(None, "rltf-profile", num_cpus=6)
    try:
        start_model = args.start_model
        if not start_model:
            log(f"warm start: {args.warm_start_steps} supervised steps")
            warm = train("warm-start", [f"--learner.warm_start_steps={args.warm_start_steps}",
                                        "--learner.total_steps=0", "--learner.num_cpus=2"], out_dir)
            start_model = warm["model_dir"]
        # As bench/learning.py runs an arm (one checkpoint at the end only: a mid-run save is not what we measure).
        name = f"profile-{args.arm.replace('+', '-')}"
        overrides = [f"--model.name_or_path={start_model}", "--learner.warm_start_steps=0",
                     f"--run.seed={args.seed}", f"--run.max_wall_s={args.budget_s}", "--run.namespace=rltf-profile",
                     *ARMS[args.arm][1], *[f"--{s.removeprefix('--')}" for s in args.set]]
        spies = Spies(out_dir, args.rate)
        watcher = Watcher(name, "rltf-profile", args.budget_s, spies)
        watcher.start()
        uptime_before = os.getloadavg()
        summary = train(name, overrides, out_dir)
        watcher.join(timeout=args.budget_s + 120)
        if watcher.error is not None:
            raise watcher.error
        errors = spies.wait()
    finally:
        ray.shutdown()
    records = [json.loads(line) for line in (out_dir / name / "metrics.jsonl").read_text().splitlines()]
    result = analyse(spies.files, cpu_deltas(watcher.before, watcher.after), records, watcher.t0,
                     watcher.budget_s, args.rate)
    result.update(settings={**vars(args), "start_model": str(start_model), "overrides": overrides},
                  run={k: summary.get(k) for k in ("step", "samples", "pass_rate", "mean_reward", "run_wall_s",
                                                   "accepted", "run_dir")},
                  load_avg_before=uptime_before, load_avg_after=os.getloadavg(), py_spy_errors=errors,
                  cores=os.cpu_count(), batch_shapes=batch_shapes(Path(summary["run_dir"]), start_model))
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text(json.dumps(result, indent=1, default=str))
    plot(result, Path(args.png))
    print(table(result))
    log(f"wrote {args.results} and {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
