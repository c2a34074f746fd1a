"""JSON-lines journals kept beside a project's labels (the label history, the prefills).

One JSON object per line, appended. A journal is small next to a video, so an append rewrites
the file atomically: a crash leaves the old journal or the new one, never half a line.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from element_lightning_pose.engine.atomic import write_text_atomic
from element_lightning_pose.engine.errors import ProjectError


def append_entries(path: Path, entries: Iterable[dict[str, Any]]) -> Path:
    """Append ``entries`` to the journal at ``path`` (created when missing)."""
    old = path.read_text(encoding="utf-8") if path.is_file() else ""
    if old and not old.endswith("\n"):  # a line written by hand without its newline
        old += "\n"
    return write_text_atomic(path, old + "".join(json.dumps(entry) + "\n" for entry in entries))


def read_entries(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, entry) of each object in the journal at ``path`` (none when it is missing);
    a line that is not a JSON object is an error naming the file and the line."""
    if not path.is_file():
        return
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            entry = None
        if not isinstance(entry, dict):
            raise ProjectError(f"{path}, line {number}: not a JSON object")
        yield number, entry
