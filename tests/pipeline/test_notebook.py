"""The tutorial notebook runs top to bottom on tiny settings against the test server."""

from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "tutorial.ipynb"


def test_tutorial_notebook_executes(dj_connection, schema_prefix, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("ELP_TUTORIAL_TINY", "1")
    monkeypatch.setenv("ELP_TUTORIAL_DIR", str(tmp_path))
    # under the run's prefix, so the session fixture drops these schemas too
    monkeypatch.setenv("ELP_TUTORIAL_PREFIX", schema_prefix + "nb_")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError naming the failing cell
    outputs = "".join(
        out.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for out in cell.get("outputs", [])
    )
    assert "serious inspector findings: 0" in outputs
    assert "ensemble (EKS)" in outputs
    assert (tmp_path / "ensemble_traces.png").is_file()
    assert "3D error against ground truth" in outputs  # section 7: the calibrated rig
    assert (tmp_path / "traces_3d.png").is_file()
