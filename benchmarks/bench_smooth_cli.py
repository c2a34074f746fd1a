#!/usr/bin/env python
"""`elp smooth` end to end against eks 4.6.2, each a whole process, side by side in one run.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_smooth_cli.py [--frames 10000] [--repeats 3]

The ensemble is bench_eks's synthetic one (10,000 frames x 10 keypoints x 5 members by
default), written as member CSVs once. Timed from process start to smoothed CSV written,
imports included, automatic s on both sides (each side's default):

* ours: ``elp smooth MEMBERS... -o OUT``;
* eks 4.6.2: ``_eks_reference.py`` in its own venv (bench_eks's ``ensure_reference``), which
  does what its ``fit_eks_singlecam`` does: read the CSVs, smooth (s optimised), ``to_csv``.

Processes alternate, the best of ``--repeats`` of each is kept (the machine is shared). The
accuracy of the two smoothers is bench_eks's subject (results/eks.md), not this file's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import RESULTS, THREADS, header, markdown_table, thread_env, write_results

# bench_eks (imported next) gives the BLAS variables it finds unset 2 threads: this run's are OMP_NUM_THREADS's
for _var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, str(THREADS))
from _eks_synthetic import make_ensemble  # noqa: E402
from bench_eks import ensure_reference, write_members  # noqa: E402

HERE = Path(__file__).resolve().parent


def timed(command: list[str], env: dict[str, str]) -> tuple[float, str]:
    """Wall seconds of one process and its last stdout line."""
    started = time.perf_counter()
    done = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
    return time.perf_counter() - started, (done.stdout.strip().splitlines() or [""])[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=10_000)
    parser.add_argument("--keypoints", type=int, default=10)
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3, help="alternations of the two processes (best kept)")
    parser.add_argument("--ref-venv", type=Path, default=Path(os.environ.get("EKS_REF_VENV", "/tmp/eks-ref-venv")))
    parser.add_argument("--out", type=Path, default=RESULTS / "smooth_cli.md")
    args = parser.parse_args()

    python, ref_error = ensure_reference(args.ref_venv)
    elp = Path(sys.executable).parent / "elp"
    ours_s: list[float] = []
    ref_s: list[float] = []
    ref_inside: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = make_ensemble(n_frames=args.frames, n_keypoints=args.keypoints, n_members=args.members, seed=0)
        csvs = write_members(data, work / "members")
        job = work / "ref.json"
        job.write_text(
            json.dumps({"csvs": [str(c) for c in csvs], "save_file": str(work / "ref.csv"), "smooth_param": None})
        )
        ref_env = {
            **thread_env(),
            "JAX_PLATFORMS": "cpu",
            "XLA_FLAGS": f"--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads={THREADS}",
        }
        for _ in range(args.repeats):
            seconds, _ = timed([str(elp), "smooth", *map(str, csvs), "-o", str(work / "ours.csv")], thread_env())
            ours_s.append(seconds)
            print(f"elp smooth {seconds:.2f} s", flush=True)
            if python is not None:
                seconds, report = timed([str(python), str(HERE / "_eks_reference.py"), str(job)], ref_env)
                ref_s.append(seconds)
                ref_inside.append(json.loads(report))
                print(f"eks 4.6.2 {seconds:.2f} s", flush=True)

    ours_best = min(ours_s)
    rows = [("`elp smooth` (process)", f"{ours_best:.2f}", ", ".join(f"{s:.2f}" for s in ours_s), "")]
    lines = [
        *header("`elp smooth` end to end vs eks 4.6.2"),
        f"Synthetic ensemble (bench_eks's): {args.frames} frames x {args.keypoints} keypoints x {args.members} members, "
        "member CSVs written once. Each side is one process from start to smoothed CSV written, imports included, "
        f"automatic s (each side's default), {THREADS} thread(s) each; processes alternate, best of {args.repeats} kept.",
        "",
    ]
    if ref_s:
        best = min(range(len(ref_s)), key=ref_s.__getitem__)
        inside = ref_inside[best]
        rows.append(
            (
                "eks 4.6.2 `fit_eks_singlecam`'s work (process)",
                f"{ref_s[best]:.2f}",
                ", ".join(f"{s:.2f}" for s in ref_s),
                f"import {inside['import_s']:.2f} s, read {inside['runs'][0]['load']:.2f} s, smooth "
                f"{inside['runs'][0]['smooth']:.2f} s, write {inside['runs'][0]['write']:.2f} s",
            )
        )
        lines += markdown_table(("process", "best s", "all runs s", "inside"), rows)
        lines += ["", f"**`elp smooth` / eks 4.6.2: {ref_s[best] / ours_best:.1f}x** (target >= 20x)."]
    else:
        lines += markdown_table(("process", "best s", "all runs s", "inside"), rows)
        lines += ["", f"eks 4.6.2: not run ({ref_error})."]
    lines += ["", "Noise: the machine is shared (see the load average above)."]
    write_results(args.out, lines)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
