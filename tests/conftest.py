"""Shared pytest fixtures.

The real example data (Lightning Pose's mirror-mouse-example) lives outside the repository in
``../shared/data``; ``LP_EXAMPLE_DATA`` overrides the location. In CI (``CI=true``) its
absence is a failure, elsewhere the tests that need it are skipped.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
# for child processes: this checkout's code first, then whatever the caller's path holds (packages
# installed with `pip --target`, as on a bare GPU machine, are found there)
CHILD_PYTHONPATH = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))


def _mirror_mouse_dir() -> Path:
    default = REPO_ROOT.parent / "shared" / "data" / "mirror-mouse-example"
    return Path(os.environ.get("LP_EXAMPLE_DATA", default))


@pytest.fixture(scope="session")
def mirror_mouse_dir() -> Path:
    """Path to the real mirror-mouse example project (90 labeled frames, 17 keypoints)."""
    path = _mirror_mouse_dir()
    if not (path / "CollectedData.csv").is_file():
        message = f"mirror-mouse example data not found at {path} (set LP_EXAMPLE_DATA)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def dandi_cli() -> str:
    """The DANDI CLI: ``$ELP_DANDI`` (scripts/test.sh installs it in a venv of its own), else
    ``dandi`` on PATH. Missing: a failure in CI, a skip elsewhere."""
    import shutil

    found = os.environ.get("ELP_DANDI") or shutil.which("dandi")
    if not found:
        message = "the DANDI CLI is not installed: set ELP_DANDI to a dandi executable (pip install dandi)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return found


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder this account cannot write: 0555 for an ordinary user; a read-only tmpfs for root
    (permissions do not stop root, a read-only mount does); skipped where neither is possible."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def elp(*args: str | os.PathLike, timeout: float = 600) -> subprocess.CompletedProcess:
    """``elp ARGS...`` as a user runs it: a separate process on this checkout's code, one thread."""
    env = dict(os.environ, PYTHONPATH=CHILD_PYTHONPATH, OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-m", "element_lightning_pose.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=REPO_ROOT,
    )
