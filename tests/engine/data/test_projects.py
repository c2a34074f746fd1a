"""Other labs' project layouts train as they are: DeepLabCut's and Lightning Pose's multi-view."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from element_lightning_pose.engine.config import ConfigError, TrainConfig
from element_lightning_pose.engine.data.dlc import read_dlc_project
from element_lightning_pose.engine.data.projects import detect_layout, load_project
from element_lightning_pose.engine.errors import ProjectError

BODYPARTS = ["snout", "ear_l", "tail"]
TINY = {
    "data": {"image_resize": [32, 32]},
    "model": {"backbone": "resnet18", "pretrained": False},
    "training": {"max_steps": 1, "unfreeze_epoch": 0, "num_workers": 0, "batch_size": 4},
}


# ------------------------------------------------------------------ a tiny DeepLabCut project


def make_dlc_project(
    root: Path,
    folders: dict[str, int] | None = None,
    scorer: str = "Alice",
    bodyparts: list[str] | None = None,
    h5: bool = False,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """A DeepLabCut 2.x project: config.yaml and labeled-data/<video>/CollectedData_<scorer>.csv
    (3-column index) or .h5, frames img*.png of 40x48. Returns {folder: (N, K, 2) keypoints}."""
    import cv2

    folders = folders or {"mouseA": 3, "mouseB": 2}
    bodyparts = bodyparts or BODYPARTS
    rng = np.random.default_rng(seed)
    config = {
        "Task": "tiny",
        "scorer": scorer,
        "date": "Jan1",
        "project_path": str(root),
        "video_sets": {f"/elsewhere/videos/{name}.mp4": {"crop": "0, 48, 0, 40"} for name in folders},
        "bodyparts": list(BODYPARTS),
        "skeleton": [],
    }
    (root / "labeled-data").mkdir(parents=True)
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    truth = {}
    for name, n in folders.items():
        folder = root / "labeled-data" / name
        folder.mkdir()
        images = [f"img{10 * i + 3:03d}.png" for i in range(n)]
        for image in images:
            cv2.imwrite(str(folder / image), rng.integers(0, 255, (40, 48, 3), dtype=np.uint8))
        points = rng.uniform(2, 38, (n, len(bodyparts), 2))
        points[0, -1] = np.nan  # DeepLabCut leaves unlabeled body parts empty
        truth[name] = points
        columns = pd.MultiIndex.from_product([[scorer], bodyparts, ["x", "y"]], names=["scorer", "bodyparts", "coords"])
        index = pd.MultiIndex.from_tuples([("labeled-data", name, image) for image in images])
        frame = pd.DataFrame(points.reshape(n, -1), index=index, columns=columns)
        if h5:
            frame.to_hdf(folder / f"CollectedData_{scorer}.h5", key="df_with_missing", mode="w")
        else:
            frame.to_csv(folder / f"CollectedData_{scorer}.csv")
    return truth


def test_dlc_project_merges_every_labeled_folder(tmp_path):
    truth = make_dlc_project(tmp_path)
    (tmp_path / "labeled-data" / "mouseA_labeled").mkdir()  # DeepLabCut's plots of the labels: not labels
    (tmp_path / "labeled-data" / "mouseC").mkdir()  # frames extracted, not labeled yet: skipped
    assert detect_layout(tmp_path).kind == "deeplabcut"
    labels, videos = load_project(tmp_path)
    assert len(labels) == 5 and videos == []
    assert labels.bodyparts == BODYPARTS and labels.scorer == "Alice"
    assert labels.image_paths[0] == "labeled-data/mouseA/img003.png"
    assert labels.image_paths[3] == "labeled-data/mouseB/img003.png"
    np.testing.assert_array_equal(labels.keypoints, np.concatenate([truth["mouseA"], truth["mouseB"]]))
    assert all((tmp_path / p).is_file() for p in labels.image_paths)
    explicit, _ = load_project(tmp_path, "config.yaml")  # or named explicitly
    assert explicit.image_paths == labels.image_paths


def test_dlc_h5_labels_and_bodypart_order(tmp_path):
    truth = make_dlc_project(tmp_path, folders={"v1": 3}, bodyparts=["tail", "snout", "ear_l"], h5=True)
    labels = read_dlc_project(tmp_path)
    assert labels.bodyparts == BODYPARTS  # config.yaml's order
    np.testing.assert_array_equal(labels.keypoints, truth["v1"][:, [1, 2, 0]])


def test_dlc_h5_without_pytables_says_what_to_do(tmp_path, monkeypatch):
    make_dlc_project(tmp_path, folders={"v1": 2}, h5=True)
    monkeypatch.setitem(sys.modules, "tables", None)  # as on a machine without PyTables
    with pytest.raises(ProjectError, match=r"CollectedData_Alice\.h5: .*PyTables.*CollectedData_Alice\.csv"):
        read_dlc_project(tmp_path)


def test_dlc_errors_name_the_file(tmp_path):
    make_dlc_project(tmp_path, folders={"v1": 2})
    csv = tmp_path / "labeled-data" / "v1" / "CollectedData_Alice.csv"
    config = yaml.safe_load((tmp_path / "config.yaml").read_text())

    (tmp_path / "labeled-data" / "v1" / "img013.png").unlink()
    with pytest.raises(ProjectError, match=r"CollectedData_Alice\.csv \(labeled-data/v1/img013\.png\).*not found"):
        load_project(tmp_path)

    (tmp_path / "config.yaml").write_text(yaml.safe_dump({**config, "bodyparts": ["snout", "ear_l", "paw"]}))
    with pytest.raises(ProjectError, match=r"CollectedData_Alice\.csv: body parts .* differ from .*config\.yaml"):
        read_dlc_project(tmp_path, check_images=False)

    (tmp_path / "config.yaml").write_text(yaml.safe_dump({**config, "scorer": "Bob"}))
    with pytest.raises(ProjectError, match=r"CollectedData_Bob\.csv: not found, but \['CollectedData_Alice\.csv'\]"):
        read_dlc_project(tmp_path)

    csv.rename(csv.with_name("notes.csv"))
    with pytest.raises(ProjectError, match=r"CollectedData_Bob\.csv: no labeled folder has it"):
        read_dlc_project(tmp_path)

    (tmp_path / "config.yaml").write_text(yaml.safe_dump({**config, "multianimalproject": True}))
    with pytest.raises(ProjectError, match=r"config\.yaml: a multi-animal DeepLabCut project"):
        read_dlc_project(tmp_path)


@pytest.mark.slow  # trains a (tiny) network
def test_elp_train_on_a_dlc_project(tmp_path, capsys):
    from element_lightning_pose.cli import main

    make_dlc_project(tmp_path / "dlc", folders={"a": 4, "b": 4})
    sets = [f"--set={k}" for k in ("data.image_resize=[32,32]", "model.backbone=resnet18", "model.pretrained=false")]
    sets += ["--set=training.max_steps=2", "--set=training.num_workers=0", "--set=training.unfreeze_epoch=0"]
    status = main(["train", str(tmp_path / "dlc"), "--model-dir", str(tmp_path / "model"), "--no-progress", *sets])
    out, err = capsys.readouterr()
    assert status == 0, err
    assert f"{tmp_path / 'dlc'}: deeplabcut project (config.yaml)" in out
    info = json.loads((tmp_path / "model" / "model.json").read_text())
    assert info["bodyparts"] == BODYPARTS and info["frame_size"] == [40, 48]
    splits = pd.read_csv(tmp_path / "model" / "splits.csv")
    assert sorted(splits["image"])[0] == "labeled-data/a/img003.png" and len(splits) == 8


def test_elp_train_names_a_project_without_labels(tmp_path, capsys):
    from element_lightning_pose.cli import main

    (tmp_path / "empty").mkdir()
    assert main(["train", str(tmp_path / "empty"), "--model-dir", str(tmp_path / "m")]) == 2
    assert "no labels found" in capsys.readouterr().err


# ------------------------------------------------------------------ Lightning Pose multi-view


@pytest.fixture(scope="module")
def rig_project(tmp_path_factory):
    from element_lightning_pose.synthetic.rig_project import make_rig_project

    return make_rig_project(
        tmp_path_factory.mktemp("rig"), n_cameras=2, image_size=(96, 64), n_frames=30, n_labeled=6, n_board_frames=3
    )


def test_multiview_layout_reads_every_view(rig_project):
    layout = detect_layout(rig_project.root)
    assert layout.kind == "multiview" and layout.view_names == ["cam0", "cam1"]
    labels, videos = load_project(rig_project.root)
    assert len(labels) == 12 and labels.views == ["cam0"] * 6 + ["cam1"] * 6
    assert [v.name for v in videos] == ["session0_cam0.mp4", "session0_cam1.mp4"]
    truth = np.load(rig_project.ground_truth)
    frames = truth["labeled_frames"]
    expected = np.where(truth["visible"][1][frames][..., None], truth["pixels"][1][frames], np.nan)
    np.testing.assert_allclose(labels.keypoints[6:], expected, rtol=1e-12)
    one_view, videos = load_project(rig_project.root, ["CollectedData_cam1.csv"])
    assert one_view.views == ["cam1"] * 6 and [v.name for v in videos] == ["session0_cam1.mp4"]
    subset = labels.subset([7, 0])
    assert subset.views == ["cam1", "cam0"]


def test_multiview_layout_errors(rig_project, tmp_path):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(rig_project.root, root)
    with pytest.raises(ProjectError, match=r"data\.view_names has 1 name"):
        load_project(root, ["CollectedData_cam0.csv", "CollectedData_cam1.csv"], view_names=["top"])
    lines = (root / "CollectedData_cam1.csv").read_text().splitlines()
    (root / "CollectedData_cam1.csv").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(ProjectError, match=r"CollectedData_cam1\.csv: 5 labeled frames, CollectedData_cam0\.csv has 6"):
        load_project(root)


def _rewrite_rows(csv: Path, edit) -> None:
    """Apply ``edit`` to the data rows (lines after the 3-row header) of a label CSV."""
    lines = csv.read_text().splitlines()
    csv.write_text("\n".join(lines[:3] + edit(lines[3:])) + "\n")


def _renumbered(rows: list[str], shift: int) -> list[str]:
    """Rows whose image is another frame: img<N>.png -> img<N + shift>.png (the image copied)."""
    import re

    return [re.sub(r"img(\d+)\.png", lambda m: f"img{int(m.group(1)) + shift:05d}.png", row) for row in rows]


@pytest.mark.parametrize("case", ["other_frames", "other_order", "other_session"])
def test_multiview_views_must_label_the_same_instants(rig_project, tmp_path, case):
    """Issue 26, item 12: views with the same number of rows were paired row by row whatever
    frames they held (a view of frames 100..139 with views of frames 0..39)."""
    import shutil

    root = Path(shutil.copytree(rig_project.root, tmp_path / "copy"))
    csv = root / "CollectedData_cam1.csv"
    folder = root / "labeled-data" / "session0_cam1"
    if case == "other_frames":
        for image in sorted(folder.glob("img*.png"), reverse=True):  # the images exist: only the frames differ
            shutil.copy(image, folder / f"img{int(image.stem[3:]) + 100:05d}.png")
        _rewrite_rows(csv, lambda rows: _renumbered(rows, 100))
        words = ["CollectedData_cam1.csv, row 1 (labeled-data/session0_cam1/img00", "not the instant of row 1 of"]
    elif case == "other_order":
        _rewrite_rows(csv, lambda rows: rows[1:] + rows[:1])
        words = ["row 1", "the same frames in another order: sort the CSVs alike"]
    else:
        other = root / "labeled-data" / "session9_cam1"
        shutil.copytree(folder, other)
        _rewrite_rows(csv, lambda rows: [rows[0].replace("session0_cam1", "session9_cam1"), *rows[1:]])
        words = ["row 1 (labeled-data/session9_cam1/", "(labeled-data/session0_cam0/"]
    with pytest.raises(ProjectError) as caught:
        load_project(root)
    message = str(caught.value)
    assert message.startswith(f"{csv}, row ") and "\n" not in message
    for word in words:
        assert word in message, (word, message)


def test_multiview_instants_are_the_frame_in_the_session():
    from element_lightning_pose.engine.data.projects import instant_of

    top = instant_of("labeled-data/stopwatch_top/img00042.png", "top")
    assert top == instant_of("labeled-data/stopwatch_bot/img042.png", "bot") == ("labeled-data/stopwatch_", "42")
    assert instant_of("top/frame_7.png", "top") == instant_of("side/frame_7.png", "side")
    assert instant_of("camA/7.png", "top") == (None, "7")  # a folder without the view's name: the frame only


def test_data_config_names_the_keys():
    config = TrainConfig.from_dict({"data": {"csv_file": ["a.csv", "b.csv"], "view_names": ["top", "side"]}})
    assert config.data.multiview == "shared"
    with pytest.raises(ConfigError, match=r"data\.view_names has 1 name\(s\) \['top'\] for 2 file\(s\)"):
        TrainConfig.from_dict({"data": {"csv_file": ["a.csv", "b.csv"], "view_names": ["top"]}})
    with pytest.raises(ConfigError, match=r"data\.view_names \['top'\] needs data\.csv_file to be a list"):
        TrainConfig.from_dict({"data": {"view_names": ["top"]}})
    with pytest.raises(ConfigError, match=r"data\.multiview"):
        TrainConfig.from_dict({"data": {"multiview": "both"}})


@pytest.mark.slow  # trains a (tiny) network
def test_shared_multiview_training(rig_project, tmp_path):
    from element_lightning_pose.engine.training import train

    result = train(TINY, rig_project.root, tmp_path / "model", progress=False)
    info = json.loads((tmp_path / "model" / "model.json").read_text())
    assert info["n_train"] + info["n_val"] + info["n_test"] == 12  # both views' frames, one network
    assert info["bodyparts"] == rig_project.bodyparts
    assert result.best_checkpoint.is_file()


@pytest.mark.slow  # trains a (tiny) network
def test_per_view_training(rig_project, tmp_path):
    from element_lightning_pose.engine.model_dir import read_model_info
    from element_lightning_pose.engine.training import PerViewResult, train

    config = TrainConfig.from_dict(TINY).with_overrides(["data.multiview=per_view"])
    result = train(config, rig_project.root, tmp_path / "model", progress=False)
    assert isinstance(result, PerViewResult) and list(result.views) == ["cam0", "cam1"]
    top = json.loads((tmp_path / "model" / "model.json").read_text())
    assert top["multiview"] == "per_view" and list(top["views"]) == ["cam0", "cam1"]
    for view in ("cam0", "cam1"):
        info = read_model_info(tmp_path / "model" / view)
        assert info.n_train + info.n_val + info.n_test == 6
        assert result.views[view].best_checkpoint == tmp_path / "model" / view / "checkpoints" / "best.ckpt"
        assert info.config["data"]["csv_file"] == [f"CollectedData_{view}.csv"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no stage left behind
    # the top level is no network: loading it names the views' directories instead
    from element_lightning_pose.engine.model_dir import ModelDirectoryError

    with pytest.raises(ModelDirectoryError, match=r"one network per view \(cam0, cam1\).*model/cam0"):
        read_model_info(tmp_path / "model")
    # the same seed splits the same instants in every view (and as instant_splits does)
    splits = [pd.read_csv(tmp_path / "model" / view / "splits.csv") for view in ("cam0", "cam1")]
    assert [Path(p).name for p in splits[0]["image"]] == [Path(p).name for p in splits[1]["image"]]
    assert list(splits[0]["split"]) == list(splits[1]["split"])
    from element_lightning_pose.engine.data.splits import instant_splits

    labels, _ = load_project(rig_project.root)
    shared = instant_splits(labels, config.data.train_prob, config.data.val_prob, config.data.split_seed)
    assert list(shared) == list(splits[0]["split"]) * 2


def test_per_view_needs_a_multiview_project(tmp_path):
    from element_lightning_pose.engine.training import train

    make_dlc_project(tmp_path / "dlc")
    config = TrainConfig.from_dict(TINY).with_overrides(["data.multiview=per_view"])
    with pytest.raises(ConfigError, match="is not a multi-view project"):
        train(config, tmp_path / "dlc", tmp_path / "model", progress=False)


# ------------------------------------------------------------------ synthetic rig project


def test_rig_project_is_deterministic(tmp_path):
    from element_lightning_pose.engine.multicam.cameras import read_calibration
    from element_lightning_pose.synthetic.rig_project import make_rig_project

    kwargs = {"n_cameras": 2, "image_size": (64, 48), "n_frames": 12, "n_labeled": 3, "n_board_frames": 2}
    first = make_rig_project(tmp_path / "a", seed=3, **kwargs)
    second = make_rig_project(tmp_path / "b", seed=3, **kwargs)
    other = make_rig_project(tmp_path / "c", seed=4, **kwargs)
    for name in [*first.csv_files, "calibration.toml", "board.toml"]:
        assert (first.root / name).read_bytes() == (second.root / name).read_bytes(), name
    pngs = sorted(p.relative_to(first.root) for p in first.root.glob("labeled-data/*/*.png"))
    assert len(pngs) == 6
    assert all((first.root / p).read_bytes() == (second.root / p).read_bytes() for p in pngs)
    a, b, c = (np.load(p.ground_truth) for p in (first, second, other))
    for key in ("points3d", "pixels", "visible", "labeled_frames", "camera_names", "bodyparts"):
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.allclose(a["points3d"], c["points3d"])
    group = read_calibration(first.calibration)
    assert [cam.name for cam in group.cameras] == first.camera_names == ["cam0", "cam1"]
    assert a["pixels"].shape == (2, 12, len(first.bodyparts), 2)
    assert set(first.board_videos) == {"cam0", "cam1"} and all(p.is_file() for p in first.board_videos.values())


# ------------------------------------------------------------------ DeepLabCut's two label files (issue 26, item 13)


def _h5_beside_the_csv(folder: Path, edit=None) -> Path:
    """DeepLabCut writes both files; the .h5 from the CSV's labels, changed by ``edit`` (a DataFrame edit)."""
    csv = folder / "CollectedData_Alice.csv"
    frame = pd.read_csv(csv, header=[0, 1, 2], index_col=[0, 1, 2])
    if edit is not None:
        frame = edit(frame)
    frame.to_hdf(csv.with_suffix(".h5"), key="df_with_missing", mode="w")
    return csv


def test_a_dlc_csv_and_the_same_h5_read_as_the_csv(tmp_path, caplog):
    truth = make_dlc_project(tmp_path, folders={"v1": 3})
    csv = _h5_beside_the_csv(tmp_path / "labeled-data" / "v1")
    with caplog.at_level("INFO", logger="element_lightning_pose"):
        labels = read_dlc_project(tmp_path)
    np.testing.assert_array_equal(labels.keypoints, truth["v1"])
    assert f"{csv}: read (the labels of CollectedData_Alice.h5 beside it are the same)" in caplog.text


def _moved(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame.iloc[1, 2] += 4.0  # ear_l's x of the second image, moved by 4 px
    return frame


def _unlabeled(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame.iloc[2, 0:2] = np.nan  # snout of the third image no longer labeled
    return frame


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (_moved, ["labeled-data/v1/img013.png keypoint 'ear_l' is [", "in the .h5 (1 label(s) differ)"]),
        (_unlabeled, ["labeled-data/v1/img023.png keypoint 'snout'", "nan"]),
        (lambda f: f.iloc[:2], ["images only in the CSV ['labeled-data/v1/img023.png']"]),
    ],
    ids=["moved", "unlabeled", "fewer_images"],
)
def test_a_dlc_csv_that_disagrees_with_its_h5_is_refused(tmp_path, edit, words):
    """The CSV won silently over a disagreeing .h5, from which DeepLabCut trains."""
    make_dlc_project(tmp_path, folders={"v1": 3})
    csv = _h5_beside_the_csv(tmp_path / "labeled-data" / "v1", edit)
    with pytest.raises(ProjectError) as caught:
        read_dlc_project(tmp_path)
    message = str(caught.value)
    assert message.startswith(f"{csv}: disagrees with CollectedData_Alice.h5 beside it") and "\n" not in message
    for word in words:
        assert word in message, (word, message)


def test_a_dlc_h5_not_compared_without_pytables_is_said(tmp_path, monkeypatch, caplog):
    make_dlc_project(tmp_path, folders={"v1": 2})
    _h5_beside_the_csv(tmp_path / "labeled-data" / "v1", _moved)
    monkeypatch.setitem(sys.modules, "tables", None)  # as on a machine without PyTables
    with caplog.at_level("WARNING", logger="element_lightning_pose"):
        read_dlc_project(tmp_path)
    assert "CollectedData_Alice.h5 beside it is not compared" in caplog.text and "PyTables" in caplog.text


# ------------------------------------------------------------------ a broken DeepLabCut project (issue 26, item 21)


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("scorer: Alice\nbodyparts: [snout, tail\n", "config.yaml: not valid YAML (expected ',' or ']'"),
        (b"\x89PNG\r\n\x1a\n\xff\xfe\x00", "config.yaml: not a text file (byte 0x89 at 0 is not UTF-8)"),
        (b"scorer: \x00", "config.yaml: not valid YAML (unacceptable character #x0000"),
        ("", "config.yaml: empty"),
        ("- snout\n- tail\n", "config.yaml: a YAML list, not a mapping of DeepLabCut settings"),
        ("scorer: Alice\nbodyparts: snout\n", "config.yaml: bodyparts must be a non-empty list of names"),
    ],
    ids=["invalid", "binary", "nul", "empty", "list", "bodyparts"],
)
def test_a_broken_dlc_config_says_what_is_wrong(tmp_path, capsys, content, words):
    """Each was reported as "no labels found"."""
    from element_lightning_pose.cli import main

    make_dlc_project(tmp_path / "dlc", folders={"v1": 2})
    config = tmp_path / "dlc" / "config.yaml"
    config.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ProjectError) as caught:
        load_project(tmp_path / "dlc")
    assert words in str(caught.value) and "\n" not in str(caught.value)
    assert main(["train", str(tmp_path / "dlc"), "--model-dir", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1 and "no labels found" not in err
    assert not (tmp_path / "m").exists()


def test_a_dlc_config_without_labeled_data_says_so(tmp_path):
    make_dlc_project(tmp_path, folders={"v1": 2})
    shutil.rmtree(tmp_path / "labeled-data")
    with pytest.raises(ProjectError, match=r"labeled-data: folder not found; .*config\.yaml is a DeepLabCut config"):
        detect_layout(tmp_path)


def test_another_tools_config_yaml_is_not_taken_for_deeplabcuts(tmp_path):
    """A Lightning Pose config.yaml (no bodyparts) beside no labels: still "no labels found"."""
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"data": {"image_resize": [64, 64]}}))
    with pytest.raises(ProjectError, match="no labels found"):
        detect_layout(tmp_path)
