"""Faults planted in a synthetic project's labels, for the tests that must find them."""

from __future__ import annotations

from pathlib import Path


def swap_labels(csv_path: Path, frame: int, bodypart_a: int, bodypart_b: int) -> None:
    """Swap the x, y of two body parts in the ``frame``-th labeled frame of a single-view
    Lightning Pose CSV (three header rows, then one column for the image and x, y per part)."""
    lines = csv_path.read_text().splitlines()
    row = 3 + frame
    cells = lines[row].split(",")
    for offset in (1, 2):
        a, b = 2 * bodypart_a + offset, 2 * bodypart_b + offset
        cells[a], cells[b] = cells[b], cells[a]
    lines[row] = ",".join(cells)
    csv_path.write_text("\n".join(lines) + "\n")
