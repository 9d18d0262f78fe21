"""A CPU-bound step mapped over forked processes, its results in order.

Ranking every personal reader before a send is pure Python on one core while
the machine has more; `forked_map` runs `work(item)` in N forked children and
yields the results in the items' order, so the caller sees what `map` would
give.

Forked, not spawned: a child starts with the parent's memory, so what the
parent built once (a fitted model, tens of MB) is shared, not pickled or
built again. Only the items and the results cross between processes. A fork
is safe only while the parent runs no thread of its own that holds a lock a
child could need, so the callers are commands that have not started any yet
(the CLI's send, before its sending processes); a web server never forks.

At most `2 × processes` items are in flight: the items can come from a
database cursor the caller keeps reading, and nothing holds them all. An error
in a child is raised in the parent, as `map` would raise it; a child that dies
(killed, out of memory) is an error too (`BrokenProcessPool`), never a wait
for ever.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from concurrent.futures import Future

__all__ = ["forked_map"]

Item = TypeVar("Item")
Result = TypeVar("Result")

# The work of this process when it is a child of `forked_map` (None in any other).
_work_in_child: Callable[[Any], Any] | None = None


def forked_map(
    work: Callable[[Item], Result],
    items: Iterable[Item],
    *,
    processes: int,
    in_child: Callable[[], None] | None = None,
) -> Iterator[Result]:
    """`work(item)` for each item, in order, computed in `processes` forked children.

    `in_child` runs once in each child before its first item (to let go of what
    must not be shared across a fork: `Engine.dispose(close=False)`). Items
    and results must pickle; `work` and `in_child` need not (a forked child
    has them in its memory). With one process the items are worked here, in
    this process, and `in_child` is not called.
    """
    if processes <= 1:
        yield from map(work, items)
        return
    # Imported here: 4 MB of modules that a send of trending digests never needs.
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    executor = ProcessPoolExecutor(
        max_workers=processes,
        mp_context=multiprocessing.get_context("fork"),
        initializer=_begin_child,
        initargs=(work, in_child),
    )
    try:
        in_flight: deque[Future[Result]] = deque()
        for item in items:
            in_flight.append(executor.submit(_work_one, item))
            if len(in_flight) >= 2 * processes:
                yield in_flight.popleft().result()
        while in_flight:
            yield in_flight.popleft().result()
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def _begin_child(work: Callable[[Any], Any], in_child: Callable[[], None] | None) -> None:
    global _work_in_child
    _work_in_child = work
    if in_child is not None:
        in_child()


def _work_one(item: Any) -> Any:
    assert _work_in_child is not None, "forked_map's work runs only in its children"
    return _work_in_child(item)
