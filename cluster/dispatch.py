"""The one dispatcher of work to a pool of Ray actors: each item goes to whichever actor is free.

Used by the sandbox pool (batches of programs over sandbox workers) and by evaluation (chunks of problems over
evaluation samplers). Items are handed out in order; results arrive in any order, each with its item.
"""
from __future__ import annotations

import collections
from collections.abc import Callable, Iterable
from typing import Any, Optional, TypeVar

Item = TypeVar("Item")


def dispatch(actors: list, items: Iterable[Item], submit: Callable[[Any, Item], Any],
             on_result: Callable[[Item, Any], None],
             on_error: Optional[Callable[[int, Item, Exception], Optional[Item]]] = None) -> None:
    """Run every item on some actor of ``actors`` until all are done, one item per actor at a time.

    ``submit(actor, item)`` starts the work and returns its object reference; ``on_result(item, result)`` takes
    each result. A failed item goes to ``on_error(actor_index, item, exception)``, which may replace
    ``actors[actor_index]`` in place and return an item to run next (a retry) or None; without ``on_error`` the
    exception is raised."""
    import ray

    queue = collections.deque(items)
    in_flight: dict[Any, tuple[int, Item]] = {}  # object ref -> (actor index, item)
    idle = list(range(len(actors)))
    if not idle and queue:
        raise ValueError("dispatch needs at least one actor")
    while queue or in_flight:
        while queue and idle:
            index, item = idle.pop(), queue.popleft()
            in_flight[submit(actors[index], item)] = (index, item)
        done, _ = ray.wait(list(in_flight), num_returns=1)
        index, item = in_flight.pop(done[0])
        try:
            result = ray.get(done[0])
        except Exception as exc:  # noqa: BLE001 - the caller decides what a failure means
            if on_error is None:
                raise
            retry = on_error(index, item, exc)
            if retry is not None:
                queue.appendleft(retry)
        else:
            on_result(item, result)
        idle.append(index)
