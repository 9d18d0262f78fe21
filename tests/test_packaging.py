"""The package as users install it: the wheel carries its templates, migrations and sample day.

The slow test builds the wheel offline from a copy of the checkout, installs it
into a fresh virtual environment that sees the project's dependencies but not
the checkout, and runs `newsletter demo` from a directory outside it.
"""

from __future__ import annotations

import json
import mailbox
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

from newsletter.core.resources import migrations_path, templates_path
from newsletter.core.settings import load_settings
from newsletter.demo import DEMO_READERS
from tests.support import REPO_ROOT

# What the build reads; everything else in the checkout stays behind.
BUILD_INPUTS = (
    "pyproject.toml",
    "README.md",
    "newsletter",
    "subscribers",
    "templates",
    "migrations",
)
# Source folders installed under another package name (pyproject's package-dir).
MAPPED_FOLDERS = {"templates": "newsletter/templates", "migrations": "newsletter/migrations"}


def _files_under(folder: Path) -> set[str]:
    return {
        path.relative_to(folder).as_posix()
        for path in folder.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


def _clean_environment() -> dict[str, str]:
    # No PYTHONPATH (it could lead back to the checkout) and no NEWSLETTER_* settings.
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("PYTHON", "NEWSLETTER_", "VIRTUAL_ENV"))
    } | {"PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def _run(command: list[str | Path], *, cwd: Path, timeout: float = 120) -> str:
    result = subprocess.run(
        command,
        cwd=cwd,
        env=_clean_environment(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{command} failed:\n{output}"
    return output


def test_every_package_in_the_tree_is_listed_for_the_build() -> None:
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    setuptools = config["tool"]["setuptools"]
    in_tree = {
        init.parent.relative_to(REPO_ROOT).as_posix().replace("/", ".")
        for top in ("newsletter", "subscribers")
        for init in (REPO_ROOT / top).rglob("__init__.py")
    }
    mapped: dict[str, str] = setuptools["package-dir"]
    assert mapped == {target.replace("/", "."): source for source, target in MAPPED_FOLDERS.items()}
    assert set(setuptools["packages"]) == in_tree | set(mapped)


def test_the_editable_install_reads_templates_and_migrations_from_the_checkout() -> None:
    # So a template edit or a new migration counts at once, without reinstalling.
    assert templates_path() == REPO_ROOT / "templates"
    assert migrations_path() == REPO_ROOT / "migrations"


def test_newsletter_templates_dir_still_overrides_the_bundled_templates(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert load_settings().templates_dir == templates_path()
    monkeypatch.setenv("NEWSLETTER_TEMPLATES_DIR", str(tmp_path))
    assert load_settings().templates_dir == tmp_path


@pytest.mark.slow
def test_the_installed_wheel_runs_the_demo_outside_the_checkout(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    for name in BUILD_INPUTS:
        origin = REPO_ROOT / name
        if origin.is_dir():
            shutil.copytree(origin, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(origin, source / name)
    wheelhouse = tmp_path / "wheelhouse"
    pip = [sys.executable, "-m", "pip"]
    build_offline = ["--no-deps", "--no-build-isolation", "--no-index", "-q"]
    _run([*pip, "wheel", *build_offline, "--wheel-dir", wheelhouse, source], cwd=tmp_path)
    (wheel,) = wheelhouse.glob("paper_newsletter-*.whl")

    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert "newsletter/sample_data/sample_day.json" in names
    for folder, installed_as in MAPPED_FOLDERS.items():
        shipped = {name for name in names if name.startswith(installed_as + "/")}
        expected = {f"{installed_as}/{name}" for name in _files_under(REPO_ROOT / folder)}
        assert shipped == expected, f"{folder}/ and the wheel's {installed_as}/ differ"

    # A fresh environment that sees the project's dependencies through a .pth
    # file (no network needed), but neither the checkout nor its editable finder.
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp_path)
    python = venv / "bin" / "python"
    site_packages = Path(
        _run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            cwd=tmp_path,
        ).strip()
    )
    dependencies = {sysconfig.get_paths()[key] for key in ("purelib", "platlib")}
    (site_packages / "project_dependencies.pth").write_text(
        "".join(f"{path}\n" for path in sorted(dependencies)), encoding="utf-8"
    )
    _run(
        [*pip, "--python", python, "install", "--no-deps", "--no-index", "-q", wheel], cwd=tmp_path
    )

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = json.loads(
        _run(
            [
                python,
                "-c",
                "import json, sys, newsletter.templates as t, newsletter.migrations as m; "
                "print(json.dumps({'templates': t.__file__, 'migrations': m.__file__, "
                "'finders': [repr(f) for f in sys.meta_path]}))",
            ],
            cwd=elsewhere,
        )
    )
    for key in ("templates", "migrations"):
        assert Path(where[key]).is_relative_to(site_packages), where
    assert not any("editable" in finder.lower() for finder in where["finders"]), where

    outbox = elsewhere / "outbox"
    output = _run(
        [
            venv / "bin" / "newsletter",
            "demo",
            "--outbox",
            outbox,
            "--database-url",
            f"sqlite:///{elsewhere / 'demo.db'}",
        ],
        cwd=elsewhere,
    )
    assert "Traceback" not in output
    assert f"Sent {len(DEMO_READERS)}, failed 0, bounced 0." in output
    delivered = sorted(str(message["To"]) for message in mailbox.Maildir(outbox))
    assert len(delivered) == len(DEMO_READERS), delivered
    for address, _name in DEMO_READERS:
        assert any(address in to for to in delivered), (address, delivered)
    assert (outbox / "preview.html").stat().st_size > 0
