"""Checkpoints are whole or absent, on a path (written under a temporary name, then renamed) and on a URI store
through pyarrow.fs (written in place, committed by state.json written last): a writer killed half-way leaves the
previous checkpoint the latest and loadable, and what it left is never picked by `--resume` (`latest`); a write
that fails names the path and keeps the last good checkpoint."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest

from learner.checkpoints import CheckpointState, CheckpointWriteError, RunCheckpoints
from models import ensure_tiny
from tests.conftest import REPO_ROOT


@pytest.fixture(params=["path", "uri"])
def location(request, tmp_path):
    folder = tmp_path / "runs" / "ckpt"
    return str(folder) if request.param == "path" else f"file://{folder}"


def save(checkpoints: RunCheckpoints, step: int, payload: bytes = b"x" * 1000):
    """A checkpoint as the run writes one: parts through `writable`, the buffer snapshot, then the commit."""
    checkpoint = checkpoints.begin(step)
    with checkpoint.writable("hf") as local:
        shutil.copytree(ensure_tiny("tiny:gpt2"), local, dirs_exist_ok=True)
    with checkpoint.writable("deepspeed") as local:
        (local / "state").mkdir(exist_ok=True)
        (local / "state" / "mp_rank_00_model_states.pt").write_bytes(payload)
    checkpoint.write_file("buffer.snapshot.pkl", b"buffer")
    parts = ["hf/config.json", "deepspeed/state/mp_rank_00_model_states.pt"]
    return checkpoints.commit(checkpoint, CheckpointState(step, step // 2, "rl", float(step)), parts)


WRITER = textwrap.dedent("""
    import shutil, sys, time
    from learner.checkpoints import RunCheckpoints
    from models import ensure_tiny
    checkpoint = RunCheckpoints(sys.argv[1]).begin(20)
    with checkpoint.writable("hf") as local:
        shutil.copytree(ensure_tiny("tiny:gpt2"), local, dirs_exist_ok=True)
    with checkpoint.writable("deepspeed") as local:
        with open(local / "optim_states.pt", "wb") as handle:
            handle.write(b"y" * 100_000)
            handle.flush()
            print("half-way", flush=True)
            time.sleep(600)  # killed here, the optimizer state half written
""")


def test_a_checkpoint_whose_writer_is_killed_half_way_is_never_picked(location):
    from transformers import AutoModelForCausalLM

    checkpoints = RunCheckpoints(location)
    first = save(checkpoints, 10)
    writer = subprocess.Popen([sys.executable, "-c", WRITER, location], stdout=subprocess.PIPE, text=True,
                              cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    try:
        assert writer.stdout.readline().strip() == "half-way"
        assert [c.step for c in checkpoints.all()] == [10]  # not picked while it is being written
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=30)
    left = [n for n in checkpoints.storage.list("checkpoints") if n.startswith("step_000020")]
    assert left, "the killed writer left its partial checkpoint behind"

    latest = RunCheckpoints(location).latest()  # what `train --resume` restores from
    assert latest is not None and latest.step == 10 and latest.location == first.location
    assert latest.state() == CheckpointState(10, 5, "rl", 10.0)
    assert latest.read_file("buffer.snapshot.pkl") == b"buffer"
    with latest.readable("hf") as hf:
        assert AutoModelForCausalLM.from_pretrained(hf).config.model_type == "gpt2"

    # The next checkpoint clears what the dead writer left and becomes the latest once whole.
    third = save(checkpoints, 30)
    assert [c.step for c in checkpoints.all()] == [10, 30] and checkpoints.latest().location == third.location
    assert [n for n in checkpoints.storage.list("checkpoints") if n.startswith("step_000020")] == []


def test_the_same_step_saved_again_is_never_read_half_written(location):
    checkpoints = RunCheckpoints(location)
    save(checkpoints, 10, b"old")
    again = checkpoints.begin(10)
    if checkpoints.storage.renames_atomically:  # the old one still counts meanwhile, whole
        with checkpoints.latest().readable("deepspeed") as ds:
            assert (ds / "state" / "mp_rank_00_model_states.pt").read_bytes() == b"old"
    else:  # in place: it stopped counting before anything of it was overwritten
        assert checkpoints.all() == []
    checkpoints.abort(again)
    save(checkpoints, 10, b"new")
    with checkpoints.latest().readable("deepspeed") as ds:
        assert (ds / "state" / "mp_rank_00_model_states.pt").read_bytes() == b"new"
    assert len(checkpoints.storage.list("checkpoints")) == 1


FULL_DISK = textwrap.dedent("""
    import json, resource, signal, sys
    from learner.checkpoints import CheckpointState, CheckpointWriteError, RunCheckpoints
    checkpoints = RunCheckpoints(sys.argv[1])
    ok = checkpoints.begin(10)
    ok.write_file("state_dict.bin", b"x" * 1000)
    checkpoints.commit(ok, CheckpointState(10, 1, "rl", 1.0), ["state_dict.bin"])
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a file past the limit fails to write (EFBIG), like a full disk
    resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000))
    big = checkpoints.begin(20)
    try:
        big.write_file("state_dict.bin", b"y" * 200_000)
    except CheckpointWriteError as exc:
        checkpoints.abort(big)
        print(json.dumps({"error": str(exc), "latest": checkpoints.latest().step}))
""")


def test_a_failed_write_names_the_path_and_keeps_the_last_good_checkpoint(location):
    out = subprocess.run([sys.executable, "-c", FULL_DISK, location], capture_output=True, text=True, timeout=120,
                         cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert "step_000020" in result["error"] and "state_dict.bin" in result["error"]
    assert "too large" in result["error"].lower()
    assert result["latest"] == 10
    assert [c.step for c in RunCheckpoints(location).all()] == [10]
    assert not any(n.startswith("step_000020") for n in RunCheckpoints(location).storage.list("checkpoints"))


def test_commit_refuses_a_checkpoint_missing_a_ranks_part(location):
    checkpoints = RunCheckpoints(location)
    checkpoint = checkpoints.begin(5)
    with pytest.raises(CheckpointWriteError, match="zero_pp_rank_1.*set run.storage"):
        checkpoints.commit(checkpoint, CheckpointState(5, 0, "rl", 0.0), ["deepspeed/state/zero_pp_rank_1_optim.pt"])
    assert checkpoints.latest() is None
