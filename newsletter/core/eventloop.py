"""The event loop the commands run on: uvloop where it is installed, else asyncio's own.

A send spends a fifth of its CPU in the event loop and its socket
transports (benchmarks/README.md); uvloop does that work in C. uvicorn
picks uvloop by itself when it is installed, so the web server and the
commands run on the same loop. Where uvloop cannot be installed (Windows),
asyncio's loop runs the same code: `connection.py` relies only on what
both loops do, and the SMTP tests (marked `both_event_loops`) run on each.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """What makes a new event loop: uvloop's if it imports, asyncio's otherwise."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop
    return uvloop.new_event_loop


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to its end on a new loop (as `asyncio.run`, on `loop_factory`'s loop)."""
    # asyncio.Runner takes a loop factory from Python 3.11 on (asyncio.run only from 3.12).
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(coroutine)
