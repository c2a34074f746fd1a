"""`elp demo --rig` end to end at its smallest sizes, as a user runs it (a subprocess:
the demo activates the pipeline under its own prefix, which must not re-point this process's
tables). The network is barely trained here, so the 3D error is only checked to be finite and
inside the arena's scale; the calibration from board videos is checked to be sub-pixel."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import CHILD_PYTHONPATH

SMALLEST = [
    "--cameras",
    "3",  # two cameras of the ring face each other: a board is never seen by both
    "--frames",
    "40",
    "--labeled",
    "8",
    "--board-frames",
    "8",
    "--epochs",
    "2",
    "--resize",
    "64",
    "--backbone",
    "resnet18",
    "--min-likelihood",
    "0",  # a network trained for seconds is never confident: triangulate every prediction
]


def test_multiview_demo_runs_end_to_end(dj_connection, schema_prefix, tmp_path):
    env = {**os.environ, "PYTHONPATH": CHILD_PYTHONPATH, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "element_lightning_pose.cli", "demo", "--rig", "--out", str(tmp_path)]
    # under the run's prefix, so the session fixture drops these schemas too
    command += ["--prefix", schema_prefix + "mvdemo_", *SMALLEST]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "multi-camera demo summary" in done.stdout
    assert "3D error against ground truth" in done.stdout
    summary = json.loads((tmp_path / "summary.json").read_text())
    error = summary["error_3d"]
    assert all(math.isfinite(error[k]) for k in ("mean", "median", "p95"))
    assert error["mean"] < 400.0  # mm: the arena is 400 mm across, the cameras 700 mm away
    assert set(summary["calibration_error_px"]) == {"cam0", "cam1", "cam2"}
    assert max(summary["calibration_error_px"].values()) < 1.0
    assert set(summary["reprojection_error_px"]) == set(summary["pixel_error_px"]) == {"cam0", "cam1", "cam2"}
    assert all(math.isfinite(v) for v in summary["pixel_error_px"].values())
    assert summary["nwb_serious_findings"] == 0
    assert Path(summary["outputs"]["nwb"]).is_file()
    assert summary["nwb_3d"] == {"MultiCameraPoseEstimation": 1, "CalibratedCamera": 3}
    assert Path(summary["outputs"]["3D trace plot"]).stat().st_size > 10_000
    steps = summary["timings"]
    assert any(s.startswith("calibration") for s in steps) and any(s.startswith("NWB") for s in steps)
