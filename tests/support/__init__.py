"""Helpers the test modules share: local servers, databases and seeded rows.

Test modules import from here, never from one another.
"""

from pathlib import Path

# The checkout the tests run from (its .env.example, README, pyproject.toml).
REPO_ROOT = Path(__file__).resolve().parents[2]
