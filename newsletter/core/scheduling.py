"""How a sending process asks the operating system's scheduler to treat it."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def as_batch_work() -> Iterator[None]:
    """Run the block as batch work for Linux's scheduler (SCHED_BATCH), then as before.

    A send is throughput work that nobody waits on message by message, while
    the processes beside it on the machine are waited on: a relay on the same
    host (Postfix), the web server answering sign-ups, the database. Under
    the default policy a sending process that wakes for a relay's reply takes
    the core from the relay mid-message, so the relay's next replies come
    late, and with several sending processes on few cores the relay idles
    between them (benchmarks/README.md has the figures). As batch work it
    gets the same share of the CPU (it is never starved: that is SCHED_IDLE,
    not this), but does not preempt others when it wakes.

    Only a thread under the ordinary policy is changed (never a real-time or
    idle one), and it is put back as it was; elsewhere than Linux, nothing
    is done. Applies to the calling thread (the event loop's).
    """
    changed = False
    if hasattr(os, "SCHED_BATCH"):  # Linux's
        with contextlib.suppress(OSError):
            if os.sched_getscheduler(0) == os.SCHED_OTHER:
                os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
                changed = True
    try:
        yield
    finally:
        if changed:
            with contextlib.suppress(OSError):
                os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
