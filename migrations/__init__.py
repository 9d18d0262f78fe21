"""The Alembic schema history; installed as the package `newsletter.migrations`."""
