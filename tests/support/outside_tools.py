"""What a test does when an outside program it needs (a relay, a filter, a browser) is missing."""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest


def missing_tool(check: str, reason: str) -> NoReturn:
    """Skip the test, printing why; in CI (CI=true), which installs the tools, fail it instead."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI must run the {check}: {reason}")
    print(f"SKIPPED {check}: {reason}")
    pytest.skip(reason)


def installed_program(name: str, *places: str) -> str | None:
    """The executable `name` on PATH, else the first of `places` (sbin is not on every PATH)."""
    found = shutil.which(name)
    if found:
        return found
    return next((path for path in places if os.access(path, os.X_OK)), None)
