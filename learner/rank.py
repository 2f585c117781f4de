"""One learner rank: a Ray actor that owns a DeepSpeed engine and takes RLTF optimizer steps.

Ranks form a `torch.distributed` group (gloo on CPU, NCCL on GPU; `models.device`) whose rendezvous address
rank 0 chooses. The controller drives them in lock step: every rank gets its shard of the RL batch for each step;
each rank draws its own supervised batches from the reference solutions. Rank 0 publishes weights and writes the
user-facing `save_pretrained` copy; every rank writes its part of the DeepSpeed checkpoint.
"""
from __future__ import annotations

import logging
import random
import socket
import time
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch

from configs.schema import Config
from learner.batching import make_batch
from learner.checkpoints import Checkpoint, CheckpointWriteError
from learner.engine import init_engine, init_process_group
from learner.loss import rl_loss, supervised_loss
from rewards.trajectory import Trajectory
from tasks.problem import Problem

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return s.getsockname()[1]


@dataclass
class SupervisedExample:
    """A reference solution for the supervised micro-steps and the warm start."""

    problem_id: str
    prompt_ids: list[int]
    program_ids: list[int]


def supervised_examples(problems: Sequence[Problem], tokenizer, cfg: Config) -> list[SupervisedExample]:
    """Reference solutions the run may learn from: problems whose references are not withheld."""
    from models.encoding import encode_program, encode_prompt

    out = []
    for problem in problems:
        if not problem.trainable_reference:
            continue
        prompt_ids = encode_prompt(tokenizer, problem.prompt, cfg.model.max_prompt_tokens)
        for solution in problem.solutions[:1]:
            completion = solution[len(problem.program_prefix):] if solution.startswith(problem.program_prefix) else solution
            program_ids = encode_program(tokenizer, completion, cfg.model.max_new_tokens)
            out.append(SupervisedExample(problem.problem_id, prompt_ids, program_ids))
    return out


class LearnerRank:
    def __init__(self, cfg: Config, rank: int, world_size: int) -> None:
        self.cfg, self.rank, self.world_size = cfg, rank, world_size
        self.engine = None
        self.policy = None
        self.examples: list[SupervisedExample] = []
        self.rng = random.Random(cfg.run.seed * 1000 + rank)
        self.step = 0

    # --- set-up -------------------------------------------------------------------------------------------
    def rendezvous_address(self) -> tuple[str, int]:
        import ray

        return ray.util.get_node_ip_address(), free_port()

    def setup(self, master_addr: str, master_port: int, problems: list[Problem]) -> dict[str, Any]:
        from models import load_policy

        torch.manual_seed(self.cfg.run.seed)
        init_process_group(self.rank, self.world_size, master_addr, master_port)
        self.policy = load_policy(self.cfg.model.name_or_path, kind=self.cfg.model.kind)
        self.policy.model.train()
        self.engine = init_engine(self.policy.model, self.cfg.learner)
        self.examples = supervised_examples(problems, self.policy.tokenizer, self.cfg)
        n_params = sum(p.numel() for p in self.policy.model.parameters())
        return {"rank": self.rank, "parameters": n_params, "supervised_examples": len(self.examples)}

    # --- training -----------------------------------------------------------------------------------------
    def _global_tokens(self, local: int) -> int:
        import torch.distributed as dist

        if self.world_size == 1:
            return local
        count = torch.tensor([local], dtype=torch.long)
        dist.all_reduce(count)
        return int(count.item())

    def micro_step(self, loss_fn, batch, **kw) -> dict[str, float]:
        """One micro-step: ``loss_fn`` on ``batch``, backward, and DeepSpeed's step (an optimizer step only at the
        gradient-accumulation boundary)."""
        batch = batch.to(self.engine.device)
        out = loss_fn(self.engine, batch, global_tokens=self._global_tokens(batch.num_tokens),
                      world_size=self.world_size, **kw)
        self.engine.backward(out.loss)
        self.engine.step()
        return out.metrics

    def _supervised_batch(self):
        if not self.examples:
            raise RuntimeError("supervised micro-step requested, but no problem has a usable reference solution")
        picks = [self.rng.choice(self.examples) for _ in range(self.cfg.learner.supervised_batch_size)]
        tok = self.policy.tokenizer
        return make_batch([e.prompt_ids for e in picks], [e.program_ids for e in picks],
                          is_seq2seq=self.policy.is_seq2seq, pad_id=tok.pad_token_id)

    def rl_batch(self, trajectories: Sequence[Trajectory]):
        tok = self.policy.tokenizer
        return make_batch(
            [t.prompt_ids for t in trajectories], [t.program_ids for t in trajectories],
            is_seq2seq=self.policy.is_seq2seq, pad_id=tok.pad_token_id,
            per_token={"returns": [t.returns for t in trajectories],
                       "behaviour_logprobs": [t.behaviour_logprobs for t in trajectories]},
        )

    def train_step(self, rl_shard: Optional[list[Trajectory]] = None) -> dict[str, Any]:
        """One optimizer step. With ``rl_shard`` None it is a warm-start step (supervised micro-steps only);
        otherwise the shard is split into ``grad_accum`` RL micro-steps, each followed by ``supervised_ratio``
        supervised ones."""
        cfg = self.cfg.learner
        t0 = time.perf_counter()
        metrics: dict[str, list[float]] = {}
        gas = self.engine.gradient_accumulation_steps()

        def record(m: dict[str, float]) -> None:
            for k, v in m.items():
                metrics.setdefault(k, []).append(v)

        if rl_shard is None:
            for _ in range(gas):
                record(self.micro_step(supervised_loss, self._supervised_batch()))
        else:
            chunks = [rl_shard[i::cfg.grad_accum] for i in range(cfg.grad_accum)]
            for chunk in chunks:
                record(self.micro_step(rl_loss, self.rl_batch(chunk), importance_clip=cfg.importance_clip))
                for _ in range(cfg.supervised_ratio):
                    record(self.micro_step(supervised_loss, self._supervised_batch()))
        self.step += 1
        out = {k: sum(v) / len(v) for k, v in metrics.items()}
        out.update(step=self.step, lr=self.engine.get_lr()[0], step_s=time.perf_counter() - t0)
        return out

    # --- weights and checkpoints -------------------------------------------------------------------------
    def publish(self, sync: Any, version: int) -> dict[str, Any]:
        """Send the current weights as ``version`` through the run's weight-sync strategy (rank 0 only)."""
        t0 = time.perf_counter()
        info = sync.send(version, self.engine.module.state_dict(), step=self.step)
        return {"version": info.version, "pushed_at": info.pushed_at, "publish_s": time.perf_counter() - t0}

    def parameters_snapshot(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().clone() for k, v in self.engine.module.state_dict().items()}

    def save_checkpoint(self, checkpoint: Checkpoint, client_state: dict[str, Any]) -> list[str]:
        """Write this rank's part of ``checkpoint`` (rank 0 also the `save_pretrained` copy) straight to the run's
        storage from this node. Returns the files written, relative to the checkpoint, for the commit to check."""
        written: list[str] = []
        try:
            with checkpoint.writable("deepspeed") as local:
                self.engine.save_checkpoint(str(local), tag="state", client_state={**client_state, "step": self.step})
                written += [f"deepspeed/{p.relative_to(local)}" for p in local.rglob("*") if p.is_file()]
            if self.rank == 0:
                with checkpoint.writable("hf") as local:
                    self.engine.module.save_pretrained(local)
                    self.policy.tokenizer.save_pretrained(local)
                    written += [f"hf/{p.relative_to(local)}" for p in local.rglob("*") if p.is_file()]
        except (OSError, RuntimeError) as exc:  # torch.save reports a full disk as a RuntimeError
            raise CheckpointWriteError(f"learner rank {self.rank}: writing checkpoint {checkpoint.location} "
                                       f"failed: {exc}") from None
        return written

    def load_checkpoint(self, checkpoint: Checkpoint) -> dict[str, Any]:
        with checkpoint.readable("deepspeed") as local:
            _, client_state = self.engine.load_checkpoint(str(local), tag="state")
        if client_state is None:
            raise FileNotFoundError(f"no DeepSpeed checkpoint under {checkpoint.location}/deepspeed")
        self.step = int(client_state["step"])
        return client_state
