"""``export_session`` replaces or appends to an NWB file of its own subject and session only
(issue 26, items 4 and 8), on both DataJoint generations."""

from __future__ import annotations

import hashlib

import pytest
from pynwb import NWBHDF5IO

from element_lightning_pose import dj_compat
from element_lightning_pose.export import dj_nwb, nwb
from tests.pipeline.load_helpers import insert_load_models, load_task, recording

META = {"species": "Mus musculus", "subject": {"age": "P90D"}}


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def sessions(lp, lp_root):
    """Load-mode pose for the subjects the issue tried; {subject: session key}."""
    root, project = lp_root
    video = project.videos[0].relative_to(root).as_posix()
    models = insert_load_models(lp)
    found = {}
    for seed, subject in enumerate(["spacey", "zed", "m 1", "m_1"]):
        rec = recording(lp, subject, video)
        key, _ = load_task(lp, rec, models[0], f"pc_nwb/{seed}", seed)
        assert dj_compat.populate(lp.model.PoseEstimation, key).errors == []
        found[subject] = {k: rec[k] for k in lp.Session.primary_key}
    return found


def test_append_to_another_subjects_file_is_refused(lp, sessions, tmp_path):
    path = dj_nwb.export_session(sessions["spacey"], tmp_path, **META)
    before = sha256(path)
    with pytest.raises(nwb.ForeignNWBFileError, match="subject_id 'spacey', not 'zed'"):
        dj_nwb.export_session(sessions["zed"], append_to=path, **META)
    assert sha256(path) == before
    with NWBHDF5IO(str(path), "r") as io:
        assert io.read().subject.subject_id == "spacey"


def test_subjects_sharing_a_dandi_name_do_not_replace_each_other(lp, sessions, tmp_path):
    first = dj_nwb.export_session(sessions["m 1"], tmp_path, **META)
    before = sha256(first)
    with pytest.raises(nwb.ForeignNWBFileError, match="subject_id 'm 1', not 'm_1'"):
        dj_nwb.export_session(sessions["m_1"], tmp_path, **META, overwrite=True)
    assert sha256(first) == before and [p.name for p in tmp_path.iterdir()] == [first.name]
