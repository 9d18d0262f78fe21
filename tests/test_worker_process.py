"""The worker child of `newsletter serve`: same settings, bounded restarts, a stop that ends it."""

from __future__ import annotations

import logging
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from newsletter.core.settings import Settings, SmtpSecurity, load_settings, settings_environment
from newsletter.delivery.worker_process import WorkerProcess


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    """Poll the condition until it holds, or fail by the deadline."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout:.0f} s"
        time.sleep(0.01)


def test_the_child_environment_rebuilds_the_same_settings(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = settings.model_copy(
        update={
            "smtp_security": SmtpSecurity.STARTTLS,
            "smtp_extra_relays": ["relay-b:2525", "relay-c"],
            "topics": ["LLMs", "Theory"],
            "admin_token": "a-token-for-the-child-0123456789",
            "send_lease_seconds": 12.5,
        }
    )
    for name, value in settings_environment(original).items():
        monkeypatch.setenv(name, value)

    rebuilt = load_settings()

    assert rebuilt.model_dump() == original.model_dump()


def test_a_child_that_keeps_dying_is_restarted_a_bounded_number_of_times(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="newsletter.worker_process")
    child = WorkerProcess(
        settings,
        command=[sys.executable, "-c", "raise SystemExit(3)"],
        max_restarts=2,
        first_restart_delay_seconds=0.01,
    )
    child.start()
    wait_until(lambda: not child.watching, "giving up on the child")

    assert child.restarts == 2
    assert child.stop() == 3
    assert caplog.text.count("exited with status 3; starting it again") == 2
    assert "not starting it again" in caplog.text


def test_stop_kills_a_child_that_ignores_sigterm(settings: Settings, tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    stubborn = (
        "import pathlib, signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"pathlib.Path({str(ready)!r}).write_text('ready')\n"
        "time.sleep(60)\n"
    )
    child = WorkerProcess(
        settings, command=[sys.executable, "-c", stubborn], stop_grace_seconds=0.5
    )
    child.start()
    wait_until(ready.exists, "the child ignoring SIGTERM")

    assert child.stop() == -signal.SIGKILL
    assert not child.watching
