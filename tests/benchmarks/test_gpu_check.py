"""benchmarks/gpu_check.py runs end to end on the CPU at tiny sizes, so it is known to work
before a GPU is at hand (on one it runs with ``--device cuda`` on mirror-mouse)."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import REPO_ROOT


def test_gpu_check_runs_on_the_cpu(tmp_path):
    out = tmp_path / "gpu.md"
    run = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", "--device", "cpu", "--tiny", "--out", str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    text = out.read_text()
    for run_name in ("supervised", "semi-supervised", "context", "supervised bf16"):
        assert f"| {run_name} |" in text
    assert "cpu vs CPU keypoints" in text and "median 0.0000 px" in text  # one checkpoint, one device: identical
    assert "bf16 training" in text and "litpose" in text
