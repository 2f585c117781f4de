"""Where a run's actors go: the Ray resources of each role, and a dry run of placing them on a cluster's nodes.

    actor_options(cfg, "sampler")           # the `.options(...)` of every sampler (also "learner", "sandbox", "eval")
    placed = place(run_actors(cfg), nodes)  # the node and GPU ids each actor would get, or PlacementError

One table for everything that creates actors (the fleet: samplers and sandbox workers; the learner group; the eval
actors) and for `launch.py plan`. Ray decides at run time; the dry run follows its rules: the learner ranks are
one placement group packed onto as few nodes as possible, other actors go to the first node with room, whole GPUs
are the lowest free ids and GPU shares go to the first GPU with room. Each process then runs on the GPU Ray gave it
(`models.device.gpu_assignment`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

ROLES = ("sandbox", "learner", "sampler", "eval")


class PlacementError(RuntimeError):
    """The actors cannot be placed as configured (not enough GPUs, CPUs or custom resources; two learner ranks on
    one GPU); the message says which actor and what is missing."""


def _section(cfg: Any, role: str) -> Any:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r} (roles: {', '.join(ROLES)})")
    return getattr(cfg, role)


def actor_options(cfg: Any, role: str) -> dict[str, Any]:
    """Ray actor options for one actor of ``role``: CPUs, GPUs (whole or a share) and custom resources."""
    section = _section(cfg, role)
    return {"num_cpus": section.num_cpus, "num_gpus": getattr(section, "num_gpus", 0.0),
            "resources": dict(section.resources)}


def bundle(cfg: Any, role: str) -> dict[str, float]:
    """The same request as a placement-group bundle ({"CPU": .., "GPU": .., custom...}, zeros left out)."""
    options = actor_options(cfg, role)
    out = {"CPU": options["num_cpus"], "GPU": options["num_gpus"], **options["resources"]}
    return {k: float(v) for k, v in out.items() if v}


@dataclass(frozen=True)
class ActorSpec:
    """One actor a run would create, with what it asks Ray for."""

    name: str  # e.g. learner-0, sampler-2
    role: str
    request: tuple[tuple[str, float], ...]  # bundle items, sorted

    @property
    def gpus(self) -> float:
        return dict(self.request).get("GPU", 0.0)


def _specs(cfg: Any, role: str, n: int) -> list[ActorSpec]:
    request = tuple(sorted(bundle(cfg, role).items()))
    return [ActorSpec(f"{role}-{i}", role, request) for i in range(n)]


def run_actors(cfg: Any, cpu_count: Optional[int] = None) -> list[ActorSpec]:
    """The actors of a training run in the order the training core creates them: sandbox workers (0 configured:
    one per core of the driver's machine), learner ranks, then samplers (none for the supervised-only control)."""
    workers = cfg.sandbox.num_workers or (cpu_count or os.cpu_count() or 1)
    samplers = cfg.sampler.num_samplers if cfg.learner.rl else 0
    return [*_specs(cfg, "sandbox", workers), *_specs(cfg, "learner", cfg.learner.num_ranks),
            *_specs(cfg, "sampler", samplers)]


def eval_actors(cfg: Any) -> list[ActorSpec]:
    """The actors of `launch.py eval --config` with this config (sandbox workers, then eval actors)."""
    workers = cfg.sandbox.num_workers or (os.cpu_count() or 1)
    return [*_specs(cfg, "sandbox", workers), *_specs(cfg, "eval", cfg.eval.num_actors)]


# --- nodes ---------------------------------------------------------------------------------------------------
@dataclass
class Node:
    """A node's schedulable resources (Ray's names: CPU, GPU, custom) and the memory of each of its GPUs."""

    name: str
    resources: dict[str, float]
    gpu_memory_gb: float = 0.0

    @property
    def num_gpus(self) -> int:
        return int(self.resources.get("GPU", 0))


def parse_node(spec: str, name: str, gpu_memory_gb: float) -> Node:
    """``CPU=96,GPU=8[,learner_slot=8...]`` (Ray's resource names) into a node."""
    resources = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        key, sep, value = item.partition("=")
        try:
            resources[key.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not key.strip():
            raise PlacementError(f"node {spec!r}: {item!r} is not NAME=NUMBER (e.g. CPU=96,GPU=8)")
    return Node(name, resources, gpu_memory_gb)


def nodes_from_cluster_file(path: str | Path, gpu_memory_gb: float) -> list[Node]:
    """The nodes `ray up` starts from a cluster launcher file: the head once, each worker type ``min_workers``
    times (an autoscaler adds more on demand; the plan shows what exists from the start)."""
    import yaml

    data = yaml.safe_load(Path(path).read_text())
    types = data.get("available_node_types") or {}
    head = data.get("head_node_type")
    nodes = []
    for type_name, node_type in types.items():
        count = 1 if type_name == head else int(node_type.get("min_workers", 0))
        for i in range(count):
            resources = {k: float(v) for k, v in (node_type.get("resources") or {}).items()}
            nodes.append(Node(type_name if type_name == head else f"{type_name}-{i}", resources, gpu_memory_gb))
    if not nodes:
        raise PlacementError(f"{path}: no node types with nodes at start (available_node_types, min_workers)")
    return nodes


def nodes_from_ray(gpu_memory_gb: float) -> list[Node]:
    """The alive nodes of the connected Ray cluster with their total resources."""
    import ray

    return [Node(n.get("NodeManagerHostname") or n["NodeID"][:8],
                 {k: float(v) for k, v in n["Resources"].items() if not k.startswith("node:")}, gpu_memory_gb)
            for n in ray.nodes() if n.get("Alive")]


# --- the dry run -----------------------------------------------------------------------------------------------
@dataclass
class Placed:
    """One actor on a node, with the GPU ids Ray would give it (a share: the id of the GPU it shares)."""

    actor: ActorSpec
    node: str
    gpu_ids: tuple[int, ...] = ()


@dataclass
class _Free:
    node: Node
    left: dict[str, float] = field(init=False)
    gpu_left: list[float] = field(init=False)

    def __post_init__(self) -> None:
        self.left = dict(self.node.resources)
        self.gpu_left = [1.0] * self.node.num_gpus

    def gpus_for(self, amount: float) -> Optional[tuple[int, ...]]:
        if amount <= 0:
            return ()
        if amount < 1:
            found = next((i for i, left in enumerate(self.gpu_left) if left >= amount - 1e-9), None)
            return None if found is None else (found,)
        whole = [i for i, left in enumerate(self.gpu_left) if left >= 1.0 - 1e-9][: int(amount)]
        return tuple(whole) if len(whole) == int(amount) else None

    def take(self, actor: ActorSpec) -> Optional[Placed]:
        request = dict(actor.request)
        if any(self.left.get(k, 0.0) < v - 1e-9 for k, v in request.items()):
            return None
        gpu_ids = self.gpus_for(request.get("GPU", 0.0))
        if gpu_ids is None:
            return None
        for k, v in request.items():
            self.left[k] -= v
        for i in gpu_ids:
            self.gpu_left[i] -= min(1.0, request["GPU"])
        return Placed(actor, self.node.name, gpu_ids)


def _missing(actor: ActorSpec, nodes: Sequence[Node]) -> str:
    totals: dict[str, float] = {}
    for node in nodes:
        for k, v in node.resources.items():
            totals[k] = totals.get(k, 0.0) + v
    asked = ", ".join(f"{k}: {v:g}" for k, v in actor.request) or "nothing"
    have = ", ".join(f"{k}: {totals.get(k, 0):g}" for k, _ in actor.request)
    return f"{actor.name} asks for {{{asked}}} and no node has that left (cluster totals {{{have}}})"


def place(actors: Sequence[ActorSpec], nodes: Sequence[Node]) -> list[Placed]:
    """Place ``actors`` in order on ``nodes``; learner ranks as one group packed onto as few nodes as possible."""
    free = [_Free(n) for n in nodes]
    placed: list[Placed] = []
    learners = [a for a in actors if a.role == "learner"]
    for actor in actors:
        if actor.role == "learner" and actor is not learners[0]:
            continue
        group = learners if actor.role == "learner" else [actor]
        # PACK: every rank on one node when some node can take them all, else node by node.
        order = sorted(free, key=lambda f: not _fits_all(f, group)) if len(group) > 1 else free
        for member in group:
            spot = next((p for p in (f.take(member) for f in order) if p is not None), None)
            if spot is None:
                raise PlacementError(_missing(member, nodes))
            placed.append(spot)
    return placed


def _fits_all(free: _Free, group: Sequence[ActorSpec]) -> bool:
    trial = _Free(free.node)
    trial.left, trial.gpu_left = dict(free.left), list(free.gpu_left)
    return all(trial.take(a) is not None for a in group)


def shared_visible_gpus(assignments: Sequence[tuple[str, Sequence[str]]]) -> list[list[str]]:
    """For ranks of one process group given as (node id, Ray GPU ids): the GPUs each rank should see, namely
    every GPU of the group on its node (`models.device.share_visible_gpus`). Two ranks on one GPU are refused."""
    by_node: dict[str, dict[str, int]] = {}
    for rank, (node, gpu_ids) in enumerate(assignments):
        owners = by_node.setdefault(node, {})
        for gpu in gpu_ids:
            if gpu in owners:
                raise PlacementError(f"learner ranks {owners[gpu]} and {rank} were both given GPU {gpu} on node "
                                     f"{node}: two ranks on one GPU (NCCL refuses it; give each rank a whole GPU)")
            owners[gpu] = rank
    ordered = {node: sorted(owners, key=lambda g: (len(g), g)) for node, owners in by_node.items()}
    return [ordered[node] if gpu_ids else [] for node, gpu_ids in assignments]
