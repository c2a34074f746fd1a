"""What both demos share: sizes and training parameters for a laptop, the database connection, steps
that print their time, and finding or registering a VideoSet.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from element_lightning_pose import dj_compat, localdb

DEMO_PREFIX = "lp_demo_"


def demo_params(epochs: int, resize: int, backbone: str) -> dict:
    """Training parameters sized for a 2-core laptop: a few minutes per model."""
    return {
        "data": {"image_resize": [resize, resize], "train_prob": 0.8, "val_prob": 0.1},
        "model": {"backbone": backbone, "pretrained": backbone == "efficientnet_lite0"},
        "training": {
            "batch_size": 8,
            "max_epochs": epochs,
            "unfreeze_epoch": 0,
            "lr_milestones": [int(epochs * 0.6), int(epochs * 0.85)],
            "num_workers": 0,
            "check_val_every_n_epoch": max(1, epochs // 10),
            "log_every_n_steps": 5,
        },
    }


# Sizes of each demo when the command line leaves them out: (single camera, --rig). The rig's
# --resize is the side of its pose network's square crops (demo.rig.rig_params: crop zoom); its
# epochs are those that fit the time cap (--max-train-s) on a 2-core CPU, its learning rate
# decaying in them (benchmarks/results/rig_demo.md).
DEFAULTS = {
    "models": (2, 1),
    "epochs": (120, 70),
    "resize": (128, 96),
    "image_size": (128, 320),
    "labeled": (60, 30),
    "frames": (600, 300),
}


def fill_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """Give every size the command line left out (None) its default for the chosen demo."""
    rig = bool(getattr(args, "rig", False))
    for name, values in DEFAULTS.items():
        if getattr(args, name, None) is None:
            setattr(args, name, values[rig])
    return args


def busy_machine_threads() -> int | None:
    """1 when other processes already keep every core busy (1-minute load average >= cores) and
    the thread count is not set (OMP_NUM_THREADS), else None (torch's default: one per core).
    On a busy machine OpenMP's threads wait on each other: at a load average of 6-8 on 2 cores,
    2 threads trained the rig demo's detector about 10x slower than 1 thread beside it
    (benchmarks/results/rig_demo.md)."""
    if os.environ.get("OMP_NUM_THREADS"):
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 1 if cores > 1 and os.getloadavg()[0] >= cores else None


class Step:
    """Prints a step's name, then its duration when it ends (also kept in ``timings``)."""

    def __init__(self, name: str, timings: dict | None = None):
        self.name = name
        self.timings = timings

    def __enter__(self):
        print(f"==> {self.name} ...", flush=True)
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if exc[0] is None:
            elapsed = time.perf_counter() - self.start
            if self.timings is not None:
                self.timings[self.name] = elapsed
            print(f"    done in {elapsed:.1f} s", flush=True)


def connect(backend: str) -> None:
    """Use DJ_* when set, else start (or reuse) a private local server."""
    if os.environ.get("DJ_HOST"):
        print(f"using the database server at {os.environ['DJ_HOST']} (DJ_HOST)")
    else:
        conn = localdb.start(backend)
        os.environ.update(conn.env())
        print(f"private {backend} server on {conn.host}:{conn.port} (data in {conn.data_dir})")
    dj_compat.configure_from_env()


def relative_to_root(root: Path, path: Path) -> str:
    path = Path(path).absolute()
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        link = root / "videos_external" / path.name
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to(path)
        return link.relative_to(root).as_posix()


def find_or_register_video_set(train, project_rel: str, description: str) -> dict:
    """The VideoSet key of the demo's project, registered on the first run, found on a rerun."""
    existing = dj_compat.fetch_dicts(train.VideoSet & dj_compat.match({"project_dir": project_rel}))
    if existing:
        return {"video_set_id": existing[0]["video_set_id"]}
    return train.VideoSet.insert_project(project_rel, description=description)


def raise_populate_errors(result) -> None:
    if result.errors:
        key, message = result.errors[0]
        raise RuntimeError(f"populate failed for {key}: {message}")
