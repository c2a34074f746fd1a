"""Training runs under DDP on the CPU, for test_ddp.py: ``python ddp_runs.py ROOT KIND...``.

Lightning's launcher starts the second process by running this script again, so both run every
``train()`` below (as a cluster job's processes would); each appends what its runs returned to
``ROOT/rank<N>.jsonl``. KIND is ``single``, ``crop_zoom``, ``per_view``, ``semi_supervised``,
``crop_zoom_semi`` or ``long`` (a one-network run of 40 epochs, for a test to stop); the models go to
``ROOT/models/<KIND>``. Each process writes its pid to ``ROOT/pid<N>`` as it starts.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from pytorch_lightning.utilities import rank_zero_only

from element_lightning_pose.engine.training import TrainingInterrupted, train
from element_lightning_pose.synthetic.projects import make_synthetic_project
from element_lightning_pose.synthetic.rig_project import make_rig_project

BASE = {
    "data": {"image_resize": [64, 64]},
    "model": {"backbone": "resnet18", "pretrained": False},
    "training": {"max_epochs": 2, "unfreeze_epoch": 0, "num_workers": 0, "accelerator": "cpu", "devices": 2},
}
# unlabeled clips of the project's video beside the labeled batches
TEMPORAL = {"unsupervised": ["temporal"], "warmup_epochs": 0, "clip_length": 8}
KINDS = {
    "single": BASE,
    "crop_zoom": {**BASE, "crop_zoom": {"enabled": True}},
    "per_view": {**BASE, "data": {**BASE["data"], "multiview": "per_view"}},
    "semi_supervised": {**BASE, "losses": TEMPORAL},
    # crop zoom's pose stage learns from video crops that each process cuts with the detector
    "crop_zoom_semi": {**BASE, "crop_zoom": {"enabled": True}, "losses": TEMPORAL},
    "long": {**BASE, "training": {**BASE["training"], "max_epochs": 40}},
}


def project(root: Path, kind: str) -> Path:
    """The project of ``kind``. The first process makes them all before its first run, which is
    when Lightning starts the second: that one finds them made."""
    folder = root / ("rig" if kind == "per_view" else "project")
    if not (folder / ".made").exists():
        if kind == "per_view":
            make_rig_project(folder, n_cameras=2, image_size=(96, 64), n_frames=12, n_labeled=8, n_board_frames=2)
        else:
            make_synthetic_project(folder, image_size=(64, 96), n_labeled=12, n_video_frames=45)
        (folder / ".made").touch()
    return folder


def main() -> None:
    root, kinds = Path(sys.argv[1]), sys.argv[2:]
    (root / f"pid{os.environ.get('LOCAL_RANK', '0')}").write_text(str(os.getpid()))  # Lightning's launcher sets it
    projects = {kind: project(root, kind) for kind in kinds}
    for kind in kinds:
        try:
            result = train(KINDS[kind], projects[kind], root / "models" / kind, progress=False)
        except TrainingInterrupted as stopped:
            _record(root, {"kind": kind, "stopped_by": stopped.signum, "kept": str(stopped.kept)})
            raise
        history = getattr(result, "history", None)
        record = {
            "kind": kind,
            "model_dir": str(result.model_dir),
            # the epoch metrics this process saw: the same in every process once they are averaged
            "history": history.to_dict(orient="list") if history is not None else None,
        }
        _record(root, record)


def _record(root: Path, record: dict) -> None:
    rank = getattr(rank_zero_only, "rank", 0)
    with open(root / f"rank{rank}.jsonl", "a") as out:
        out.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
