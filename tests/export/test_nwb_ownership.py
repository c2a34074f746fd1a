"""An NWB file is only replaced or appended to by the pose of its own subject and session (issue 26,
items 4 and 8), and the videos placed beside it stay in its folder."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest
from pynwb import NWBHDF5IO, NWBFile
from pynwb.file import Subject

from element_lightning_pose.engine.safe_paths import UnsafePathError
from element_lightning_pose.export.nwb import ForeignNWBFileError, append_pose, dandi_filename, write_nwb
from element_lightning_pose.export.nwb.files import _video_destinations
from tests.export.test_nwb import make_camera, session_info, sha256, subject_info, write_video


def stored_ids(path) -> tuple[str, str]:
    with NWBHDF5IO(str(path), "r") as io:
        nwbfile = io.read()
        return nwbfile.subject.subject_id, nwbfile.session_id


@pytest.mark.parametrize("other", ["m_1", "m-1", "m.1"])
def test_overwrite_never_replaces_another_subjects_file(tmp_path, other):
    """'m 1', 'm_1', 'm-1' and 'm.1' share the DANDI name sub-m-1_...: overwrite=True replaced one
    subject's file with another's."""
    video = write_video(tmp_path / "top.mp4")
    out = tmp_path / "nwb"
    out.mkdir()
    first = write_nwb(out, session_info(), subject_info(subject_id="m 1"), [make_camera("top", video, 0)])
    assert dandi_filename("m 1", "x") == dandi_filename(other, "x")
    before = sha256(first)
    with pytest.raises(ForeignNWBFileError, match=r"subject_id 'm 1', not '" + other.replace(".", r"\.") + "'"):
        write_nwb(out, session_info(), subject_info(subject_id=other), [make_camera("top", video, 1)], overwrite=True)
    assert sha256(first) == before and stored_ids(first) == ("m 1", session_info().session_id)
    with pytest.raises(ForeignNWBFileError, match="session_id"):  # the same subject, another session
        write_nwb(first, session_info(session_id="2024-03-01 a"), subject_info(subject_id="m 1"),
                  [make_camera("top", video, 1)], overwrite=True)  # fmt: skip
    assert sha256(first) == before
    # the file's own subject and session may replace it
    write_nwb(out, session_info(), subject_info(subject_id="m 1"), [make_camera("top", video, 2)], overwrite=True)
    assert sha256(first) != before and stored_ids(first) == ("m 1", session_info().session_id)


def test_overwrite_never_replaces_a_file_that_is_not_nwb(tmp_path):
    video = write_video(tmp_path / "top.mp4")
    target = tmp_path / "notes.nwb"
    target.write_text("a lab's notes, not an NWB file")
    with pytest.raises(ForeignNWBFileError, match="not a readable NWB file"):
        write_nwb(target, session_info(), subject_info(), [make_camera("top", video, 0)], overwrite=True)
    assert target.read_text() == "a lab's notes, not an NWB file"


def test_append_compares_subject_and_session_first(tmp_path):
    video = write_video(tmp_path / "top.mp4")
    path = write_nwb(tmp_path / "spacey.nwb", session_info(), subject_info(subject_id="spacey"),
                     [make_camera("top", video, 0)])  # fmt: skip
    before = sha256(path)
    bot = make_camera("bot", video, 1)
    with pytest.raises(ForeignNWBFileError, match="subject_id 'spacey', not 'zed'"):
        append_pose(path, [bot], subject_id="zed", session_id=session_info().session_id)
    with pytest.raises(ForeignNWBFileError, match="session_id"):
        append_pose(path, [bot], subject_id="spacey", session_id="another")
    assert sha256(path) == before
    append_pose(path, [bot], subject_id="spacey", session_id=session_info().session_id)
    assert sha256(path) != before


def test_append_accepts_a_file_that_names_no_session(tmp_path):
    """A file written by another tool may have no session_id: nothing to compare, the pose is added."""
    video = write_video(tmp_path / "top.mp4")
    path = tmp_path / "ephys.nwb"
    start = session_info().session_start_time
    ephys = NWBFile("ephys", "ephys-0001", start, subject=Subject(subject_id="mouse_01", species="Mus musculus"))
    with NWBHDF5IO(str(path), "w") as io:
        io.write(ephys)
    append_pose(path, [make_camera("bot", video, 1)], subject_id="mouse_01", session_id="any")
    with pytest.raises(ForeignNWBFileError, match="subject_id 'mouse_01', not 'zed'"):
        append_pose(path, [make_camera("top", video, 2)], subject_id="zed", session_id="any")


@pytest.mark.parametrize("subject", ["../../x", "/etc/passwd", "a\\b", "%2F..", "..x"])
def test_dandi_names_are_one_file_name(subject):
    name = dandi_filename(subject, "../1")
    assert "/" not in name and "\\" not in name and not name.startswith(".") and ".." not in name
    with pytest.raises(ValueError, match="nothing usable"):
        dandi_filename("..", "1")


def test_a_placed_video_stays_in_the_nwb_folder(tmp_path):
    videos = [tmp_path / "a" / "v.mp4", tmp_path / "b" / "v.mp4"]
    for video in videos:
        video.parent.mkdir()
        write_video(video)
    cameras = [make_camera("top", videos[0], 0), replace(make_camera("bot", videos[1], 1), camera_name="../../..")]
    with pytest.raises(UnsafePathError, match="outside its root"):
        _video_destinations(tmp_path / "out.nwb", cameras)
    assert sorted(os.listdir(tmp_path)) == ["a", "b"]
