"""The engine, the NWB writer and the plotting core work without DataJoint installed.

Each check runs in a fresh interpreter in which ``import datajoint`` fails (as it does in a
venv made with ``pip install .`` and no extras), so a stray import anywhere below these
modules makes the test fail with that import's traceback.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

BLOCK_DATAJOINT = "import sys; sys.modules['datajoint'] = None; sys.modules['pymysql'] = None\n"

DATAJOINT_FREE = [
    "element_lightning_pose.engine",
    "element_lightning_pose.engine.training.single",
    "element_lightning_pose.engine.inference.predict",
    "element_lightning_pose.engine.eks",
    "element_lightning_pose.export.nwb",
    "element_lightning_pose.plotting",
    "element_lightning_pose.plotting.core",
    "element_lightning_pose.cli.train",
    "element_lightning_pose.cli.predict",
    "element_lightning_pose.cli.smooth",
    "element_lightning_pose.cli.plot",
]


@pytest.mark.parametrize("module", DATAJOINT_FREE)
def test_imports_without_datajoint(module):
    code = BLOCK_DATAJOINT + f"import {module}\nassert 'datajoint' not in [m for m in sys.modules if sys.modules[m]]\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]


def test_the_schema_modules_do_need_datajoint():
    """The block above is real: a module that imports DataJoint fails under it."""
    code = BLOCK_DATAJOINT + "import element_lightning_pose.dj_compat\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "datajoint" in result.stderr
