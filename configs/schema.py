"""Typed configuration: one dataclass per section of the YAML file, mirroring it key for key.

A run's whole configuration is a `Config`. `configs/__init__.py` loads it from a preset name or a YAML path and
applies `--section.key=value` overrides; everything that reads configuration reads these dataclasses, never raw
dicts. Defaults here are the library's: what a `Config()` built in code gets, what `launch.py eval` and `execute`
grade with (`SandboxConfig`), and what a preset without ``base:`` starts from. The presets set what a run uses:
`local` (the offline default, base of `smoke` and `learning`) adds a warm start, bigger batches and shorter sandbox
timeouts for the tiny model; `codet5-apps` sets the paper's values.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional


@dataclass
class RunConfig:
    name: str = "rltf"
    output_dir: str = "runs"  # the run writes to output_dir/name (a local path), unless `storage` is set
    # Where the run's outputs go (Ray Train's storage_path): a path shared by the nodes or a URI that pyarrow.fs
    # opens (s3://bucket/runs, gs://bucket/runs); the run writes to storage/name. Needed inside a Ray job, whose
    # working directory Ray deletes.
    storage: Optional[str] = None
    seed: int = 0
    namespace: str = "rltf"  # Ray namespace: named actors of a run live here
    log_every_s: float = 5.0  # progress line period
    max_wall_s: float = 0.0  # stop after this many seconds of training, counted once the actors are up (0 = none)


@dataclass
class ModelConfig:
    # A hub name (Salesforce/codet5-large-ntp-py), a local directory, or a tiny preset built on first use (tiny:gpt2).
    name_or_path: str = "tiny:gpt2"
    kind: Optional[Literal["seq2seq", "causal"]] = None  # None: decided from the model's config
    max_prompt_tokens: int = 256
    max_new_tokens: int = 96


@dataclass
class DataConfig:
    # A local path, a dataset hub name, or "synthetic" (the generated problem family).
    source: str = "synthetic"
    format: Optional[str] = None  # None: detected from the path
    split: Optional[str] = "train"
    limit: Optional[int] = None  # at most this many problems (None: all)
    eval_split: Optional[str] = "heldout"
    # A malformed record (or a repeated problem id) stops the load with an error naming it; true: it is skipped,
    # and the count and the first few reasons are logged.
    skip_invalid: bool = False


@dataclass
class SamplerConfig:
    num_samplers: int = 1
    backend: Literal["hf"] = "hf"  # the generation backend (models.backend.BACKENDS): transformers' generate
    samples_per_problem: int = 4  # N sampled programs per problem (plus one greedy decode, see greedy_baseline)
    problems_per_batch: int = 4
    temperature: float = 1.0
    top_p: float = 0.95
    greedy_baseline: bool = True  # decode greedily too, for reward.baseline greedy or best (no use otherwise)
    # Leave out programs whose per-token returns are all 0 (with the `group` baseline: every sample of the problem
    # scored the same, and no line was blamed). They add nothing to the RL gradient but cost learner time.
    skip_zero_returns: bool = False
    # Share of each batch's problems drawn from those without a trainable reference (tests only: what RL is for;
    # the supervised anchor already trains on the others). None: every problem equally often.
    reference_free_share: Optional[float] = None
    # Ray resources per sampler actor (cluster.placement): a whole GPU (1) or a share of one (0.5: two samplers
    # on a GPU); the sampler runs on the GPU Ray assigns it, in half precision.
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    resources: dict[str, float] = field(default_factory=dict)  # custom Ray resources, e.g. {sampler_slot: 1}


@dataclass
class SandboxConfig:
    num_workers: int = 0  # 0 = one per CPU core (Ray actors), two per core (local threads)
    test_timeout_s: float = 4.0  # one test
    program_timeout_s: float = 20.0  # the whole program, all tests
    memory_mb: int = 1024  # the program's whole process tree (cgroup), and each process's address space
    max_output_bytes: int = 1 << 20  # stdout/stderr captured per test
    max_file_bytes: int = 1 << 20  # RLIMIT_FSIZE
    max_open_files: int = 64
    max_processes: int = 16  # per program, threads included
    max_result_bytes: int = 1 << 20  # the plain-data reply from the program's process
    # "auto": namespaces + seccomp (cgroups where available), else stop with what is missing; "full": cgroups too;
    # "none": rlimits only, for trusted programs (sandbox/isolation.py).
    isolation: Literal["auto", "full", "none"] = "auto"
    num_cpus: float = 1.0  # Ray resources per sandbox worker actor
    resources: dict[str, float] = field(default_factory=dict)


@dataclass
class RewardConfig:
    adaptive: bool = True  # failed programs earn -0.3 + 1.3 * pass_ratio
    fine_grained: bool = True  # extra penalty on the blamed tokens
    fine_grained_scale: Literal["flat", "paper"] = "flat"  # flat: released code; paper: scaled by T / blamed
    # greedy: the latest greedy decode's reward (released code); best: the best reward seen (paper); group: the mean
    # reward of the problem's other samples in the same batch (leave-one-out); none: 0
    baseline: Literal["greedy", "best", "group", "none"] = "greedy"
    # An upper bound on the baseline (None: no bound). At 0 a passing program always earns at least +1, so problems
    # the policy already solves stay reinforced; below 0 (problems whose samples mostly fail) returns stay centred.
    baseline_cap: Optional[float] = None
    penalty: float = 0.3
    # The outcome reward R(w) by name (rewards.outcome.REWARD_FUNCTIONS; register a new one there and add its name
    # here). None: `adaptive` when reward.adaptive is true, else `coarse`.
    function: Optional[Literal["coarse", "adaptive"]] = None


@dataclass
class BufferConfig:
    capacity: int = 512
    min_fill: int = 32  # training starts once the buffer holds this many trajectories
    max_unread: int = 0  # back-pressure: samplers wait while this many are unread (0 = capacity)
    snapshot_every_s: float = 60.0  # 0 = never


@dataclass
class LearnerConfig:
    num_ranks: int = 1
    deepspeed_config: str = "zero0"  # a name under configs/deepspeed/ or a path to a DeepSpeed JSON file
    lr: float = 1e-4
    weight_decay: float = 0.05
    warmup_steps: int = 10
    batch_size: int = 16  # trajectories per rank per RL micro-step
    grad_accum: int = 1
    supervised_ratio: int = 1  # supervised micro-steps per RL micro-step (1 = the paper's 1:1; 0 = off)
    supervised_batch_size: int = 16
    total_steps: int = 200  # optimizer steps of RL training
    warm_start_steps: int = 0  # supervised steps on reference solutions before RL
    warm_start_lr: float = 1e-3
    warm_start_lr_end: Optional[float] = None  # decay linearly to this over the warm start (None: constant)
    publish_every: int = 2  # push weights to samplers every K optimizer steps
    checkpoint_every: int = 50  # 0 = only at the end
    checkpoint_every_s: float = 0.0  # also checkpoint every this many seconds of training (0 = off)
    # A learner rank that dies restarts the learner group from the last checkpoint, at most this many times a run
    # (0: the run stops and names `train --resume`).
    max_restarts: int = 3
    # False: the supervised-only control: the same optimizer steps with each RL micro-step replaced by a
    # supervised one, and no samplers.
    rl: bool = True
    # False: the offline ablation: the samplers fill the buffer once (buffer.capacity trajectories) from the
    # starting policy and stop; the learner then trains on that fixed buffer.
    online: bool = True
    importance_clip: Optional[float] = None  # truncated importance weight min(c, p/p_behaviour); None = off
    # Recompute each layer's activations in the backward pass instead of keeping them (transformers' gradient
    # checkpointing): activation memory falls from all layers' to one layer's, for about a third more compute.
    gradient_checkpointing: bool = False
    # Ray resources per learner rank: 0 GPUs (CPU, gloo) or 1 (one GPU per rank, NCCL); the ranks are placed
    # together as one placement group.
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    resources: dict[str, float] = field(default_factory=dict)


@dataclass
class EvalConfig:
    """Held-out evaluation. While training (runs with online samplers): pass@1 with greedy decoding, pass@1 and
    pass@n sampled, on ``data.eval_split`` of ``data.source`` (or on ``source``), graded on the grading tests,
    at the start of RL, every ``every_steps`` RL steps and at the end; the samplers do it between batches.
    `launch.py eval --config PRESET` places its own evaluation actors as ``num_actors`` and the resources say."""

    every_steps: int = 0  # 0 = off
    source: Optional[str] = None  # a held-out problems file (all of it); None: data.source's data.eval_split
    format: Optional[str] = None  # of `source` (None: detected)
    limit: int = 32  # problems evaluated, spread over the held-out set (bounds the cost)
    samples_per_problem: int = 4  # sampled programs per problem (pass@1 and pass@n), besides one greedy decode
    temperature: float = 0.8
    top_p: float = 0.95
    # The evaluation actors of `launch.py eval --config PRESET` (each holds a policy copy, samples and grades).
    num_actors: int = 2
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    resources: dict[str, float] = field(default_factory=dict)


@dataclass
class WeightsConfig:
    transport: Literal["object_store", "collective"] = "object_store"


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    buffer: BufferConfig = field(default_factory=BufferConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    weights: WeightsConfig = field(default_factory=WeightsConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
