"""`newsletter --help` answers without loading the database, settings or web libraries.

A structural check, not a timing: the heavy libraries are what made the help
take seconds (see benchmarks/README.md, "CLI start-up").
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

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


def test_a_small_sqlite_command_loads_neither_alembic_nor_postgresql_nor_the_web(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    _modules_loaded_by("db", "upgrade")  # migrating does need Alembic; adding a reader does not
    loaded = _modules_loaded_by("subscribers", "add", "ada@example.org")
    assert "sqlmodel" in loaded  # the check sees what was imported
    assert not loaded & {"alembic", "psycopg", "fastapi", "uvicorn", "mjml", "jinja2"}, sorted(
        loaded & {"alembic", "psycopg", "fastapi", "uvicorn", "mjml", "jinja2"}
    )


def test_a_sending_worker_starts_without_the_ranking_libraries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every sending process pays its imports: numpy, scipy and scikit-learn were a
    # third of a worker's start-up, and a worker only reads stored selections.
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    _modules_loaded_by("db", "upgrade")
    loaded = _modules_loaded_by("worker", "--processes", "1")
    assert "aiosmtplib" in loaded  # the check sees what was imported
    assert not loaded & {"numpy", "scipy", "sklearn"}, sorted(
        loaded & {"numpy", "scipy", "sklearn"}
    )
