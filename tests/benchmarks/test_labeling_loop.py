"""The simulated labeling loop of benchmarks/bench_labeling_loop.py, at its tiniest sizes.

The benchmark itself takes hours; this runs its whole loop (project, initial set, two rounds of
each strategy, oracle labels through the label store, training, held-out scoring, report) with
two short sessions and two optimizer steps per training, so that the script cannot rot.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from element_lightning_pose.engine.labeling.store import LabelStore
from element_lightning_pose.synthetic.sessions import load_session_project
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow

TINY = [
    "--seeds", "1", "--rounds", "2", "--styles", "plain,light", "--frames", "40", "--size", "64", "128",
    "--resize", "32", "64", "--steps", "2", "--initial", "4", "--per-round", "4",
]  # fmt: skip


@pytest.fixture
def bench(monkeypatch):
    # the script imports its neighbours (_common, bench_ood) as a script run from benchmarks/ does
    monkeypatch.syspath_prepend(str(REPO_ROOT / "benchmarks"))
    return importlib.import_module("bench_labeling_loop")


def test_the_loop_labels_what_each_strategy_picks_trains_scores_and_resumes(bench, tmp_path):
    out = tmp_path / "labeling_loop.md"
    argv = [*TINY, "--work", str(tmp_path / "work"), "--out", str(out)]
    assert bench.main(argv) == 0

    work = bench.run_loop(bench.parse_args([*argv, "--no-train"]))
    runs = bench.load_runs(work)
    assert set(runs) == {("initial", 0, 0)} | {(s, 0, r) for s in bench.STRATEGIES for r in (1, 2)}
    # by default only model-guided trains before the last round: k-means and uniform need no model
    assert {key for key, row in runs.items() if row.get("trained", True)} == {
        ("initial", 0, 0),
        ("model", 0, 1),
        *[(s, 0, 2) for s in bench.STRATEGIES],
    }
    assert "held_out" not in runs[("kmeans", 0, 1)] and runs[("kmeans", 0, 1)]["n_labels"] == 8
    assert not (work / "seed0" / "kmeans" / "r1" / "model").exists()
    source = load_session_project(work / "seed0" / "sessions")
    assert source.train_sessions == ("pool_plain", "pool_light")
    initial = {(p["session"], p["frame"]) for p in runs[("initial", 0, 0)]["selected"]}
    assert len(initial) == 4
    for strategy in bench.STRATEGIES:
        first = {(p["session"], p["frame"]) for p in runs[(strategy, 0, 1)]["selected"]}
        row = runs[(strategy, 0, 2)]
        picked = {(p["session"], p["frame"]) for p in row["selected"]}
        assert len(first) == len(picked) == 4, strategy
        assert not picked & (initial | first), f"{strategy} picked a labeled frame again"
        assert row["n_labels"] == 12 and row["steps"] == 2
        assert set(row["held_out"]) >= {"mean", "p95", "gross25"}
        assert set(row["per_session"]) == {"held_plain", "held_light"}
        assert 0 <= row["selection"]["picked_error_percentile"] <= 100
        # the picks of a round after an untrained one are scored by round 0's model, the newest there is
        assert row["selection"]["scored_by_round"] == (1 if strategy == "model" else 0)
        # the oracle's labels are the ground truth of the frames picked, saved in the project's table
        table = LabelStore(work / "seed0" / strategy / "r2" / "project").tables[0]
        assert len(table.image_paths) == len(set(table.image_paths)) == 12
        for image, points in zip(table.image_paths, table.keypoints):
            _, session, name = image.split("/")
            truth, _ = source.ground_truth(source.video(session))
            np.testing.assert_allclose(points, truth[int(name.removeprefix("img").removesuffix(".png"))], atol=1e-6)
    assert "model-guided" not in runs[("kmeans", 0, 1)]["selected"][0]["reason"]
    assert all("on " in p["reason"] for p in runs[("model", 0, 2)]["selected"])  # criterion on a keypoint

    text = out.read_text()
    assert "| model - kmeans | 0 |" in text and "Target (model-guided p95 below k-means'" in text
    assert "Trained: final round only for k-means and uniform" in text
    assert "| 0 | kmeans | " in text and "| not trained |" in text
    assert "| 0 | model (round 1) | 8 |" in text  # the ranking of its own errors, per model that selected
    assert "Intel" in text or "AMD" in text or "CPU" in text

    # a rerun trains nothing and keeps the hand-written reading of the results file
    out.write_text(text + "\n## Reading these numbers (written by hand after the run)\n\nA note.\n")
    stamps = {path: path.stat().st_mtime_ns for path in (work / "runs").glob("*.json")}
    assert bench.main(argv) == 0
    assert {path: path.stat().st_mtime_ns for path in (work / "runs").glob("*.json")} == stamps
    assert out.read_text().rstrip().endswith("A note.")
