"""Weight-sync strategies end to end on a real local Ray: a sender actor (learner rank 0's role) publishes a tiny torch
model's weights and receiver actors (the samplers' role) load them between "batches", for both the object store
and the collective broadcast; plus a membership change and a receiver that dies mid-run.
"""
from __future__ import annotations

import sys
import time

import pytest
import torch

ray = pytest.importorskip("ray")

from cluster.connect import init_ray  # noqa: E402
from learner import make_weight_sync  # noqa: E402
from learner.collective import (  # noqa: E402
    WeightGroupError,
    flatten_state_dict,
    form_weight_group,
    unflatten_state_dict,
)
from learner.weight_sync import WeightStore, WeightSyncError  # noqa: E402

pytestmark = pytest.mark.slow
WAIT_S = 60.0


class TinyNet(torch.nn.Module):
    """Odd sizes and mixed dtypes, so the flat buffer needs padding and more than one dtype."""

    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Linear(7, 13)
        self.norm = torch.nn.LayerNorm(13)
        self.b = torch.nn.Linear(13, 5, bias=False)
        self.register_buffer("counts", torch.zeros(3, dtype=torch.int64))
        self.register_buffer("scale", torch.ones(5, dtype=torch.float16))


@ray.remote(num_cpus=0)
class Sender:
    def __init__(self, transport, seed: int, default_group: bool = False) -> None:
        torch.manual_seed(seed)
        self.model, self.transport = TinyNet(), transport
        if default_group:  # as on a DeepSpeed learner rank: the weight group must not touch (or need) this one
            import socket

            import torch.distributed as dist

            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)

    def default_group_size(self) -> int:
        import torch.distributed as dist

        return dist.get_world_size() if dist.is_initialized() else 0

    def change_weights(self, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in self.model.parameters():
                p.add_(torch.randn(p.shape, generator=gen))
            self.model.counts += seed
            self.model.scale *= 1.5

    def publish(self, version: int):
        return self.transport.send(version, self.model.state_dict(), step=10 * version)

    def state(self) -> dict:
        return {k: v.clone() for k, v in self.model.state_dict().items()}


@ray.remote(num_cpus=0, max_concurrency=2)  # threaded like the sampler, so a join can run beside its loop
class Receiver:
    def __init__(self, transport, seed: int) -> None:
        torch.manual_seed(seed)
        self.model, self.transport, self.version = TinyNet(), transport, 0

    def refresh_until(self, version: int) -> int:
        """The sampler's `refresh_weights`, called between (here: empty) batches until ``version`` arrives."""
        deadline = time.monotonic() + WAIT_S
        while self.version < version:
            if time.monotonic() > deadline:
                raise TimeoutError(f"still at version {self.version}, waiting for {version}")
            info = self.transport.latest()
            if info is not None and info.version > self.version:
                info, state = self.transport.fetch()
                self.model.load_state_dict(state)
                self.version = info.version
            time.sleep(0.02)
        return self.version

    def latest_version(self):
        info = self.transport.latest()
        return None if info is None else info.version

    def state(self) -> dict:
        return {k: v.clone() for k, v in self.model.state_dict().items()}


@pytest.fixture(scope="module")
def ray_local():
    # The actor classes and TinyNet live in this test module, which Ray's workers cannot import: ship them by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    init_ray(None, "test-weights", num_cpus=4, log_to_driver=False)
    yield
    ray.shutdown()


def _transport(kind: str, **options):
    store = ray.remote(WeightStore).options(num_cpus=0).remote()
    if kind == "collective":
        options = {"timeout_s": 30.0, **options}
    return make_weight_sync(kind, store, **options)


def _publish_and_receive(sender, receivers, version: int) -> tuple:
    published = sender.publish.remote(version)  # the collective publish blocks until every receiver has joined
    reached = ray.get([r.refresh_until.remote(version) for r in receivers], timeout=WAIT_S)
    return ray.get(published, timeout=WAIT_S), reached


def _assert_same(expected: dict, got: dict, who: str) -> None:
    assert list(got) == list(expected), who
    for name, tensor in expected.items():
        assert got[name].dtype == tensor.dtype and torch.equal(got[name], tensor), f"{who}: {name} differs"


def test_flat_buffer_round_trip_keeps_every_tensor_exactly() -> None:
    model = TinyNet()
    model.counts += 7
    state = {**model.state_dict(), "half": torch.randn(3, 3).to(torch.bfloat16), "flag": torch.tensor(True)}
    flat, layout, nbytes = flatten_state_dict(state)
    assert flat.dtype == torch.uint8 and flat.numel() == nbytes
    assert all(offset % 16 == 0 for *_, offset in layout)
    _assert_same(state, unflatten_state_dict(flat.clone(), layout), "round trip")


@pytest.mark.parametrize("kind", ["object_store", "collective"])
def test_receivers_match_sender_across_versions_and_a_membership_change(ray_local, kind: str) -> None:
    transport = _transport(kind)
    sender = Sender.remote(transport, seed=0, default_group=kind == "collective")
    receivers = [Receiver.remote(transport, seed=s) for s in (1, 2)]
    if kind == "collective":
        form_weight_group(sender, receivers, "weights-g1", transport, host="127.0.0.1")
    before = ray.get(sender.state.remote())
    assert not torch.equal(ray.get(receivers[0].state.remote())["a.weight"], before["a.weight"])

    for version in (1, 2):
        if version == 2:
            ray.get(sender.change_weights.remote(seed=5))
        info, reached = _publish_and_receive(sender, receivers, version)
        assert (info.version, info.step, reached) == (version, 10 * version, [version, version])
        expected = ray.get(sender.state.remote())
        for i, r in enumerate(receivers):
            _assert_same(expected, ray.get(r.state.remote()), f"{kind} receiver {i} at v{version}")
    assert not torch.equal(expected["a.weight"], before["a.weight"])  # v2 really differed from v1

    # A third receiver joins: a new group (collective), then the current weights go out again as a new version.
    newcomer = Receiver.remote(transport, seed=3)
    if kind == "collective":
        assert ray.get(newcomer.latest_version.remote()) is None  # announcements over g1 are not for it
        form_weight_group(sender, [*receivers, newcomer], "weights-g2", transport, host="127.0.0.1")
    else:
        assert ray.get(newcomer.latest_version.remote()) == 2
    everyone = [*receivers, newcomer]
    info, reached = _publish_and_receive(sender, everyone, 3)
    assert (info.version, reached) == (3, [3, 3, 3])
    assert ray.get(transport.store.latest.remote()).version == 3
    expected = ray.get(sender.state.remote())
    for i, r in enumerate(everyone):
        _assert_same(expected, ray.get(r.state.remote()), f"{kind} receiver {i} after the membership change")
    if kind == "collective":
        assert ray.get(sender.default_group_size.remote()) == 1  # the learner's own group is untouched


def test_collective_publish_fails_clearly_when_a_receiver_dies_or_never_joins(ray_local) -> None:
    timeout_s = 6.0
    transport = _transport("collective", timeout_s=timeout_s)
    sender = Sender.remote(transport, seed=0)
    alive, doomed = Receiver.remote(transport, seed=1), Receiver.remote(transport, seed=2)
    form_weight_group(sender, [alive, doomed], "weights-dying", transport, host="127.0.0.1")
    _publish_and_receive(sender, [alive, doomed], 1)

    def failed_publish(version: int) -> tuple[str, float]:
        started = time.monotonic()
        with pytest.raises(ray.exceptions.RayTaskError) as failure:
            ray.get(sender.publish.remote(version), timeout=WAIT_S)
        assert isinstance(failure.value.cause, WeightGroupError), failure.value
        assert isinstance(failure.value, WeightSyncError)  # what the controller catches: no string matching
        return str(failure.value.cause), time.monotonic() - started

    ray.kill(doomed)
    alive.refresh_until.remote(2)  # the survivor joins; it fails too once the broadcast breaks
    message, elapsed = failed_publish(2)
    assert "weights-dying" in message and "died or did not join" in message
    assert elapsed < timeout_s + 10, f"the learner hung {elapsed:.0f} s on a dead receiver"
    with pytest.raises(ray.exceptions.RayTaskError, match="broken"):  # unusable until a new group is formed
        ray.get(sender.publish.remote(3), timeout=WAIT_S)

    # A receiver that is alive but never joins the broadcast (stuck in a batch) fails it after the timeout.
    idle = Receiver.remote(transport, seed=3)
    form_weight_group(sender, [alive, idle], "weights-idle", transport, host="127.0.0.1")
    alive.refresh_until.remote(4)
    message, elapsed = failed_publish(4)
    assert "weights-idle" in message and "died or did not join" in message
    assert timeout_s - 1 < elapsed < timeout_s + 10, f"publish failed after {elapsed:.1f} s, timeout {timeout_s} s"
