"""`newsletter --help` answers without loading the database, settings or web libraries.

A structural check, not a timing: the heavy libraries are what made the help
take seconds (see benchmarks/README.md, "CLI start-up").
"""

from __future__ import annotations

import subprocess
import sys

HEAVY = {"alembic", "fastapi", "pydantic", "pydantic_settings", "sqlalchemy", "sqlmodel"}

# Runs the console script's entry point, then names every top-level module loaded.
HELP_SCRIPT = """
import sys
from newsletter.cli import main

sys.argv = ["newsletter", *sys.argv[1:]]
try:
    main()
except SystemExit as stop:
    assert not stop.code, stop.code
print("loaded:", ",".join(sorted({name.partition(".")[0] for name in sys.modules})))
"""


def _modules_loaded_by(*args: str) -> set[str]:
    result = subprocess.run(
        [sys.executable, "-c", HELP_SCRIPT, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("loaded: "), result.stdout
    return set(last.removeprefix("loaded: ").split(","))


def test_the_root_help_loads_no_heavy_library() -> None:
    loaded = _modules_loaded_by("--help")
    assert "typer" in loaded  # the check sees what was imported
    assert not loaded & HEAVY, sorted(loaded & HEAVY)
