"""Run eks 4.6.2's nonlinear multi-camera smoother in its own venv (never imported by the project).

    python _eks_multicam_runner.py CALIBRATION.toml OUT_DIR NAME=CSV [NAME=CSV ...]

Calls ``eks.multicam_smoother.fit_eks_multicam(input_source={camera: [csv, ...]},
calibration=CALIBRATION.toml)`` (the ensemble per camera, eks's defaults otherwise) and writes
``OUT_DIR/multicam_3d_results.csv`` (eks's 3D latents) and ``OUT_DIR/seconds.txt``.
"""

import sys
import time
from pathlib import Path

from eks.multicam_smoother import fit_eks_multicam


def main(calibration: str, out_dir: str, items: list[str]) -> None:
    files: dict[str, list[str]] = {}
    for item in items:
        name, path = item.split("=", 1)
        files.setdefault(name, []).append(path)
    start = time.perf_counter()
    fit_eks_multicam(input_source=files, save_dir=out_dir, calibration=calibration)
    seconds = time.perf_counter() - start
    Path(out_dir, "seconds.txt").write_text(f"{seconds}\n")
    print(f"eks fit_eks_multicam: {seconds:.1f} s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
