"""The forked children of `--processes N` (`ForkedChild`): set up as a subprocess would be.

Real forks of the test process, each running a small function in place of
the `newsletter` command: the exit status it returns, end of file on its
standard input once this process closes its end (and only then, even with a
sibling alive), SIGTERM, and the environment it is given.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from newsletter.delivery.worker_process import ForkedChild

WAIT_SECONDS = 30


def read_until_end_of_file(_command: Sequence[str]) -> int:
    """A child that blocks until its standard input closes, then exits 5."""
    while os.read(0, 1024):
        pass
    return 5


def test_a_forked_child_exits_with_the_status_its_command_returned() -> None:
    child = ForkedChild(["newsletter", "send"], dict(os.environ), lambda command: len(command))

    assert child.wait(WAIT_SECONDS) == 2
    assert child.poll() == 2


def test_a_forked_child_stops_when_this_process_closes_its_input_even_beside_a_sibling() -> None:
    first = ForkedChild(["first"], dict(os.environ), read_until_end_of_file)
    second = ForkedChild(["second"], dict(os.environ), read_until_end_of_file)
    try:
        # It cannot end before its input closes: it reads it until end of file.
        with pytest.raises(subprocess.TimeoutExpired):
            first.wait(0.2)

        first.stdin.close()  # the second child was forked after: it must not hold this pipe too
        assert first.wait(WAIT_SECONDS) == 5
        assert second.poll() is None
    finally:
        second.stdin.close()
    assert second.wait(WAIT_SECONDS) == 5


def test_terminate_ends_a_forked_child_by_sigterm() -> None:
    child = ForkedChild(["blocked"], dict(os.environ), read_until_end_of_file)
    try:
        child.terminate()
        assert child.wait(WAIT_SECONDS) == -signal.SIGTERM
    finally:
        child.stdin.close()
    child.terminate()  # ended and reaped: nothing is signalled (its pid may be another's)


def test_a_forked_child_runs_in_the_environment_it_is_given(tmp_path: Path) -> None:
    seen = tmp_path / "seen"

    def run(command: Sequence[str]) -> int:
        seen.write_text(f"{sorted(os.environ)} {os.getsid(0) == os.getpid()} {command[0]}")
        return 0

    child = ForkedChild(["newsletter"], {"NEWSLETTER_SMTP_PORT": "2525"}, run)

    assert child.wait(WAIT_SECONDS) == 0
    # Only what it was given, and a session of its own (a terminal's Ctrl-C is the parent's).
    assert seen.read_text() == "['NEWSLETTER_SMTP_PORT'] True newsletter"


def test_a_forked_child_whose_command_raises_exits_1() -> None:
    def broken(_command: Sequence[str]) -> int:
        raise RuntimeError("a bug in the child")

    child = ForkedChild(["newsletter"], dict(os.environ), broken)

    assert child.wait(WAIT_SECONDS) == 1
