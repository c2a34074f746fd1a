"""Run aniposelib 0.8.0 on one problem, in its own venv (never imported by the project).

    python _aniposelib_runner.py CALIBRATION.toml PROBLEM.npz OUT.npz [METHOD ...]
    python _aniposelib_runner.py calibrate OUT.toml NAME=VIDEO [NAME=VIDEO ...]

PROBLEM.npz: ``pixels`` (C, T, K, 2) with NaN for dropped points, ``scores`` (C, T, K) and
``edges`` (E, 2) (limb constraints of triangulate_optim). Methods, as anipose calls them:

* ``ransac``: ``triangulate_ransac`` (every camera subset per point);
* ``optim``: ``triangulate_optim(init_ransac=True, constraints=edges, scores=...)``, i.e.
  RANSAC then ``optim_points`` (smoothness + limb lengths + soft-l1 reprojection); its time
  includes the RANSAC initialisation it needs;
* ``optim_dlt``: ``triangulate_optim(init_ransac=False, ...)`` (plain triangulation start).

aniposelib 0.8.0 crashes (``jnp.stack`` of no camera) on a point that no camera sees, so
those points are left out of the RANSAC call and reported NaN, as it would report them.
OUT.npz: ``<method>_points`` (T, K, 3), ``<method>_seconds``.
"""

import sys
import time

import numpy as np
from aniposelib.cameras import CameraGroup


def ransac(group, pixels):
    n_cams, n_frames, n_joints, _ = pixels.shape
    flat = pixels.reshape(n_cams, -1, 2)
    seen = np.isfinite(flat[..., 0]).any(axis=0)
    p3ds = np.full((flat.shape[1], 3), np.nan)
    p2ds = np.full(flat.shape, np.nan)
    out3, _, out2, _ = group.triangulate_ransac(flat[:, seen], progress=False)
    p3ds[seen], p2ds[:, seen] = out3, out2
    return p3ds.reshape(n_frames, n_joints, 3), p2ds.reshape(pixels.shape)


def main(calibration: str, problem: str, out: str, methods: list[str]) -> None:
    group = CameraGroup.load(calibration)
    data = np.load(problem)
    pixels, scores = data["pixels"], data["scores"]
    edges = data["edges"].tolist()
    results = {}

    def save(name, points, seconds):
        results[f"{name}_points"], results[f"{name}_seconds"] = np.asarray(points, float), np.array(seconds)
        print(f"aniposelib {name}: {seconds:.1f} s", flush=True)
        np.savez(out, **results)

    start = time.perf_counter()
    p3ds, p2ds = ransac(group, pixels)
    ransac_seconds = time.perf_counter() - start
    save("ransac", p3ds, ransac_seconds)
    if "optim" in methods:
        start = time.perf_counter()
        points = group.optim_points(p2ds, p3ds, constraints=edges, scores=scores, verbose=False)
        save("optim", points, ransac_seconds + time.perf_counter() - start)
    if "optim_dlt" in methods:
        start = time.perf_counter()
        points = group.triangulate_optim(pixels, init_ransac=False, constraints=edges, scores=scores)
        save("optim_dlt", points, time.perf_counter() - start)


def calibrate(out: str, videos: list[str]) -> None:
    """``calibrate OUT.toml NAME=VIDEO ...``: ``calibrate_videos`` with the benchmark's board."""
    from aniposelib.boards import CharucoBoard

    names = [v.split("=", 1)[0] for v in videos]
    board = CharucoBoard(7, 5, square_length=50.0, marker_length=37.0, marker_bits=4, dict_size=50)
    group = CameraGroup.from_names(names)
    start = time.perf_counter()
    error, _ = group.calibrate_videos([[v.split("=", 1)[1]] for v in videos], board, verbose=False)
    seconds = time.perf_counter() - start
    group.metadata = {"error": float(error), "seconds": seconds}
    group.dump(out)
    print(f"aniposelib calibrate_videos: error {error:.3f} px, {seconds:.1f} s", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "calibrate":
        calibrate(sys.argv[2], sys.argv[3:])
    else:
        main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:] or ["ransac", "optim", "optim_dlt"])
