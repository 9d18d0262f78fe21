"""A daily machine-learning paper digest: ingest → rank → render → send."""

__version__ = "0.1.0"
