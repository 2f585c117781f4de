"""Chaos soak: a training run on the local cluster while a random sampler, sandbox worker, the buffer actor or a
learner rank is SIGKILLed every 30-60 s, against a fault-free run of the same length.

    python bench/chaos.py [--minutes 10] [--every 30 60] [--seed 0] [--set section.key=value ...]
    python bench/chaos.py --quick       # 2-minute runs, a kill every 15-25 s: the code paths, not the figures

Both runs are `launch.py train --config smoke` (tiny GPT-2, the generated problems; 2 samplers and 2 sandbox workers
so that "a random sampler" means something) with `run.max_wall_s` the length, each on its own embedded Ray, the
fault-free one first. During the chaos run this process joins its cluster as a second driver; every 30-60 s it
picks a role at random, finds that role's live actors by name (`<run>:<role>-n`), and SIGKILLs one's process.
It then watches for the recovery:

    sampler   Ray restarts the actor (max_restarts) and the fleet its loop: it answers from a new process, on weights
    sandbox   the pool replaces the worker at its next failed batch: all workers answer again, none the killed one
    buffer    Ray restarts it from snapshot + log: it answers from a new process, having accepted >= before the kill
    learner   the training core restarts the learner group from its last checkpoint (`learner_restart` in the log)

Printed, and written to bench/results/chaos.json: kills and recoveries by role with recovery times, learner steps of
both runs and their ratio (RL steps, net of those redone after learner restarts), and the buffer's accounting at
the end of the chaos run: accepted = trained on + unread, held + evicted = accepted, nothing evicted unread, and no
acknowledged trajectory missing after any buffer restart.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import median
from typing import Any, Optional

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ["RAY_AUTH_MODE"] = "token"  # joining the run's cluster sends its token only if set before Ray loads

ROLES = ("sampler", "sandbox", "buffer", "learner")
RUN_ARGS = ["--config", "smoke", "--sampler.num_samplers=2", "--sandbox.num_workers=2", "--learner.warm_start_steps=20",
            "--learner.total_steps=1000000", "--learner.checkpoint_every=10", "--learner.max_restarts=1000",
            "--run.log_every_s=5"]


def log(message: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", flush=True)


def records(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def start_run(name: str, seconds: float, out: Path, extra: list[str]) -> tuple[subprocess.Popen, Path]:
    args = [sys.executable, str(REPO / "launch.py"), "train", *RUN_ARGS, f"--run.name={name}",
            f"--run.output_dir={out}", f"--run.max_wall_s={seconds}", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=open(out / f"{name}.log", "w"), stderr=subprocess.STDOUT)
    return proc, out / name


def wait_for_rl(proc: subprocess.Popen, run_dir: Path) -> float:
    """When the run's first RL step was logged."""
    while proc.poll() is None:
        steps = [r for r in records(run_dir) if r.get("kind") == "learner"]
        if steps:
            return steps[0]["time"]
        time.sleep(2)
    raise SystemExit(f"the run {run_dir.name} ended before its RL phase (exit {proc.returncode}); see its .log")


@dataclass
class Kill:
    role: str
    name: str
    pid: int
    at: float
    accepted_before: int = 0  # buffer kills: what it had acknowledged just before
    recovered_s: Optional[float] = None
    lost: int = 0  # buffer kills: acknowledged trajectories missing after the restart
    detail: str = ""


class Chaos:
    """The killer: a second driver on the chaos run's cluster."""

    def __init__(self, run: str, run_dir: Path, rng: random.Random) -> None:
        import ray

        self.ray, self.run, self.run_dir, self.rng = ray, run, run_dir, rng
        address = (run_dir / "ray_address").read_text().strip()
        ray.init(address=address, namespace="rltf", log_to_driver=False, logging_level="ERROR")
        self.kills: list[Kill] = []
        self.sandbox_workers = 2

    def actors(self, role: str) -> list[str]:
        pattern = re.compile(rf"{re.escape(self.run)}:{role}(-|$)")
        return sorted(n for n in self.ray.util.list_named_actors() if pattern.match(n))

    def pid(self, name: str, timeout: float = 30) -> Optional[int]:
        """The process of a live actor, or None if it does not answer (dead, restarting)."""
        try:
            handle = self.ray.get_actor(name)
            return self.ray.get(handle.__ray_call__.remote(lambda self: os.getpid()), timeout=timeout)
        except Exception:  # noqa: BLE001 - gone or not answering: not a target now
            return None

    def kill_one(self) -> Optional[Kill]:
        for role in self.rng.sample(ROLES, len(ROLES)):  # a random role; the next if none of it is alive now
            names = self.actors(role)
            self.rng.shuffle(names)
            for name in names:
                accepted = self.buffer_accepted() if role == "buffer" else 0
                pid = self.pid(name)
                if pid is None:
                    continue
                os.kill(pid, signal.SIGKILL)
                kill = Kill(role, name.split(":", 1)[1], pid, time.time(), accepted)
                self.kills.append(kill)
                return kill
        return None

    def buffer_accepted(self, timeout: float = 5) -> Optional[int]:
        try:
            return self.ray.get(self.ray.get_actor(f"{self.run}:buffer").stats.remote(), timeout=timeout).accepted
        except Exception:  # noqa: BLE001
            return None

    def check(self, kill: Kill) -> bool:
        """Whether the killed role has recovered (and, for the buffer, what it lost)."""
        name = f"{self.run}:{kill.name}"
        if kill.role == "sampler":
            try:
                status = self.ray.get(self.ray.get_actor(name).status.remote(), timeout=5)
            except Exception:  # noqa: BLE001
                return False
            return status.pid != kill.pid and status.policy_version > 0
        if kill.role == "sandbox":
            pids = [self.pid(n, timeout=5) for n in self.actors("sandbox")]
            live = [p for p in pids if p is not None]
            return len(live) >= self.sandbox_workers and kill.pid not in live
        if kill.role == "buffer":
            pid, accepted = self.pid(name, timeout=5), self.buffer_accepted()
            if pid is None or pid == kill.pid or accepted is None:
                return False
            kill.lost = max(0, kill.accepted_before - accepted)
            return True
        restarts = [r for r in records(self.run_dir) if r.get("event") == "learner_restart" and r["time"] > kill.at]
        if restarts:
            kill.detail = f"died at step {restarts[0]['died_at_step']}, resumed from {restarts[0]['resumed_from_step']}"
        return bool(restarts)

    def soak(self, proc: subprocess.Popen, until: float, every: tuple[float, float]) -> None:
        pending: list[Kill] = []
        next_kill = time.time() + self.rng.uniform(*every)
        while proc.poll() is None:
            now = time.time()
            for kill in list(pending):
                if self.check(kill):
                    kill.recovered_s = round(time.time() - kill.at, 1)
                    pending.remove(kill)
                    log(f"{kill.name} recovered after {kill.recovered_s:.1f} s {kill.detail}".rstrip())
            if now >= next_kill and now < until:
                kill = self.kill_one()
                if kill is not None:
                    pending.append(kill)
                    log(f"killed {kill.name} (pid {kill.pid})")
                next_kill = now + self.rng.uniform(*every)
            time.sleep(1.0)
        self.ray.shutdown()


def steps_of(run_dir: Path) -> dict[str, Any]:
    recs = records(run_dir)
    rl = [r for r in recs if r.get("kind") == "learner"]
    restarts = [r for r in recs if r.get("event") == "learner_restart"]
    redone = sum(r["died_at_step"] - r["resumed_from_step"] for r in restarts)
    return {"final_step": rl[-1]["step"] if rl else 0, "rl_steps_net": (rl[-1]["step"] - rl[0]["step"] + 1) if rl else 0,
            "rl_steps_taken": len(rl), "steps_redone": redone, "learner_restarts": len(restarts)}


def buffer_accounting(run_dir: Path, kills: list[Kill], batch: int) -> dict[str, Any]:
    recs = records(run_dir)
    closed = [r for r in recs if r.get("event") == "buffer_closed"][-1]
    accepted, unread = closed["buffer_accepted"], closed["buffer_unread"]
    evicted, evicted_unread = closed["buffer_evicted"], closed["buffer_evicted_unread"]
    return {
        "accepted": accepted, "trained_on": accepted - unread - evicted_unread, "unread_at_end": unread,
        "held": closed["buffer_size"], "evicted": evicted, "evicted_unread": evicted_unread,
        "trajectory_slots_trained": len([r for r in recs if r.get("kind") == "learner"]) * batch,
        "consecutive": closed["buffer_seq_sum"] == sum(range(evicted, accepted))
                       and closed["buffer_size"] == accepted - evicted,
        "lost_at_buffer_restarts": sum(k.lost for k in kills if k.role == "buffer"),
        "buffer_restarts": len([k for k in kills if k.role == "buffer"]),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="training time of each run [10]")
    parser.add_argument("--every", type=float, nargs=2, default=(30.0, 60.0), metavar=("MIN_S", "MAX_S"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="2-minute runs, a kill every 15-25 s")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="config override")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "chaos.json"))
    parser.add_argument("--work-dir", default="/tmp/rltf-chaos")
    args = parser.parse_args()
    if args.quick:
        args.minutes, args.every = 2.0, (15.0, 25.0)
    seconds, extra = args.minutes * 60, [f"--{kv}" for kv in args.set]
    work = Path(args.work_dir) / time.strftime("%Y%m%d-%H%M%S")
    work.mkdir(parents=True)
    load_before = os.getloadavg()

    log(f"fault-free run: {args.minutes:g} min of training")
    proc, calm_dir = start_run("calm", seconds, work, extra)
    if proc.wait() != 0:
        raise SystemExit(f"the fault-free run failed; see {work / 'calm.log'}")

    log(f"chaos run: {args.minutes:g} min of training, a kill every {args.every[0]:g}-{args.every[1]:g} s")
    proc, chaos_dir = start_run("chaos", seconds, work, extra)
    rl_started = wait_for_rl(proc, chaos_dir)
    setup = [r for r in records(chaos_dir) if r.get("kind") == "setup"][0]["time"]
    chaos = Chaos("chaos", chaos_dir, random.Random(args.seed))
    chaos.soak(proc, until=setup + seconds - 45, every=tuple(args.every))  # no kill the run cannot recover from
    if proc.returncode != 0:
        raise SystemExit(f"the chaos run failed (exit {proc.returncode}); see {work / 'chaos.log'}")

    from configs import load_config

    learner = load_config("smoke", [*RUN_ARGS[2:], *extra]).learner
    result = {
        "minutes": args.minutes, "every_s": list(args.every), "seed": args.seed, "started_rl_s": round(rl_started - setup, 1),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "kills": [asdict(k) for k in chaos.kills],
        "fault_free": steps_of(calm_dir), "chaos": steps_of(chaos_dir),
        "buffer": buffer_accounting(chaos_dir, chaos.kills, learner.batch_size * learner.grad_accum * learner.num_ranks),
    }
    result["step_ratio"] = round(result["chaos"]["rl_steps_net"] / max(result["fault_free"]["rl_steps_net"], 1), 3)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(report(result))
    log(f"wrote {args.out}; runs in {work}")
    return 0


def report(r: dict) -> str:
    kills = [Kill(**k) for k in r["kills"]]
    lines = [f"chaos soak: {r['minutes']:g} min of training per run, a kill every {r['every_s'][0]:g}-"
             f"{r['every_s'][1]:g} s (load average {r['load_average_before'][0]:.1f} -> {r['load_average_after'][0]:.1f})",
             "role      kills  recovered  recovery s (median / max)"]
    for role in ROLES:
        mine = [k for k in kills if k.role == role]
        times = [k.recovered_s for k in mine if k.recovered_s is not None]
        span = f"{median(times):.1f} / {max(times):.1f}" if times else "-"
        lines.append(f"{role:<9} {len(mine):>5}  {len(times):>9}  {span}")
    calm, chaos, b = r["fault_free"], r["chaos"], r["buffer"]
    lines += [
        f"learner RL steps: fault-free {calm['rl_steps_net']}, chaos {chaos['rl_steps_net']} (ratio {r['step_ratio']:.2f});"
        f" {chaos['learner_restarts']} learner restarts redid {chaos['steps_redone']} steps",
        f"buffer: accepted {b['accepted']} = trained on {b['trained_on']} + unread {b['unread_at_end']}"
        f" + evicted unread {b['evicted_unread']}; held {b['held']} + evicted {b['evicted']} = accepted: "
        f"{'yes' if b['consecutive'] else 'NO'} (sequence numbers consecutive)",
        f"lost: {b['lost_at_buffer_restarts']} acknowledged trajectories across {b['buffer_restarts']} buffer restarts,"
        f" {b['evicted_unread']} evicted before the learner read them",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
