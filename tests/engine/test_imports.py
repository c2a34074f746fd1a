"""The engine, the NWB writer and the plotting core work without DataJoint installed.

Each check runs in a fresh interpreter in which ``import datajoint`` fails (as it does in a
venv made with ``pip install .`` and no extras), so a stray import anywhere below these
modules makes the test fail with that import's traceback. The engine's modules are found by
walking the package, so a new module is checked without being listed here.
"""

from __future__ import annotations

import subprocess
import sys

BLOCK_DATAJOINT = "import sys; sys.modules['datajoint'] = None; sys.modules['pymysql'] = None\n"

# every module of these packages, found at run time by pkgutil.walk_packages
DATAJOINT_FREE_PACKAGES = [
    "element_lightning_pose.engine",
    "element_lightning_pose.synthetic",
    "element_lightning_pose.plotting",
    "element_lightning_pose.export.nwb",
]
# and these modules (their packages also hold modules that do import DataJoint)
DATAJOINT_FREE_MODULES = [
    "element_lightning_pose.plotting.core",
    "element_lightning_pose.cli.train",
    "element_lightning_pose.cli.predict",
    "element_lightning_pose.cli.smooth",
    "element_lightning_pose.cli.plot",
    "element_lightning_pose.cli.calibrate",
    "element_lightning_pose.cli.triangulate",
]

WALK_AND_IMPORT = """
import importlib, pkgutil
checked = []
for package in {packages!r}:
    root = importlib.import_module(package)
    names = [package] + [m.name for m in pkgutil.walk_packages(root.__path__, package + ".")]
    for name in names:
        importlib.import_module(name)
        checked.append(name)
for name in {modules!r}:
    importlib.import_module(name)
    checked.append(name)
loaded = [m for m in sys.modules if sys.modules[m] and m.split(".")[0] in ("datajoint", "pymysql")]
assert not loaded, loaded
print("CHECKED", len(checked), " ".join(checked))
"""


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_every_engine_module_imports_without_datajoint():
    code = BLOCK_DATAJOINT + WALK_AND_IMPORT.format(packages=DATAJOINT_FREE_PACKAGES, modules=DATAJOINT_FREE_MODULES)
    result = _run(code)
    assert result.returncode == 0, result.stderr[-3000:]
    checked = result.stdout.split("CHECKED", 1)[1].split()[1:]
    # the walk really walked: every engine subpackage and a module deep inside each
    for name in (
        "element_lightning_pose.engine.data.keypoints",
        "element_lightning_pose.engine.training.entry",
        "element_lightning_pose.engine.inference.predict",
        "element_lightning_pose.engine.eks.singleview",
        "element_lightning_pose.engine.multicam.smoother",
        "element_lightning_pose.engine.networks.context",
        "element_lightning_pose.synthetic.rig_project",
    ):
        assert name in checked


def test_the_schema_side_does_need_datajoint():
    """The block above is real: a module that imports DataJoint fails under it."""
    result = _run(BLOCK_DATAJOINT + "import element_lightning_pose.dj_compat\n")
    assert result.returncode != 0 and "datajoint" in result.stderr
