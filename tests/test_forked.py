"""`core.forked.forked_map`: a step mapped over forked processes, as `map` would give it."""

from __future__ import annotations

import os
from concurrent.futures.process import BrokenProcessPool

import pytest

from newsletter.core.forked import forked_map

# Set by `in_child` in a child only: the test process keeps None.
_child_mark: str | None = None


def _mark_child() -> None:
    global _child_mark
    _child_mark = f"child {os.getpid()}"


def test_results_come_in_the_items_order_from_other_processes() -> None:
    shared = list(range(1000))  # built here, read by the children without being sent

    def work(item: int) -> tuple[int, int, int, str | None]:
        return item, sum(shared[:item]), os.getpid(), _child_mark

    results = list(forked_map(work, range(25), processes=2, in_child=_mark_child))

    assert [(item, total) for item, total, _, _ in results] == [
        (item, sum(range(item))) for item in range(25)
    ]
    pids = {pid for _, _, pid, _ in results}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2
    # Each child ran `in_child` before its first item; this process never did.
    assert {mark for _, _, _, mark in results} == {f"child {pid}" for pid in pids}
    assert _child_mark is None


def test_one_process_works_here_and_does_not_call_in_child() -> None:
    results = list(
        forked_map(
            lambda item: (item * 2, os.getpid()), [3, 1, 2], processes=1, in_child=_mark_child
        )
    )

    assert results == [(6, os.getpid()), (2, os.getpid()), (4, os.getpid())]
    assert _child_mark is None


def test_an_error_in_a_child_is_raised_here_as_it_was() -> None:
    def work(item: int) -> int:
        if item == 7:
            raise ValueError(f"item {item} is not welcome")
        return item

    results = forked_map(work, range(20), processes=2)
    with pytest.raises(ValueError, match="item 7 is not welcome"):
        list(results)


def test_a_child_that_dies_is_an_error_not_a_wait() -> None:
    def work(item: int) -> int:
        if item == 3:
            os._exit(9)  # as a child killed by the OOM killer would end
        return item

    with pytest.raises(BrokenProcessPool):
        list(forked_map(work, range(10), processes=2))
