"""The documentation builds without warnings, and its generated reference pages match the code."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

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
