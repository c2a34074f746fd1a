"""The JSON-lines journals beside the labels (history, prefills)."""

from __future__ import annotations

import pytest

from element_lightning_pose.engine.errors import ProjectError
from element_lightning_pose.engine.labeling.journal import append_entries, read_entries


def test_append_after_a_line_without_its_newline_keeps_both(tmp_path):
    path = tmp_path / "labels.history.jsonl"
    path.write_text('{"image": "a.png"}')  # edited by hand, no final newline
    append_entries(path, [{"image": "b.png"}, {"image": "c.png"}])
    assert [entry["image"] for _, entry in read_entries(path)] == ["a.png", "b.png", "c.png"]


@pytest.mark.parametrize("line", ["{not json", "[1, 2]"])
def test_a_line_that_is_not_an_object_is_named(tmp_path, line):
    path = tmp_path / "elp_prefill.jsonl"
    path.write_text('{"image": "a.png"}\n\n' + line + "\n")
    with pytest.raises(ProjectError, match=r"elp_prefill.jsonl, line 3: not a JSON object"):
        list(read_entries(path))


def test_a_missing_journal_is_empty(tmp_path):
    assert list(read_entries(tmp_path / "none.jsonl")) == []
