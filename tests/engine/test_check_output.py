"""``engine.atomic.check_output``: an output location is refused before any work, in one line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from element_lightning_pose.engine.atomic import OutputError, check_output


def test_a_new_file_in_a_writable_folder_passes(tmp_path):
    assert check_output(tmp_path / "new" / "out.csv") == tmp_path / "new" / "out.csv"


def test_an_output_that_is_an_input_is_refused(tmp_path):
    source = tmp_path / "view.csv"
    source.write_text("data")
    link = tmp_path / "link.csv"
    link.symlink_to(source)
    for target in (source, link, tmp_path / "." / "view.csv"):
        with pytest.raises(OutputError, match="is the input"):
            check_output(target, inputs=[source], what="-o")
    assert source.read_text() == "data"


def test_an_existing_folder_where_a_file_is_expected(tmp_path):
    with pytest.raises(OutputError, match=r"^-o .*: is a folder"):
        check_output(tmp_path, what="-o")


def test_a_path_under_a_file(tmp_path):
    (tmp_path / "a.csv").write_text("x")
    with pytest.raises(OutputError, match="a.csv is a file, so nothing can be created under it"):
        check_output(tmp_path / "a.csv" / "deeper" / "out.csv")


def test_a_read_only_location(read_only_folder):
    with pytest.raises(OutputError, match="is not writable"):
        check_output(read_only_folder / "sub" / "out.csv")
    with pytest.raises(OutputError, match="is not writable"):
        check_output(read_only_folder, folder=True)


@pytest.mark.parametrize("target", ["/proc/self/out.csv", "/proc/sys/kernel/hostname", "/sys/kernel/x"])
def test_kernel_file_systems_are_refused(target):
    with pytest.raises(OutputError, match="kernel file system"):
        check_output(target)


def test_the_null_device_is_accepted_other_devices_are_not(tmp_path):
    assert check_output(os.devnull) == Path(os.devnull)
    with pytest.raises(OutputError, match="character device"):
        check_output("/dev/zero")
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    with pytest.raises(OutputError, match="named pipe"):
        check_output(pipe)


def test_folders(tmp_path):
    project = tmp_path / "project"
    (project / "labeled-data").mkdir(parents=True)
    labels = project / "CollectedData.csv"
    labels.write_text("x")
    assert check_output(project / "models" / "m1", folder=True, replaced_whole=True, inputs=[project])
    assert check_output(project, folder=True, inputs=[labels])  # files are written into it, not replaced
    for replaced in (project, tmp_path):
        with pytest.raises(OutputError, match="an output never replaces an input"):
            check_output(replaced, folder=True, replaced_whole=True, inputs=[project], what="--model-dir")
    with pytest.raises(OutputError, match="exists and is not a folder"):
        check_output(labels, folder=True)


def test_nul_is_refused(tmp_path):
    with pytest.raises(OutputError, match="NUL"):
        check_output(f"{tmp_path}/a\0b.csv")
