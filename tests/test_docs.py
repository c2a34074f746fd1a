"""The documentation builds without warnings, and its generated reference pages match the code."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

REPO = REPO_ROOT  # the repository root
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _generator():
    spec = importlib.util.spec_from_file_location("gen_reference_docs", REPO / "scripts" / "gen_reference_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("page", ["parameters.md", "cli.md"])
def test_generated_page_is_up_to_date(page):
    generator = _generator()
    committed = (REPO / "docs" / page).read_text()
    assert committed == generator.PAGES[page](), (
        f"docs/{page} differs from the code: run `python scripts/gen_reference_docs.py` and commit it"
    )


def test_parameter_page_lists_every_parameter_with_its_default():
    from element_lightning_pose.engine.config import parameter_reference

    text = (REPO / "docs" / "parameters.md").read_text()
    for row in parameter_reference():
        assert f"| `{row['field']}` |" in text
        assert f"`{row['default']}`" in text


def test_mkdocs_builds_strict(tmp_path):
    if importlib.util.find_spec("mkdocs") is None:
        message = "mkdocs is not installed (pip install -e '.[dev]')"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    site = tmp_path / "site"
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--config-file",
            str(REPO / "mkdocs.yml"),
            "--site-dir",
            str(site),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr[-4000:]
    for page in (
        "index.html",
        "concepts/index.html",
        "parameters/index.html",
        "cli/index.html",
        "api/index.html",
        "schemas/index.html",
        "plotting/index.html",
        "img/traces_eks.png",
    ):
        assert (site / page).is_file(), page
    # the API pages are rendered from the docstrings (mkdocstrings), schema modules included
    assert "load_members" in (site / "api" / "index.html").read_text()
    schemas = (site / "schemas" / "index.html").read_text()
    assert "VideoSet" in schemas and "insert_project" in schemas and "EnsembleSmoothing" in schemas
    assert "scripts/demo.sh" in (site / "index.html").read_text()


def tracked_text_files() -> list[Path]:
    """The repository's tracked files that read as UTF-8 text (skipped outside a git checkout)."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=False)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    files = []
    for name in listed.stdout.decode().split("\0"):
        path = REPO_ROOT / name
        if name and path.is_file() and path.suffix not in {".png", ".jpg", ".mp4", ".gz", ".h5", ".slp"}:
            files.append(path)
    return files


def test_no_tracked_file_holds_a_merge_conflict():
    """A conflict resolved by committing both sides once reached docs/app.md unseen."""
    markers = re.compile(r"^(<{7} |={7}$|>{7} )", re.MULTILINE)
    conflicted = [
        str(path.relative_to(REPO_ROOT))
        for path in tracked_text_files()
        if markers.search(path.read_text(encoding="utf-8", errors="replace"))
    ]
    assert conflicted == []


def test_every_app_page_has_its_screenshot_on_the_app_page():
    """docs/app.md links a screenshot of every page the app serves (the browser tests take them),
    and every screenshot kept is linked."""
    page = (REPO_ROOT / "docs" / "app.md").read_text()
    linked = set(re.findall(r"\]\(img/app/([\w.-]+)\.png\)", page))
    on_disk = {path.stem for path in (REPO_ROOT / "docs" / "img" / "app").glob("*.png")}
    pages = {path.stem for path in (REPO_ROOT / "element_lightning_pose" / "app" / "templates").glob("*.html")}
    assert linked == on_disk
    assert pages - {"base", "message"} <= linked
