"""Python's memory management where the pipeline's hot loops need a say in it."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def cycle_collection_paused() -> Iterator[None]:
    """Python's cycle collector off for a batch of work that makes no reference cycles.

    Ranking a batch of readers (and loading them, and storing their
    selections) allocates hundreds of thousands of small objects (profiles,
    picks, why lines) that form no cycles, and each of the collector's full
    passes walks every live object: a third of ranking's time went to it. The
    collector is back on when the block ends, if it was on. Nesting is fine.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


_frozen = False


def freeze_what_lives_on() -> None:
    """Leave the objects alive now out of every later cycle collection (once per process).

    Called as a process starts sending: what exists by then (modules,
    classes, settings, the engine) lives as long as the process, and the
    collector's full passes would walk it again and again while the send
    makes its many short-lived objects. Objects made later are collected as
    ever. A process forked after this shares those objects' pages with its
    parent untouched by its own collections.
    """
    global _frozen
    if not _frozen:
        _frozen = True
        gc.freeze()
