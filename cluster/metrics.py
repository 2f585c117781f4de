"""The run's metrics, exported through `ray.util.metrics` to the node's Prometheus endpoint (and so to the Ray
dashboard and Grafana). Names appear there with Ray's ``ray_`` prefix, e.g. ``ray_rltf_samples_total``.

Every metric carries a ``role`` tag (sampler, sandbox, buffer, learner, controller) and the run's name, so one
Prometheus serves several runs. Metric objects are created lazily inside the actor process that records them
(`RunMetrics` is cheap to construct and safe to pickle before first use).
"""
from __future__ import annotations

from typing import Any, Optional

# name -> (kind, description, extra tag keys, histogram boundaries)
DEFINITIONS: dict[str, tuple[str, str, tuple[str, ...], Optional[list[float]]]] = {
    "rltf_samples_total": ("counter", "programs generated and scored by samplers", ("sampler",), None),
    "rltf_programs_total": ("counter", "programs executed in the sandbox, by outcome", ("outcome",), None),
    "rltf_pass_rate": ("gauge", "fraction of sampled programs that pass all tests (since start)", (), None),
    "rltf_mean_reward": ("gauge", "mean reward of sampled programs (since start)", (), None),
    "rltf_buffer_size": ("gauge", "trajectories held by the online buffer", (), None),
    "rltf_buffer_unread": ("gauge", "trajectories in the buffer the learner has not read yet", (), None),
    "rltf_buffer_staleness": ("gauge", "mean policy-version lag of buffered trajectories", (), None),
    "rltf_learner_step": ("gauge", "learner optimizer steps taken", (), None),
    "rltf_learner_loss": ("gauge", "RL loss per token of the latest step", (), None),
    "rltf_learner_step_seconds": ("histogram", "wall time of one learner optimizer step", (),
                                  [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60]),
    "rltf_policy_version": ("gauge", "weight version a sampler runs", ("sampler",), None),
    "rltf_weight_sync_seconds": ("histogram", "from the learner's push to a sampler running the new weights",
                                 ("sampler",), [0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60]),
    "rltf_sandbox_queue_depth": ("gauge", "programs a sampler has waiting for or running in sandbox workers",
                                 ("sampler",), None),
    "rltf_actors": ("gauge", "live actors of the run, by role", (), None),
    "rltf_eval_pass_at_k": ("gauge", "held-out pass@k of the learner's weights, greedy or sampled decoding",
                            ("k", "decoding"), None),
}


class RunMetrics:
    """Records the run's metrics for one role. ``record(name, value, **tags)`` works in any Ray process; outside
    Ray (unit tests, `launch.py execute`) it does nothing."""

    def __init__(self, run: str, role: str) -> None:
        self.run, self.role = run, role
        self._metrics: dict[str, Any] = {}
        self._enabled: Optional[bool] = None

    def __getstate__(self) -> dict[str, Any]:
        return {"run": self.run, "role": self.role}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["run"], state["role"])

    def _metric(self, name: str):
        if name not in self._metrics:
            from ray.util import metrics

            kind, description, tags, bounds = DEFINITIONS[name]
            keys = ("run", "role", *tags)
            if kind == "counter":
                metric = metrics.Counter(name, description=description, tag_keys=keys)
            elif kind == "gauge":
                metric = metrics.Gauge(name, description=description, tag_keys=keys)
            else:
                metric = metrics.Histogram(name, description=description, boundaries=bounds, tag_keys=keys)
            self._metrics[name] = metric
        return self._metrics[name]

    def record(self, name: str, value: float, **tags: str) -> None:
        if self._enabled is None:
            import ray

            self._enabled = ray.is_initialized()
        if not self._enabled or value is None:
            return
        kind = DEFINITIONS[name][0]
        metric = self._metric(name)
        all_tags = {"run": self.run, "role": tags.pop("role", self.role), **{k: str(v) for k, v in tags.items()}}
        if kind == "counter":
            metric.inc(value, tags=all_tags)
        elif kind == "gauge":
            metric.set(value, tags=all_tags)
        else:
            metric.observe(value, tags=all_tags)
