"""The arms of the learning experiment (bench/learning.py) and the problem kinds it scores them on; the report
(bench/learning_report.py) names them the same way."""
from __future__ import annotations

# arm -> (what it is, config overrides on top of configs/learning.yaml)
ARMS: dict[str, tuple[str, list[str]]] = {
    "supervised": ("supervised only (the control)", ["--learner.rl=false"]),
    "coarse": ("+ coarse reward", ["--reward.adaptive=false", "--reward.fine_grained=false"]),
    "coarse+fine": ("+ fine-grained", ["--reward.adaptive=false", "--reward.fine_grained=true"]),
    "rltf": ("+ adaptive (RLTF)", ["--reward.adaptive=true", "--reward.fine_grained=true"]),
    # The fixed buffer is filled as fast as the samplers go (no back-pressure), then trained on for the rest of the
    # budget: 512 programs, about 25 s of sampling here, each then read about twice.
    "offline": ("RLTF, offline buffer", ["--reward.adaptive=true", "--reward.fine_grained=true",
                                         "--learner.online=false", "--buffer.capacity=512", "--buffer.max_unread=0"]),
}
KINDS = ("tests-only", "supervised")
