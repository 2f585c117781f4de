"""Why an actor is not running: its Ray resource request against the live nodes, in one line for the run's status.

When a node is lost, Ray restarts the actors that lived there (``max_restarts``) and re-places placement-group
bundles on their own, but only where a live node offers the resources they ask for; until then they wait. This
module says which of the two it is: no live node has that much of some resource (the run waits for a node that
does, e.g. the lost one coming back), or a node could hold it but the resources are taken for now.
"""
from __future__ import annotations

from typing import Optional


def resource_request(num_cpus: float = 0.0, num_gpus: float = 0.0,
                     resources: Optional[dict[str, float]] = None) -> dict[str, float]:
    """An actor's (or a placement-group bundle's) Ray resources, without the zero entries."""
    request = {"CPU": num_cpus, "GPU": num_gpus, **(resources or {})}
    return {k: float(v) for k, v in request.items() if v}


def format_request(request: dict[str, float]) -> str:
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in sorted(request.items())) + "}"


def why_unplaced(request: dict[str, float], nodes: Optional[list[dict]] = None) -> str:
    """Why an actor or bundle asking for ``request`` is not running, judged from the live nodes' totals
    (``ray.nodes()``): no live node offers that much (it waits for a node that does), or some node does (it is
    starting there, or waits for those resources to be freed)."""
    if nodes is None:
        import ray

        nodes = ray.nodes()
    live = [n.get("Resources", {}) for n in nodes if n.get("Alive")]
    if any(all(totals.get(k, 0.0) >= v for k, v in request.items()) for totals in live):
        return f"starting, or waiting for {format_request(request)} to be free"
    return (f"needs {format_request(request)}, which no live node offers ({len(live)} live): "
            "waiting for a node that does")
