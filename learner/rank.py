"""One learner rank: a Ray actor that owns a DeepSpeed engine and takes RLTF optimizer steps.

Each rank runs on the GPU Ray assigned it (`take_gpu`, before CUDA is touched), loads float32 weights that
DeepSpeed keeps as master weights under its fp16/bf16 compute copy, and puts every tensor of a collective on the
engine's device. Ranks form a `torch.distributed` group (gloo on CPU, NCCL on GPU; `models.device`) whose
rendezvous address rank 0 chooses. The controller drives them in lock step: every rank gets its shard of the RL
batch for each step; each rank draws its own supervised batches from the reference solutions. Rank 0 publishes
weights and writes the user-facing `save_pretrained` copy; every rank writes its part of the DeepSpeed checkpoint.
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
from learner.engine import check_master_weights, enable_checkpointing, init_engine, init_process_group
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
        self.local_rank, self.local_world_size = 0, 1

    # --- set-up -------------------------------------------------------------------------------------------
    def where(self) -> tuple[str, list[str]]:
        """(node id, the GPU ids Ray assigned this rank)."""
        import ray

        from models.device import ray_gpu_ids

        return ray.get_runtime_context().get_node_id(), ray_gpu_ids()

    def take_gpu(self, visible: list[str]) -> dict[str, Any]:
        """See ``visible`` (the group's GPUs on this node; [] without GPUs) and take this rank's own among them:
        its index there is its local rank and its device. Runs before anything initialises CUDA here."""
        from models.device import gpu_assignment, share_visible_gpus, torch_device

        if visible:
            share_visible_gpus(visible)
        assigned = gpu_assignment()
        if assigned is not None:
            self.local_rank, self.local_world_size = assigned.local_rank, len(visible)
        node, gpu_ids = self.where()
        return {"rank": self.rank, "node": node, "gpu_ids": gpu_ids, "visible": visible,
                "local_rank": self.local_rank, "assigned_device": assigned.device if assigned else "cpu",
                "device": torch_device()}

    def rendezvous_address(self) -> tuple[str, int]:
        import ray

        return ray.util.get_node_ip_address(), free_port()

    def setup(self, master_addr: str, master_port: int, problems: list[Problem]) -> dict[str, Any]:
        from models import load_policy
        from models.device import master_dtype, torch_device

        learner = self.cfg.learner
        torch.manual_seed(self.cfg.run.seed)
        device = torch_device()
        backend = init_process_group(self.rank, self.world_size, master_addr, master_port, device,
                                     self.local_rank, self.local_world_size)
        self.policy = load_policy(self.cfg.model.name_or_path, kind=self.cfg.model.kind, device=device,
                                  dtype=master_dtype())
        model = self.policy.model
        model.train()
        if learner.gradient_checkpointing:
            enable_checkpointing(model)
        self.engine = init_engine(model, learner)
        precision = check_master_weights(self.engine, learner.deepspeed_config)
        self.examples = supervised_examples(problems, self.policy.tokenizer, self.cfg)
        n_params = sum(p.numel() for p in model.parameters())
        return {"rank": self.rank, "parameters": n_params, "supervised_examples": len(self.examples),
                "device": str(self.engine.device), "backend": backend, "precision": precision,
                "gradient_checkpointing": learner.gradient_checkpointing}

    # --- training -----------------------------------------------------------------------------------------
    def _global_tokens(self, local: int) -> int:
        import torch.distributed as dist

        if self.world_size == 1:
            return local
        # On the engine's device: an NCCL group (GPUs) takes only CUDA tensors, gloo (CPU) only CPU ones.
        count = torch.tensor([local], dtype=torch.long, device=self.engine.device)
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

    def _batch(self, prompts: list, programs: list, per_token: Optional[dict] = None):
        model, tok = self.policy.model, self.policy.tokenizer
        return make_batch(prompts, programs, is_seq2seq=self.policy.is_seq2seq, pad_id=tok.pad_token_id,
                          per_token=per_token, decoder_start_id=getattr(model.config, "decoder_start_token_id", None))

    def _supervised_batch(self):
        if not self.examples:
            raise RuntimeError("supervised micro-step requested, but no problem has a usable reference solution")
        picks = [self.rng.choice(self.examples) for _ in range(self.cfg.learner.supervised_batch_size)]
        return self._batch([e.prompt_ids for e in picks], [e.program_ids for e in picks])

    def rl_batch(self, trajectories: Sequence[Trajectory]):
        return self._batch([t.prompt_ids for t in trajectories], [t.program_ids for t in trajectories],
                           {"returns": [t.returns for t in trajectories],
                            "behaviour_logprobs": [t.behaviour_logprobs for t in trajectories]})

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
