"""Runs lightning-pose-app's k-means frame selection inside its own venv; prints one JSON line.

    <venv>/bin/python benchmarks/_lp_app_selection_runner.py VIDEO N

Called by ``bench_selection.py``. Only this venv's packages are imported (never the project's):
the timing covers the app's own function, ``frame_selection_kmeans_impl`` (read every frame,
motion energy, PCA, scikit-learn's KMeans), with the configuration the app uses by default.
"""

from __future__ import annotations

import importlib.metadata
import json
import resource
import sys
import time
from pathlib import Path

from litpose_app.config import Config
from litpose_app.utils.video.frame_selection import frame_selection_kmeans_impl


def resident_mib() -> float:
    """This process's resident memory now (MiB)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 2**20


def main() -> None:
    video, n = Path(sys.argv[1]), int(sys.argv[2])
    before = resident_mib()  # after the imports: the call's own memory is the peak above this
    start = time.perf_counter()
    frames = frame_selection_kmeans_impl(Config(), video, n)
    seconds = time.perf_counter() - start
    report = {
        "seconds": seconds,
        "frames": [int(f) for f in frames],
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "added_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before,
        "version": importlib.metadata.version("lightning-pose-app"),
        "sklearn": importlib.metadata.version("scikit-learn"),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
