"""A project's hand labels as the labeling loop reads and saves them, in the project's own layout.

A :class:`LabelStore` reads the label tables of a project (Lightning Pose's ``CollectedData.csv``,
one ``CollectedData_<view>.csv`` per view of a multi-view project, or DeepLabCut's
``labeled-data/<video>/CollectedData_<scorer>.csv``, with its ``.h5`` twin kept equal) and saves
one frame at a time back into the same file, so that every tool that reads the project reads
the new labels. Saving:

- writes the table through the engine's atomic writer and reads it back with the engine's
  parser before it replaces the old one (a table the engine would refuse is never written);
- refuses a save whose ``base_revision`` is not the revision now on disk
  (:class:`LabelConflictError`): an edit from another tab or another person is never silently
  overwritten;
- appends each changed point to the table's history, ``<table>.history.jsonl`` (when, the
  state, and where the point came from: ``manual``, ``prefilled`` from a model, ``projected``
  from other views, ``copied`` from the previous frame), so "which labels came from this
  round" is a question the files answer.

A point is ``labeled`` (x, y), ``occluded`` (the animal hides it: NaN in the table, so no tool
trains on a guess, and remembered in the history so that the frame is not asked again) or
``unlabeled`` (NaN). A new frame's row is added to every view's table of a multi-view project at
once, so row ``i`` stays the same instant in every view.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from element_lightning_pose.engine.atomic import atomic_output
from element_lightning_pose.engine.data.dlc import dlc_label_files, read_dlc_config, read_dlc_label_file
from element_lightning_pose.engine.data.labels import LabeledFrames, read_labels
from element_lightning_pose.engine.data.projects import DEFAULT_CSV, detect_layout
from element_lightning_pose.engine.errors import ElpError, ProjectError
from element_lightning_pose.engine.labeling.journal import append_entries, read_entries
from element_lightning_pose.engine.types import PathLike

ORIGINS = ("manual", "prefilled", "projected", "copied")
STATES = ("labeled", "occluded", "unlabeled")
HISTORY_SUFFIX = ".history.jsonl"
APP_SCORER = "element-lightning-pose"


class LabelConflictError(ElpError):
    """The labels changed on disk since they were read (another tab or person saved first)."""


@dataclass(frozen=True)
class PointEdit:
    """One body part of one saved frame: its state, position (labeled points) and origin."""

    bodypart: str
    state: str
    x: float | None = None
    y: float | None = None
    origin: str = "manual"

    def __post_init__(self) -> None:
        if self.state not in STATES:
            raise ProjectError(f"body part {self.bodypart!r}: state {self.state!r} is not one of {STATES}")
        if self.origin not in ORIGINS:
            raise ProjectError(f"body part {self.bodypart!r}: origin {self.origin!r} is not one of {ORIGINS}")
        if self.state == "labeled":
            for name, value in (("x", self.x), ("y", self.y)):
                if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value):
                    raise ProjectError(f"body part {self.bodypart!r}: {name} must be a finite number, got {value!r}")


@dataclass
class LabelTable:
    """One label file of the project: its path, view and rows."""

    path: Path
    view: str | None
    scorer: str
    image_paths: list[str]
    keypoints: np.ndarray  # (N, K, 2), NaN = not labeled
    dlc_index: bool = False  # DeepLabCut's three index columns (labeled-data, video, image)
    h5_twin: Path | None = None  # DeepLabCut's .h5 beside the CSV, kept equal to it

    @property
    def image_paths_folder(self) -> str:
        """The folder of a DeepLabCut table's images (its own folder, relative to the project)."""
        return self.path.parent.name and f"labeled-data/{self.path.parent.name}"


@dataclass
class FrameLabels:
    """The labels of one image as the labeler shows them."""

    image: str
    view: str | None
    points: dict[str, tuple[float, float] | None]
    occluded: list[str] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)


class LabelStore:
    """The hand labels of the project at ``root``: read, and saved one frame at a time.

    ``bodyparts`` is needed only for a project that has no label table yet (a new project: its
    first save creates ``CollectedData.csv``, or one CSV per entry of ``views``).
    """

    def __init__(
        self, root: PathLike, *, bodyparts: Sequence[str] | None = None, views: Sequence[str] | None = None
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise ProjectError(f"{self.root}: project folder not found")
        self._new_bodyparts = list(bodyparts) if bodyparts else None
        self._new_views = list(views) if views else None
        self.dlc_scorer: str | None = None  # a DeepLabCut project's scorer: one table per labeled folder
        self.tables, self.bodyparts = self._read_tables()

    # ------------------------------------------------------------------ reading

    def _read_tables(self) -> tuple[list[LabelTable], list[str]]:
        try:
            layout = detect_layout(self.root)
        except ProjectError:
            layout = None
        if layout is None:
            if not self._new_bodyparts:
                raise ProjectError(f"{self.root}: no label table yet; give the body parts of the new project")
            names = [f"CollectedData_{v}.csv" for v in self._new_views] if self._new_views else [DEFAULT_CSV]
            views: list[str | None] = list(self._new_views) if self._new_views else [None]
            empty = np.full((0, len(self._new_bodyparts), 2), np.nan)
            tables = [LabelTable(self.root / n, v, APP_SCORER, [], empty.copy()) for n, v in zip(names, views)]
            return tables, list(self._new_bodyparts)
        if layout.kind == "deeplabcut":
            return self._read_dlc()
        files = [layout.csv_file] if isinstance(layout.csv_file, str) else list(layout.csv_file)
        view_names: list[str | None] = list(layout.view_names) if layout.view_names else [None] * len(files)
        parts = [read_labels(self.root / n, self.root, check_images=False, require_keypoints=False) for n in files]
        for part in parts[1:]:
            if part.bodyparts != parts[0].bodyparts:
                raise ProjectError(
                    f"{part.csv_path}: body parts {part.bodyparts} differ from {parts[0].csv_path.name}'s {parts[0].bodyparts}"
                )
        return [self._table(labels, view) for labels, view in zip(parts, view_names)], list(parts[0].bodyparts)

    def _read_dlc(self) -> tuple[list[LabelTable], list[str]]:
        config = read_dlc_config(self.root)
        self.dlc_scorer = config["scorer"]
        tables = []
        for path in dlc_label_files(self.root):
            labels = read_dlc_label_file(path, self.root, config["bodyparts"], require_keypoints=False)
            csv_path, h5 = path.with_suffix(".csv"), path.with_suffix(".h5")
            # saved as CSV and, where DeepLabCut's .h5 is there (it trains from it), as .h5 too
            table = LabelTable(csv_path, None, config["scorer"], list(labels.image_paths), labels.keypoints.copy())
            table.dlc_index, table.h5_twin = True, h5 if h5.is_file() else None
            tables.append(table)
        return tables, list(config["bodyparts"])

    def _table(self, labels: LabeledFrames, view: str | None) -> LabelTable:
        return LabelTable(labels.csv_path, view, labels.scorer, list(labels.image_paths), labels.keypoints.copy())

    @property
    def views(self) -> list[str | None]:
        return [t.view for t in self.tables]

    def revision(self) -> str:
        """A digest of every label table and history as they are on disk now."""
        digest = hashlib.sha256()
        for table in self.tables:
            for path in (table.path, _history_path(table.path), table.h5_twin):
                if path is not None and path.is_file():
                    digest.update(str(path).encode() + b"\0" + path.read_bytes())
        return digest.hexdigest()[:16]

    def images(self) -> list[tuple[str, str | None]]:
        """Every labeled or queued image, with its view, in table order."""
        return [(image, t.view) for t in self.tables for image in t.image_paths]

    def frame(self, image: str) -> FrameLabels:
        """The labels of ``image`` (a path relative to the project, as the tables list it)."""
        table, row = self._locate(image)
        history = _read_history(table.path, image)
        occluded = [b for b, entry in _last_states(history).items() if entry["state"] == "occluded"]
        points = {
            b: (None if np.isnan(table.keypoints[row, k]).any() else tuple(map(float, table.keypoints[row, k])))
            for k, b in enumerate(self.bodyparts)
        }
        return FrameLabels(image, table.view, points, occluded, history)  # type: ignore[arg-type]

    def counts(self) -> dict[str, dict[str, int]]:
        """Per video folder: frames in the tables, and frames with at least one labeled point."""
        out: dict[str, dict[str, int]] = {}
        for table in self.tables:
            for image, points in zip(table.image_paths, table.keypoints):
                folder = str(PurePosixPath(image).parent)
                entry = out.setdefault(folder, {"frames": 0, "labeled": 0})
                entry["frames"] += 1
                entry["labeled"] += int(np.isfinite(points).all(axis=-1).any())
        return out

    def _locate(self, image: str) -> tuple[LabelTable, int]:
        for table in self.tables:
            if image in table.image_paths:
                return table, table.image_paths.index(image)
        raise ProjectError(f"{self.root}: image {image!r} is in no label table of the project")

    # ------------------------------------------------------------------ saving

    def add_frames(self, images_by_view: Mapping[str | None, Sequence[str]], *, base_revision: str) -> str:
        """Queue new images (already exported into ``labeled-data/``) as unlabeled rows.

        A multi-view project gets one image per view for every instant (the same count in every
        view, in the same order), so row ``i`` stays the same instant in every table. Images
        already listed are skipped. Returns the new revision.
        """
        self._check_revision(base_revision)
        if set(images_by_view) != set(self.views):
            raise ProjectError(
                f"{self.root}: new frames name views {sorted(map(str, images_by_view))}, the project has {self.views}"
            )
        counts = {len(v) for v in images_by_view.values()}
        if len(counts) != 1:
            raise ProjectError(f"{self.root}: new frames differ in number between the views ({sorted(counts)})")
        if self.dlc_scorer is not None:
            self._add_dlc_tables(images_by_view[None])
        changed = []
        for table in self.tables:
            wanted = images_by_view[table.view]
            if table.dlc_index:  # DeepLabCut: each labeled folder's table holds its own images
                wanted = [
                    image for image in wanted if PurePosixPath(image).parent == PurePosixPath(table.image_paths_folder)
                ]
            fresh = [image for image in wanted if image not in table.image_paths]
            for image in fresh:
                if not (self.root / image).is_file():
                    raise ProjectError(f"{self.root / image}: image not found (export the frame first)")
            if fresh:
                table.image_paths += fresh
                nan = np.full((len(fresh), len(self.bodyparts), 2), np.nan)
                table.keypoints = np.concatenate([table.keypoints, nan])
                changed.append(table)
        for table in changed:
            self._write(table)
        return self.revision()

    def _add_dlc_tables(self, images: Sequence[str]) -> None:
        """A table for each labeled folder of ``images`` that has none yet (DeepLabCut keeps
        ``labeled-data/<video>/CollectedData_<scorer>.csv``, and its ``.h5`` where PyTables is)."""
        known = {t.image_paths_folder for t in self.tables}
        for folder in sorted({str(PurePosixPath(image).parent) for image in images} - known):
            parts = PurePosixPath(folder).parts
            if len(parts) != 2 or parts[0] != "labeled-data":
                raise ProjectError(
                    f"{self.root}: DeepLabCut keeps labeled frames in labeled-data/<video>/, not {folder}/"
                )
            csv_path = self.root / folder / f"CollectedData_{self.dlc_scorer}.csv"
            empty = np.full((0, len(self.bodyparts), 2), np.nan)
            table = LabelTable(csv_path, None, str(self.dlc_scorer), [], empty, dlc_index=True)
            table.h5_twin = csv_path.with_suffix(".h5") if _has_pytables() else None
            self.tables.append(table)

    def save_frame(self, image: str, edits: Sequence[PointEdit], *, base_revision: str) -> str:
        """Save the points of ``image`` that ``edits`` names; others stay as they are. Returns the
        new revision; :class:`LabelConflictError` when the tables changed since ``base_revision``."""
        self._check_revision(base_revision)
        table, row = self._locate(image)
        unknown = [e.bodypart for e in edits if e.bodypart not in self.bodyparts]
        if unknown:
            raise ProjectError(f"{image}: unknown body part(s) {unknown}; the project's are {self.bodyparts}")
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        entries = []
        for edit in edits:
            k = self.bodyparts.index(edit.bodypart)
            table.keypoints[row, k] = (edit.x, edit.y) if edit.state == "labeled" else (np.nan, np.nan)
            entries.append(
                {"time": now, "image": image, "bodypart": edit.bodypart, "state": edit.state, "origin": edit.origin}
                | ({"x": edit.x, "y": edit.y} if edit.state == "labeled" else {})
            )
        self._write(table)
        append_entries(_history_path(table.path), entries)
        return self.revision()

    def _check_revision(self, base_revision: str) -> None:
        current = LabelStore(self.root, bodyparts=self.bodyparts, views=self._new_views).revision()
        if base_revision != current:
            raise LabelConflictError(
                f"{self.root}: the labels changed on disk since this page read them (revision {base_revision}, "
                f"now {current}); reload the frame to see the other edit before saving"
            )

    def _write(self, table: LabelTable) -> None:
        """Write ``table`` in its own layout, checked by the engine's parser before it replaces the file."""
        columns = pd.MultiIndex.from_product(
            [[table.scorer], self.bodyparts, ["x", "y"]], names=["scorer", "bodyparts", "coords"]
        )
        values = table.keypoints.reshape(len(table.image_paths), -1)
        if table.dlc_index:
            index = pd.MultiIndex.from_tuples([tuple(PurePosixPath(p).parts) for p in table.image_paths])
        else:
            index = pd.Index(table.image_paths)
        frame = pd.DataFrame(values, index=index, columns=columns)
        with atomic_output(table.path) as tmp:
            frame.to_csv(tmp)
            read_labels(tmp, self.root, check_images=False, require_keypoints=False)  # our reader takes it
        if table.h5_twin is not None:
            with atomic_output(table.h5_twin) as tmp:
                frame.to_hdf(tmp, key="df_with_missing", mode="w")


def _has_pytables() -> bool:
    try:
        import tables  # noqa: F401  (optional: pandas' HDF5 backend, for DeepLabCut's .h5)
    except ImportError:
        return False
    return True


def _history_path(table: Path) -> Path:
    return table.with_name(table.name + HISTORY_SUFFIX)


def _read_history(table: Path, image: str) -> list[dict]:
    return [entry for _, entry in read_entries(_history_path(table)) if entry.get("image") == image]


def _last_states(history: list[dict]) -> dict[str, dict]:
    last: dict[str, dict] = {}
    for entry in history:
        last[str(entry.get("bodypart"))] = entry
    return last
