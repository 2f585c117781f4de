"""The paper presets on a real local Ray that advertises 8 logical GPUs (tiny models swapped in): every learner rank,
sampler and eval actor gets a GPU of its own and derives its device and local rank from it, `plan` prints that
placement, and a preset that asks for more than the cluster has is refused.

The actors compute on the CPU (``RLTF_DEVICE=cpu``: no CUDA here), but what they derive from Ray's assignment is
what a GPU node uses: CUDA_VISIBLE_DEVICES, the local rank and ``cuda:<local rank>``.
"""
from __future__ import annotations

import asyncio
import os
import sys

import pytest

from cluster.connect import init_ray
from configs import load_config

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.slow
TINY = {"codet5-apps": "tiny:t5", "codegen-apps": "tiny:codegen"}


@pytest.fixture(scope="module")
def gpu_ray(ray_temp_dir):
    saved = os.environ.get("RLTF_DEVICE")
    os.environ["RLTF_DEVICE"] = "cpu"  # inherited by the cluster's workers: logical GPUs, CPU compute
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module
    init_ray(None, "test-placement", num_cpus=64, num_gpus=8, log_to_driver=False,
             _temp_dir=ray_temp_dir)
    yield
    ray.shutdown()
    if saved is None:
        os.environ.pop("RLTF_DEVICE", None)
    else:
        os.environ["RLTF_DEVICE"] = saved


def _report(actor_self) -> dict:
    """Runs inside an actor: what it derived from the GPU Ray gave it, and where its model is."""
    from models.device import VISIBLE_ENV, gpu_assignment, ray_gpu_ids, torch_device

    assigned = gpu_assignment()
    backend = getattr(actor_self, "backend", None)
    return {"gpu_ids": ray_gpu_ids(), "visible": os.environ.get(VISIBLE_ENV), "local_rank": assigned.local_rank,
            "assigned_device": assigned.device, "device": torch_device(),
            "model_device": str(backend.policy.model.device) if backend else None}


def _config(preset: str):
    return load_config(preset, [f"--model.name_or_path={TINY[preset]}", "--sandbox.num_workers=1",
                                "--sandbox.num_cpus=0", f"--run.name=placement-{preset}"])


def _check_own_gpu(reports: list[dict], expected: int) -> set[str]:
    ids = [r["gpu_ids"][0] for r in reports]
    assert len(ids) == expected and len(set(ids)) == expected, f"shared or missing GPUs: {ids}"
    for r in reports:
        assert len(r["gpu_ids"]) == 1 and r["visible"] == r["gpu_ids"][0]  # Ray showed it its own GPU only
        assert (r["local_rank"], r["assigned_device"], r["device"]) == (0, "cuda:0", "cpu")
        assert r["model_device"] in (None, "cpu")
    return set(ids)


@pytest.mark.parametrize("preset", ["codet5-apps", "codegen-apps"])
def test_paper_preset_actors_each_get_a_gpu_and_derive_device_and_local_rank(gpu_ray, preset, tmp_path) -> None:
    from actors.fleet import Fleet
    from cluster.placement import actor_options, nodes_from_ray
    from evaluation.evaluate import create_eval_actors
    from learner.group import LearnerGroup
    from learner.weight_sync import ObjectStoreSync, WeightStore
    from tasks import load_problems
    from train.plan import plan

    cfg = _config(preset)
    lines, refused = plan(cfg, nodes_from_ray(80))
    text = "\n".join(lines)
    assert refused is None, text
    for name in [f"learner-{r}" for r in range(4)] + [f"sampler-{s}" for s in range(4)] + ["eval-7"]:
        assert f"  {name} " in text, f"plan does not place {name}:\n{text}"
    print(text)

    async def start_training_actors():
        learners = LearnerGroup(cfg, lambda role: f"{cfg.run.name}:{role}", tmp_path)
        devices = await learners.place(timeout_s=120)
        fleet = Fleet(cfg, lambda role: f"{cfg.run.name}:{role}", lambda: asyncio.sleep(0), lambda event: None)
        fleet.start_sandbox()
        store = ray.remote(WeightStore).options(num_cpus=0).remote()
        fleet.supply(ray.put(load_problems("synthetic", limit=8)), None, ObjectStoreSync(store))
        await fleet.apply_target()  # the samplers wait for a first weight version: nothing is generated
        samplers = await asyncio.gather(*[a.__ray_call__.remote(_report) for a in fleet.samplers.values()])
        return learners, fleet, store, devices, samplers

    learners, fleet, store, devices, samplers = asyncio.run(start_training_actors())
    try:
        learner_ids = [d["gpu_ids"][0] for d in devices]
        assert len(set(learner_ids)) == 4
        shared = sorted(learner_ids, key=int)
        for d in devices:  # the ranks of a node see the group's GPUs and pick their own by index
            assert d["visible"] == shared and d["local_rank"] == shared.index(d["gpu_ids"][0])
            assert d["assigned_device"] == f"cuda:{d['local_rank']}" and d["device"] == "cpu"
        sampler_ids = _check_own_gpu(samplers, 4)
        assert sampler_ids.isdisjoint(learner_ids)
    finally:
        learners.kill()
        fleet.kill()
        ray.kill(store)
    # Evaluation is a job of its own (`launch.py eval --config`): it takes the whole node.
    evaluators = create_eval_actors(cfg.eval.num_actors, cfg.model.name_or_path, cfg.model.kind, 1,
                                    actor_options(cfg, "eval"))
    try:
        _check_own_gpu(ray.get([a.__ray_call__.remote(_report) for a in evaluators], timeout=180), 8)
    finally:
        for actor in evaluators:
            ray.kill(actor)


def test_a_preset_asking_for_more_gpus_than_the_cluster_has_is_refused(gpu_ray, tmp_path) -> None:
    from cluster.placement import PlacementError, nodes_from_ray
    from learner.group import LearnerGroup
    from train.plan import plan

    cfg = load_config("codet5-apps", ["--model.name_or_path=tiny:t5", "--learner.num_ranks=9", "--run.name=over"])
    _, refused = plan(cfg, nodes_from_ray(80))
    assert refused is not None and "learner-8 asks for" in refused and "GPU: 8" in refused
    group = LearnerGroup(cfg, lambda role: f"over:{role}", tmp_path)
    with pytest.raises(PlacementError, match=r"9 learner ranks .* could not be placed within 3 s"):
        asyncio.run(group.place(timeout_s=3))
    group.kill()
    assert ray.available_resources().get("GPU") == 8  # the refused group reserved nothing
