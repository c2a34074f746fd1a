"""What a model predicted for a frame sent to the labeler, kept so that labeling starts from it.

When a frame is queued from a model's predictions (the review's "send to the labeler"), its
prediction is appended to the project's ``elp_prefill.jsonl``: one JSON object per line with
the image (relative to the project, as the label tables list it), the prediction file it came
from, the video frame, when, and ``{bodypart: [x, y, likelihood]}`` in original-frame pixels
(``null`` where nothing was predicted). The label tables themselves are not touched: a
prefilled point becomes a label only when the labeler saves it (its history says
``prefilled``). The latest entry of an image wins.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from element_lightning_pose.engine.errors import ProjectError
from element_lightning_pose.engine.labeling.journal import append_entries, read_entries
from element_lightning_pose.engine.types import PathLike

PREFILL_FILE = "elp_prefill.jsonl"


def _number(value: float) -> float | None:
    return None if value is None or not math.isfinite(float(value)) else float(value)


def save_prefill(root: PathLike, image: str, points: Mapping[str, Sequence[float]], *, source: str, frame: int) -> Path:
    """Keep ``points`` ({bodypart: (x, y, likelihood)}) as the prefill of ``image``."""
    path = Path(root) / PREFILL_FILE
    entry = {
        "image": image,
        "source": source,
        "frame": int(frame),
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "points": {part: [_number(v) for v in values] for part, values in points.items()},
    }
    return append_entries(path, [entry])


def read_prefill(root: PathLike, image: str) -> dict[str, Any] | None:
    """The latest prefill entry of ``image`` (``image``, ``source``, ``frame``, ``time`` and
    ``points``: ``{bodypart: [x, y, likelihood]}``), None when there is none."""
    path = Path(root) / PREFILL_FILE
    found = None
    for number, entry in read_entries(path):
        if entry.get("image") == image:
            if not isinstance(entry.get("points"), dict):
                raise ProjectError(f"{path}, line {number}: 'points' is not a mapping of body parts")
            found = entry
    return found
