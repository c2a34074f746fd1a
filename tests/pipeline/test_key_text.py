"""Names with a double quote or a backslash, on both generations.

DataJoint 0.14 writes a restriction's string between double quotes without escaping a double
quote inside it, and DataJoint 2.x on PostgreSQL reads a backslash it doubled as two. Text in
a restriction (a project folder, a name a caller passes) goes through ``dj_compat.match``; a
name that would become part of a key is refused where it enters, since DataJoint restricts by
keys itself where no helper of ours can reach (0.14's populate: ``key in table``).
"""

from __future__ import annotations

import datetime as dt

import pytest

from element_lightning_pose import dj_compat, pipeline, worker
from tests.engine.data.test_projects import make_dlc_project
from tests.pipeline.conftest import TINY_PARAMS

QUOTE, BACKSLASH, CRAFTED = 'm"1', "m\\1", 'x" OR "1"="1'


@pytest.fixture
def recording(lp, lp_root):
    """A session of subject 'kt1' with one recording of the project's video, without RecordingInfo
    (removed afterwards: other tests count the shared tables' rows)."""
    root, project = lp_root
    session = pipeline.add_session("kt1", dt.datetime(2024, 6, 1, 9, 0))
    lp.Device.insert1({"device": "cam_top", "device_description": "top camera"}, skip_duplicates=True)
    rec = {**session, "recording_id": 1}
    lp.model.VideoRecording.insert1({**rec, "device": "cam_top"})
    lp.model.VideoRecording.File.insert1(
        {**rec, "file_id": 0, "file_path": project.videos[0].relative_to(root).as_posix()}
    )
    yield rec
    dj_compat.delete_cascading(lp.Subject & {"subject": "kt1"}, prompt=False)


@pytest.mark.parametrize("name", [QUOTE, BACKSLASH, CRAFTED])
def test_a_key_name_with_a_quote_or_a_backslash_is_refused_where_it_enters(lp, name):
    subjects = len(lp.Subject())
    with pytest.raises(dj_compat.KeyTextError, match=r"Subject: subject .* holds a (double quote|backslash)") as info:
        pipeline.add_session(name, dt.datetime(2024, 6, 1, 9, 0))
    assert repr(name) in str(info.value)
    assert len(lp.Subject()) == subjects  # nothing inserted
    # a session a lab inserted into its own upstream is refused at the element's first table
    values = {"subject": name, "session_id": 1, "session_datetime": dt.datetime(2024, 6, 1, 9, 0)}
    session = {k: values[k] for k in lp.Session.primary_key}
    with pytest.raises(dj_compat.KeyTextError, match=r"VideoRecording: subject .* holds"):
        lp.model.VideoRecording.insert1({**session, "recording_id": 1, "device": "cam_top"})
    assert not lp.model.VideoRecording & dj_compat.match(session)
    # and so are the element's own names (a body part, a model): nothing of the batch is inserted
    with pytest.raises(dj_compat.KeyTextError, match=r"BodyPart: body_part .* holds"):
        lp.model.BodyPart.extend(["kt_part", name])
    assert "kt_part" not in dj_compat.fetch_column(lp.model.BodyPart, "body_part")


def test_rows_from_a_csv_file_are_checked_like_any_other(lp, tmp_path):
    """Both generations insert a pathlib.Path as a CSV's rows: the names in it are checked too."""
    bad = tmp_path / "parts.csv"
    bad.write_text(f'body_part,body_part_description\nkt_csv_ok,fine\n"{QUOTE.replace(chr(34), chr(34) * 2)}",quoted\n')
    with pytest.raises(dj_compat.KeyTextError, match=r"BodyPart: body_part .* holds a double quote"):
        lp.model.BodyPart.insert(bad)
    assert "kt_csv_ok" not in dj_compat.fetch_column(lp.model.BodyPart, "body_part")  # nothing of the file
    good = tmp_path / "good.csv"
    good.write_text("body_part,body_part_description\nkt_csv_ok,fine\n")
    try:
        lp.model.BodyPart.insert(good)
        assert "kt_csv_ok" in dj_compat.fetch_column(lp.model.BodyPart, "body_part")
    finally:
        dj_compat.delete_cascading(lp.model.BodyPart & dj_compat.match({"body_part": "kt_csv_ok"}), prompt=False)


def test_a_restriction_by_a_crafted_name_matches_that_name_only(lp, recording):
    # the worker's --restrict: on 0.14 the crafted subject used to match every pending key
    done, errors = worker.populate_table(lp.model.RecordingInfo, [{"subject": CRAFTED}], log=lambda _: None)
    assert (done, errors) == (0, []) and not lp.model.RecordingInfo & recording
    done, errors = worker.populate_table(lp.model.RecordingInfo, [{"subject": "kt1"}], log=lambda _: None)
    assert (done, errors) == (1, [])
    assert dj_compat.fetch_column(lp.model.RecordingInfo & dj_compat.match({"subject": "kt1"}), "n_frames") != []
    for name in (QUOTE, BACKSLASH, CRAFTED):
        assert len(lp.model.RecordingInfo & dj_compat.match({"subject": name})) == 0
        assert dj_compat.fetch_keys(lp.model.VideoRecording & dj_compat.match({**recording, "subject": name})) == []


@pytest.mark.parametrize("folder", ['set"quoted', "set\\slashed"])
def test_a_video_set_whose_folder_holds_a_quote_or_a_backslash_trains_and_is_found(lp, lp_root, folder):
    root, _ = lp_root
    make_dlc_project(root / "projects" / folder, folders={"a": 6}, seed=4)
    train = lp.train
    key = train.VideoSet.insert_project(f"projects/{folder}", description="a name SQL must quote")
    idx = train.TrainingParamSet.insert_new_params(
        "one step", {**TINY_PARAMS, "training": {**TINY_PARAMS["training"], "max_steps": 1}}
    )
    task = {**key, "paramset_idx": idx, "training_id": 1}
    try:
        assert train.VideoSet.insert_project(f"projects/{folder}") == key  # found again by its folder
        train.TrainingTask.insert1({**task, "seed": 0})
        assert dj_compat.populate(train.ModelTraining, task).success_count == 1
        row = (train.ModelTraining & task).fetch1()
        assert row["n_epochs"] >= 0 and (train.VideoSet & key).fetch1("project_dir") == f"projects/{folder}"
        assert dj_compat.fetch_keys(train.VideoSet & dj_compat.match({"project_dir": f"projects/{folder}"})) == [key]
    finally:
        (train.ModelTraining & task).delete_quick()
        (train.TrainingTask & task).delete_quick()
        (train.TrainingParamSet & {"paramset_idx": idx}).delete_quick()
        for part in (train.VideoSet.View, train.VideoSet.File):
            (part & key).delete_quick()
        (train.VideoSet & key).delete_quick()
