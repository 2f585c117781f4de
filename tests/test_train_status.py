"""The training core's typed pieces without a cluster: which batch source a config chooses, the progress line and
the status / summary records that `launch.py train`, `status --json` and summary.json print."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from actors.buffer import BufferStats
from configs import load_config
from train.command import format_progress
from train.sources import OfflineSource, OnlineSource, SupervisedSource, make_source
from train.status import Phase, Progress, RunStatus, SamplingStats


@pytest.mark.parametrize("overrides, source, phase", [
    ([], OnlineSource, Phase.RL),
    (["--learner.online=false"], OfflineSource, Phase.RL),
    (["--learner.rl=false"], SupervisedSource, Phase.SUPERVISED),
    (["--learner.rl=false", "--learner.online=false"], SupervisedSource, Phase.SUPERVISED),
])
def test_the_switches_choose_one_batch_source(overrides, source, phase):
    chosen = make_source(SimpleNamespace(cfg=load_config("smoke", overrides)))
    assert type(chosen) is source and chosen.phase is phase
    assert chosen.samples is (source is not SupervisedSource)


def test_an_offline_source_stops_sampling_once_its_buffer_is_full():
    offline = make_source(SimpleNamespace(cfg=load_config("smoke", ["--learner.online=false"])))
    offline.filled = True
    assert not offline.samples  # `scale` then leaves the sampler count alone


def test_progress_lines_and_records():
    warm = Progress(Phase.WARM_START.value, 12, 0, learner={"sl_nll": 0.5, "lr": 1e-3, "step": 12})
    assert format_progress(warm) == "[warm start] step 12 sl_nll 0.500 lr 1.00e-03"
    assert format_progress(Progress(Phase.RL.value, 60)) == "[rl]"
    sampling = SamplingStats(samples=40, samples_per_s=2.0, pass_rate=0.5, mean_reward=0.1, buffer_size=40,
                             buffer_capacity=256, sampler_versions={"run:sampler-0": 3}, weight_sync_s=0.25)
    rl = Progress(Phase.RL.value, 61, 3, 20.0, {"loss_rl": -0.02, "sl_nll": 0.4}, sampling)
    assert format_progress(rl) == ("[rl] step 61 | v3 (samplers: 3, sync 0.25s) | 2.0 samples/s | pass 0.500 | "
                                   "reward +0.100 | buffer 40/256 | lag 0.00 | loss -0.0200")
    record = rl.flat()  # what a learner record in metrics.jsonl gains from a progress tick
    assert record["loss"] == -0.02 and record["sampler_versions"] == {"run:sampler-0": 3}
    assert {"phase", "step", "version", "elapsed_s", "samples_per_s", "buffer_unread", "policy_lag"} <= set(record)
    status = RunStatus("run", rl, {"sampler": 1}, BufferStats(size=40, capacity=256, accepted=52)).to_dict()
    assert (status["phase"], status["run"], status["buffer"]["accepted"], status["actors"]) == ("rl", "run", 52,
                                                                                                {"sampler": 1})


def test_the_progress_line_says_what_the_run_waits_for():
    waiting = Progress(Phase.RL.value, 61, 3, waiting="sampler-0 (needs {CPU: 1, sampler_slot: 1}, ...)")
    assert format_progress(waiting) == "[rl] | waiting for sampler-0 (needs {CPU: 1, sampler_slot: 1}, ...)"
    assert waiting.flat()["waiting"].startswith("sampler-0") and "waiting" not in Progress("rl").flat()


def test_why_an_actor_is_not_placed():
    from cluster.placement import why_unplaced

    request = {"CPU": 1.0, "sampler_slot": 1.0}
    head = {"Alive": True, "Resources": {"CPU": 4.0}}
    lost = {"Alive": False, "Resources": {"CPU": 1.0, "sampler_slot": 1.0}}
    assert why_unplaced(request, [head, lost]) == ("needs {CPU: 1, sampler_slot: 1}, which no live node offers "
                                                   "(1 live): waiting for a node that does")
    back = {"Alive": True, "Resources": {"CPU": 1.0, "sampler_slot": 1.0}}
    assert why_unplaced(request, [head, lost, back]).startswith("starting, or waiting for {CPU: 1, sampler_slot: 1}")
    # Enough of each resource in the cluster, but on no single node, does not place it either.
    split = {"Alive": True, "Resources": {"sampler_slot": 1.0}}
    assert "which no live node offers (2 live)" in why_unplaced(request, [head, split])


def test_one_controller_per_run_directory(tmp_path):
    import threading

    from train.recovery import RunInUse, hold_run_dir

    first = hold_run_dir(tmp_path)
    with pytest.raises(RunInUse, match="in use by a live run"):
        hold_run_dir(tmp_path, wait_s=0.6)
    got = []
    waiting = threading.Thread(target=lambda: got.append(hold_run_dir(tmp_path, wait_s=10)))
    waiting.start()
    waiting.join(0.5)
    assert waiting.is_alive()  # a resumed run waits ...
    first.close()  # ... until the old controller's process is gone and the kernel drops its lock
    waiting.join(5)
    assert got and not waiting.is_alive()
    got[0].close()
