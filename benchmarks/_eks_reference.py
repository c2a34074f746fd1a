"""Runs the reference eks 4.6.2 inside ITS OWN venv (never imported by the project).

Usage: REF_PYTHON _eks_reference.py JOB.json  -> prints one JSON line with timings.
JOB.json: {"csvs": [...], "save_file": "...", "smooth_param": float | null, "repeats": int}

Each repeat does what ``eks.singlecam_smoother.fit_eks_singlecam`` does, in its three phases
timed apart: read the CSVs into a MarkerArray, ``ensemble_kalman_smoother_singlecam`` (the
smoother and the s optimisation), ``DataFrame.to_csv``. The first repeat in a process
includes JAX compilation ("cold"); later ones are "warm".
"""

import json
import sys
import time

job = json.load(open(sys.argv[1]))
t0 = time.perf_counter()
from eks.marker_array import input_dfs_to_markerArray  # noqa: E402
from eks.singlecam_smoother import ensemble_kalman_smoother_singlecam  # noqa: E402
from eks.utils import format_data  # noqa: E402

import_s = time.perf_counter() - t0
runs, s_finals = [], None
for _ in range(job.get("repeats", 1)):
    start = time.perf_counter()
    input_dfs, keypoint_names = format_data(list(job["csvs"]))
    marker_array = input_dfs_to_markerArray([input_dfs], keypoint_names, [""])
    loaded = time.perf_counter()
    df, s_finals = ensemble_kalman_smoother_singlecam(
        marker_array=marker_array,
        keypoint_names=keypoint_names,
        smooth_param=job["smooth_param"],
        s_frames=None,
        blocks=[],
        avg_mode="median",
        var_mode="confidence_weighted_var",
    )
    smoothed = time.perf_counter()
    df.to_csv(job["save_file"])
    runs.append(
        {
            "load": loaded - start,
            "smooth": smoothed - loaded,
            "write": time.perf_counter() - smoothed,
            "total": time.perf_counter() - start,
        }
    )
print(json.dumps({"import_s": import_s, "runs": runs, "s": [float(v) for v in s_finals]}))
