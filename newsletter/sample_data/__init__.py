"""The bundled sample day: 36 invented papers in the Hugging Face Daily Papers shape.

`make demo` ingests it, tests parse it, and benchmarks use the same generator
to make days of any size.
"""

from __future__ import annotations

from datetime import date
from importlib.resources import as_file, files
from pathlib import Path

from newsletter.sample_data.generator import generate_daily_papers

__all__ = [
    "SAMPLE_DAY",
    "SAMPLE_PAPER_COUNT",
    "SAMPLE_SEED",
    "generate_daily_papers",
    "sample_day_path",
]

SAMPLE_DAY = date(2026, 11, 27)
SAMPLE_PAPER_COUNT = 36
SAMPLE_SEED = 20261127
SAMPLE_FILE_NAME = "sample_day.json"


def sample_day_path() -> Path:
    """The path of the bundled `sample_day.json`."""
    resource = files(__name__).joinpath(SAMPLE_FILE_NAME)
    # The package is installed as plain files (editable or wheel), never zipped,
    # so the context manager hands back the real path and cleans up nothing.
    with as_file(resource) as path:
        return Path(path)
