"""Page faults and time of `elp predict` and `elp train` with the engine's allocator settings and without.

``engine.allocation`` keeps a batch's memory for the next batch (glibc's ``mallopt``) and asks
PyTorch for huge pages (``THP_MEM_ALLOC_ENABLE``); ``ELP_SYSTEM_ALLOCATOR=1`` leaves both as the
system has them. Each command runs in both settings, alternating, ``--repeats`` times; the best
wall time of each is kept, with its CPU seconds, minor page faults and peak RSS (``wait4``), and
the ratio is printed. Outputs are checked identical: the settings change no arithmetic.

    OMP_NUM_THREADS=1 python benchmarks/bench_allocation.py --model-dir MODEL_DIR
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import RESULTS, THREADS, header, markdown_table, thread_env, write_results
from bench_inference import DEFAULT_VIDEO, our_model_dir

from element_lightning_pose.engine.hardware import native_bf16

ELP = Path(sys.executable).parent / "elp"
SETTINGS = {"system allocator (`ELP_SYSTEM_ALLOCATOR=1`)": "1", "elp's settings (default)": "0"}


def run_measured(command: list[str], system: str) -> dict:
    """Wall, user, system seconds, minor faults and peak RSS (MiB) of one child process."""
    env = {**thread_env(), "ELP_SYSTEM_ALLOCATOR": system}
    env.pop("THP_MEM_ALLOC_ENABLE", None)  # set in this process by importing the package: each child decides
    # stderr to a file, not a pipe: a pipe nobody reads until wait4 returns would stall a chatty child
    with tempfile.TemporaryFile() as stderr:
        started = time.perf_counter()
        child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
        if status != 0:
            stderr.seek(0)
            raise SystemExit(
                f"{' '.join(command)} failed ({status}):\n{stderr.read().decode(errors='replace')[-3000:]}"
            )
    return {
        "wall": wall,
        "user": usage.ru_utime,
        "sys": usage.ru_stime,
        "faults": usage.ru_minflt,
        "rss": usage.ru_maxrss / 1024,
    }


def compare(
    name: str, commands: dict[str, list[str]], repeats: int, outputs: dict[str, Path] | None
) -> tuple[list[list[str]], float, bool | None]:
    """Rows of the best run of each setting, the system / ours wall-time ratio, and whether the outputs agree."""
    best: dict[str, dict] = {}
    for _ in range(repeats):
        for label, system in SETTINGS.items():
            measured = run_measured(commands[label], system)
            print(f"{name}, {label}: {measured}", flush=True)
            if label not in best or measured["wall"] < best[label]["wall"]:
                best[label] = measured
    identical = None
    if outputs:
        first, second = (outputs[label].read_bytes() for label in SETTINGS)
        identical = first == second
    rows = []
    for label in SETTINGS:
        m = best[label]
        rows.append(
            [name, label, f"{m['wall']:.2f}", f"{m['user']:.2f}", f"{m['sys']:.2f}", f"{m['faults'] / 1e6:.2f}"]
            + [f"{m['rss']:.0f}"]
        )
    system, ours = (best[label]["wall"] for label in SETTINGS)
    return rows, system / ours, identical


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, help="a resnet18 model (default: one training step)")
    parser.add_argument("--video", type=Path, default=DEFAULT_VIDEO)
    parser.add_argument("--project", type=Path, default=DEFAULT_VIDEO.parents[1])
    parser.add_argument("--train-epochs", type=int, default=3, help="of the `elp train` runs (0: skip them)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "allocation.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="elp-alloc-") as tmp_name:
        tmp = Path(tmp_name)
        model_dir = args.model_dir or our_model_dir("resnet18", tmp / "model")
        rows, ratios = [], {}
        predict = {
            label: [str(ELP), "predict", str(model_dir), str(args.video), "-o", str(tmp / f"pred{i}")]
            + ["--precision", "auto", "--no-progress"]
            for i, label in enumerate(SETTINGS)
        }
        csvs = {label: tmp / f"pred{i}" / f"{args.video.stem}.csv" for i, label in enumerate(SETTINGS)}
        got, ratios["elp predict"], same = compare("`elp predict --precision auto`", predict, args.repeats, csvs)
        rows += got
        precision = "bf16" if native_bf16("cpu") else "fp32"
        if args.train_epochs:
            train = {
                label: [str(ELP), "train", str(args.project), "--model-dir", str(tmp / f"train{i}"), "--preset", "none"]
                + ["--no-progress", "--set", "model.backbone=resnet18", "--set", "model.pretrained=false"]
                + ["--set", f"training.max_epochs={args.train_epochs}", "--set", "training.unfreeze_epoch=0"]
                + ["--set", f"training.precision={precision}", "--set", "training.seed=0"]
                for i, label in enumerate(SETTINGS)
            }
            got, ratios["elp train"], _ = compare(
                f"`elp train`, {args.train_epochs} epochs, {precision}", train, args.repeats, None
            )
            rows += got
    lines = header("Page faults: the engine's allocator settings against the system's")
    lines += [
        "",
        f"{THREADS} thread(s) per process; each command alternates the two settings {args.repeats} times, "
        "the best wall time of each kept (with its own CPU seconds, faults and RSS).",
        "",
    ]
    lines += markdown_table(
        ["command", "allocator", "wall s", "user s", "system s", "minor faults (M)", "peak RSS MiB"], rows
    )
    lines += [""] + [f"**{name}: {ratio:.2f}x** faster with elp's settings." for name, ratio in ratios.items()]
    lines += [f"Predictions identical in both settings: {'yes' if same else 'NO'}."]
    print(write_results(args.out, lines))


if __name__ == "__main__":
    main()
