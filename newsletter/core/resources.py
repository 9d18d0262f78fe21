"""The files that ship inside the package: the templates and the Alembic migrations.

In the source tree they are the top-level `templates/` and `migrations/` folders.
pyproject.toml installs them as the packages `newsletter.templates` and
`newsletter.migrations`, in a wheel as in an editable install, so
`importlib.resources` finds them wherever the code runs, whatever the working
directory.
"""

from __future__ import annotations

from importlib.resources import as_file, files
from pathlib import Path

from newsletter.core.errors import ConfigurationError

TEMPLATES_PACKAGE = "newsletter.templates"
MIGRATIONS_PACKAGE = "newsletter.migrations"


def _package_folder(package: str) -> Path:
    try:
        resource = files(package)
    except ModuleNotFoundError:
        raise ConfigurationError(
            f"the package {package} is missing from this installation; "
            "reinstall it (`make setup`, or `pip install -e .` in a checkout)"
        ) from None
    # Installed as plain files (wheel or editable), never zipped, so this is
    # the real folder and the context manager cleans up nothing.
    with as_file(resource) as path:
        return Path(path)


def templates_path() -> Path:
    """The folder of the bundled email and page templates."""
    return _package_folder(TEMPLATES_PACKAGE)


def migrations_path() -> Path:
    """The folder of the bundled Alembic environment and its `versions/`."""
    return _package_folder(MIGRATIONS_PACKAGE)
