"""The one dispatcher of work to a pool of Ray actors: each item goes to whichever actor is free.

Used by the sandbox pool (batches of programs over sandbox workers) and by evaluation (chunks of problems over
evaluation samplers). Items are handed out in order; results arrive in any order, each with its item.
"""
from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterable
from typing import Any, Optional, TypeVar

Item = TypeVar("Item")


class DispatchTimeout(TimeoutError):
    """An item got no result within the dispatcher's ``timeout_s`` (its actor hangs, or never started)."""


def dispatch(actors: list, items: Iterable[Item], submit: Callable[[Any, Item], Any],
             on_result: Callable[[Item, Any], None],
             on_error: Optional[Callable[[int, Item, Exception], Optional[Item]]] = None,
             timeout_s: Optional[float] = None) -> None:
    """Run every item on some actor of ``actors`` until all are done, one item per actor at a time.

    ``submit(actor, item)`` starts the work and returns its object reference; ``on_result(item, result)`` takes
    each result. A failed item goes to ``on_error(actor_index, item, exception)``, which may replace
    ``actors[actor_index]`` in place and return an item to run next (a retry) or None; without ``on_error`` the
    exception is raised. With ``timeout_s``, an item without a result that long after it was submitted fails with
    `DispatchTimeout` (its task is cancelled), so that an actor that hangs or never starts cannot stall the caller."""
    import ray

    queue = collections.deque(items)
    in_flight: dict[Any, tuple[int, Item, float]] = {}  # object ref -> (actor index, item, submitted at)
    idle = list(range(len(actors)))
    if not idle and queue:
        raise ValueError("dispatch needs at least one actor")
    while queue or in_flight:
        while queue and idle:
            index, item = idle.pop(), queue.popleft()
            in_flight[submit(actors[index], item)] = (index, item, time.monotonic())
        wait = None if timeout_s is None else max(0.0, min(t for _, _, t in in_flight.values()) + timeout_s
                                                  - time.monotonic())
        done, _ = ray.wait(list(in_flight), num_returns=1, timeout=wait)
        ref = done[0] if done else min(in_flight, key=lambda r: in_flight[r][2])  # none done: the oldest timed out
        index, item, _ = in_flight.pop(ref)
        try:
            if not done:
                ray.cancel(ref, force=False)
                raise DispatchTimeout(f"no result within {timeout_s:g} s")
            result = ray.get(ref)
        except Exception as exc:  # noqa: BLE001 - the caller decides what a failure means
            if on_error is None:
                raise
            retry = on_error(index, item, exc)
            if retry is not None:
                queue.appendleft(retry)
        else:
            on_result(item, result)
        idle.append(index)
