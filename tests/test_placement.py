"""Placement without a cluster: the dry run of `cluster.placement` for the paper presets, refusals (oversubscribed,
two learner ranks on one GPU), the devices a process derives from Ray's GPU ids, the collectives' devices, and
`launch.py plan`'s verdicts. The same placement on a real Ray with logical GPUs: tests/test_placement_ray.py."""
from __future__ import annotations

import types

import pytest
import torch

from cluster.placement import (
    PlacementError,
    eval_actors,
    nodes_from_cluster_file,
    parse_node,
    place,
    run_actors,
    shared_visible_gpus,
)
from configs import ConfigError, load_config
from models import device as dev
from tests.conftest import REPO_ROOT

EIGHT_GPUS = "CPU=96,GPU=8"


def gpu_ids(placed, role: str) -> list[int]:
    return [i for p in placed if p.actor.role == role for i in p.gpu_ids]


@pytest.mark.parametrize("preset", ["codet5-apps", "codegen-apps", "codegen-apps-40g"])
def test_paper_presets_give_every_learner_rank_sampler_and_eval_actor_a_gpu_of_its_own(preset: str) -> None:
    cfg = load_config(preset)
    node = parse_node(EIGHT_GPUS, "node-0", 80)
    placed = place(run_actors(cfg), [node])
    learners, samplers = gpu_ids(placed, "learner"), gpu_ids(placed, "sampler")
    assert len(learners) == cfg.learner.num_ranks == 4 and len(samplers) == cfg.sampler.num_samplers == 4
    assert sorted(learners + samplers) == list(range(8))  # distinct: nobody shares a GPU
    assert all(p.gpu_ids == () for p in placed if p.actor.role == "sandbox")
    evaluation = gpu_ids(place(eval_actors(cfg), [node]), "eval")
    assert sorted(evaluation) == list(range(8))


def test_an_oversubscribing_preset_is_refused_naming_the_actor_and_what_is_missing() -> None:
    cfg = load_config("codet5-apps", ["--sampler.num_samplers=5"])
    missing = r"sampler-4 asks for \{CPU: 2, GPU: 1\}.*cluster totals \{CPU: 96, GPU: 8\}"
    with pytest.raises(PlacementError, match=missing):
        place(run_actors(cfg), [parse_node(EIGHT_GPUS, "node-0", 80)])
    cfg = load_config("codegen-apps-cluster", ["--learner.num_ranks=9"])  # the learner node has 8 learner slots
    with pytest.raises(PlacementError, match="learner-8 asks for .*learner_slot: 1"):
        place(run_actors(cfg), nodes_from_cluster_file(REPO_ROOT / "cluster" / "cluster.yaml", 80))


def test_gpu_shares_pack_onto_one_gpu_but_learner_ranks_may_not_share() -> None:
    cfg = load_config("codet5-apps", ["--sampler.num_gpus=0.5", "--sampler.num_samplers=8"])
    placed = place(run_actors(cfg), [parse_node(EIGHT_GPUS, "node-0", 80)])
    assert gpu_ids(placed, "sampler") == [4, 4, 5, 5, 6, 6, 7, 7]
    with pytest.raises(ConfigError, match="learner.num_gpus: .*two ranks would share a GPU"):
        load_config("codet5-apps", ["--learner.num_gpus=0.5"])
    with pytest.raises(ConfigError, match="sampler.num_gpus: a share of one GPU"):
        load_config("codet5-apps", ["--sampler.num_gpus=1.5"])
    # What each rank of a group sees: the group's GPUs on its node; two ranks given one GPU are refused.
    assert shared_visible_gpus([("a", ["5"]), ("b", ["0"]), ("a", ["2"]), ("c", [])]) == [
        ["2", "5"], ["0"], ["2", "5"], []]
    with pytest.raises(PlacementError, match="ranks 0 and 1 were both given GPU 3 on node a"):
        shared_visible_gpus([("a", ["3"]), ("a", ["3"])])


def test_the_cluster_preset_puts_each_role_on_its_node_type() -> None:
    cfg = load_config("codegen-apps-cluster")
    placed = place(run_actors(cfg), nodes_from_cluster_file(REPO_ROOT / "cluster" / "cluster.yaml", 80))
    where = {role: {p.node for p in placed if p.actor.role == role} for role in ("learner", "sampler", "sandbox")}
    assert where == {"learner": {"gpu_learner-0"}, "sampler": {"gpu_sampler-0"}, "sandbox": {"cpu_sandbox-0"}}
    assert sorted(gpu_ids(placed, "learner")) == list(range(8)) and sorted(gpu_ids(placed, "sampler")) == list(range(4))


def test_a_process_derives_device_and_local_rank_from_the_gpu_ray_assigned(monkeypatch) -> None:
    monkeypatch.setattr(dev, "ray_gpu_ids", lambda: ["5"])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5")  # Ray's default: the actor sees only its own GPU
    assert dev.gpu_assignment() == dev.GpuAssignment(("5",), "5", 0) and dev.gpu_assignment().device == "cuda:0"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5,7")  # shared among a node's learner ranks
    assert dev.gpu_assignment().local_rank == 1 and dev.gpu_assignment().device == "cuda:1"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")  # RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES: every GPU visible
    assert dev.gpu_assignment().device == "cuda:5"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    with pytest.raises(dev.DeviceError, match="GPU 5 .* is not in CUDA_VISIBLE_DEVICES='0,1'"):
        dev.gpu_assignment()
    monkeypatch.delenv("RLTF_DEVICE", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5")
    if not torch.cuda.is_available():  # a GPU from Ray but a CPU build of torch: said, not silently ignored
        with pytest.raises(dev.DeviceError, match="Ray assigned GPU 5 .*RLTF_DEVICE=cpu"):
            dev.torch_device()
    monkeypatch.setenv("RLTF_DEVICE", "cpu")
    assert dev.torch_device() == "cpu"
    # Samplers and eval actors generate in half precision on a GPU; the learner always loads fp32 master weights.
    monkeypatch.delenv("RLTF_DTYPE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert dev.default_dtype("cuda:0") == torch.bfloat16 and dev.default_dtype("cpu") == torch.float32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)  # V100: fp16
    assert dev.default_dtype("cuda:0") == torch.float16 and dev.master_dtype() == torch.float32


class _Stop(Exception):
    pass


def test_the_learner_all_reduce_puts_its_tensor_on_the_engine_device(monkeypatch) -> None:
    """NCCL takes only CUDA tensors: the token count a rank all-reduces must live on its engine's device (a CPU
    tensor, as before, fails on an NCCL group). A stub records the device the collective receives."""
    from learner.rank import LearnerRank

    seen = []

    def all_reduce(tensor, *args, **kwargs):
        seen.append(tensor.device)
        raise _Stop

    monkeypatch.setattr(torch.distributed, "all_reduce", all_reduce)
    rank = LearnerRank(load_config("smoke"), 0, 2)
    rank.engine = types.SimpleNamespace(device=torch.device("meta"))  # any device but the CPU
    with pytest.raises(_Stop):
        rank._global_tokens(7)
    assert seen == [torch.device("meta")]
    assert dev.collective_device("gloo", "cuda:3") == "cpu" and dev.collective_device("nccl", "cuda:3") == "cuda:3"
    with pytest.raises(dev.DeviceError, match="NCCL group needs CUDA tensors"):
        dev.collective_device("nccl", "cpu")


def test_the_weight_group_stages_on_the_cpu_over_gloo_and_refuses_nccl() -> None:
    from learner.collective import BACKEND, CollectiveSync, WeightGroup, WeightGroupError, _Membership, \
        _new_process_group

    class RecordingGroup:  # a process group stub: records the device of every tensor a collective receives
        devices: list = []

        def broadcast(self, tensors, opts):
            self.devices += [t.device for t in tensors]
            if tensors[0].dtype == torch.int64 and tensors[0].numel() == 2:
                tensors[0].copy_(torch.tensor([1, 16]))  # the sender's header: version 1, 16 bytes
            return types.SimpleNamespace(wait=lambda: None)

        allreduce = broadcast

    sync = CollectiveSync(types.SimpleNamespace(_actor_id=types.SimpleNamespace(hex=lambda: "store")))
    group = WeightGroup("weights-1", 2, BACKEND, 5.0)
    pg = RecordingGroup()
    sync._exchange(_Membership(group, 1, pg, None), 1, None, 0)
    assert BACKEND == "gloo" and pg.devices == [torch.device("cpu")] * 3  # header, flat buffer, acknowledgement
    with pytest.raises(WeightGroupError, match="does not run on NCCL.*object_store"):
        _new_process_group(WeightGroup("weights-2", 2, "nccl", 5.0), 0, "127.0.0.1", 0, tcp_store=object())
