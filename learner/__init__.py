"""The learner: DeepSpeed ranks taking RLTF optimizer steps (`rank`, driven as a group by `group`), the engine and
its LR schedule (`engine`), batching and the loss (`batching`, `loss`), where checkpoints live (`checkpoints`), and
the weight-sync strategies that move weights to the samplers (`weight_sync`, `collective`), named here."""
from __future__ import annotations

from typing import Any

from learner.collective import CollectiveSync
from learner.weight_sync import ObjectStoreSync, WeightSync

# ``weights.transport`` -> strategy; a new one is added here and to the Literal of WeightsConfig.transport.
WEIGHT_SYNCS: dict[str, type[WeightSync]] = {"object_store": ObjectStoreSync, "collective": CollectiveSync}


def make_weight_sync(kind: str, store: Any, **options: Any) -> WeightSync:
    """The strategy named by ``weights.transport`` around the run's `WeightStore` actor; ``options`` go to its
    constructor (`CollectiveSync`: ``timeout_s``)."""
    if kind not in WEIGHT_SYNCS:
        raise ValueError(f"weights.transport={kind!r} is not one of {', '.join(map(repr, WEIGHT_SYNCS))}")
    return WEIGHT_SYNCS[kind](store, **options)
