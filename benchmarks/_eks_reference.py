"""Runs the reference eks 4.6.2 inside ITS OWN venv (never imported by the project).

Usage: REF_PYTHON _eks_reference.py JOB.json  -> prints one JSON line with timings.
JOB.json: {"csvs": [...], "save_file": "...", "smooth_param": float | null, "repeats": int}
The first call in a process includes JAX compilation ("cold"); later ones are "warm".
"""

import json
import sys
import time

job = json.load(open(sys.argv[1]))
t0 = time.perf_counter()
from eks.singlecam_smoother import fit_eks_singlecam  # noqa: E402  (import cost timed apart)

import_s = time.perf_counter() - t0
times, s_finals = [], None
for _ in range(job.get("repeats", 1)):
    start = time.perf_counter()
    _, s_finals, _, _ = fit_eks_singlecam(
        input_source=list(job["csvs"]), save_file=job["save_file"], smooth_param=job["smooth_param"]
    )
    times.append(time.perf_counter() - start)
print(json.dumps({"import_s": import_s, "times_s": times, "s": [float(v) for v in s_finals]}))
