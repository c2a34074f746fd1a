"""The one way to train: :func:`train` (``elp train``, the pipeline's ``ModelTraining``, the docs).

It chooses, from the configuration and the project on disk:

- the **layout**: one network over every view (``data.multiview=shared``, and any single-view
  project), or one network per view of a multi-view project (``per_view``, :mod:`.per_view`);
- the **kind** of each network: one stage (:mod:`.single`), or a detector and a pose model on
  crops (``crop_zoom.enabled``, :mod:`.crop_zoom`).

The trainers below never import this module: :func:`train_per_view` is handed the kind
dispatch (:func:`train_network`) for its views.

A run stopped by SIGTERM (a scheduler's kill, the app's cancel) or SIGINT (Ctrl-C) raises
:class:`TrainingInterrupted`: Lightning alone catches SIGTERM and ends ``fit()`` as if training
had finished, so the caller would be handed a result for a run that left no model.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from element_lightning_pose.engine.allocation import reuse_freed_memory
from element_lightning_pose.engine.config import AUTO_PRESET, ConfigError, TrainConfig
from element_lightning_pose.engine.data.projects import project_views
from element_lightning_pose.engine.errors import ElpError
from element_lightning_pose.engine.training.advice import resolve_preset
from element_lightning_pose.engine.training.crop_zoom import train_crop_zoom
from element_lightning_pose.engine.training.per_view import PerViewResult, train_per_view
from element_lightning_pose.engine.training.single import TrainResult, train_single
from element_lightning_pose.engine.types import PathLike

logger = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class TrainingInterrupted(ElpError, SystemExit):
    """A run stopped by a signal before it finished; the message says what is left.

    Also a :class:`SystemExit` whose ``code`` is the status a shell gives a process that the
    signal ended (128 + its number: 143 for SIGTERM, 130 for SIGINT): uncaught, a script exits
    with it, and DataJoint's ``populate(suppress_errors=True)`` stops rather than going on to the
    next key (as it does for its own SIGTERM handler's ``SystemExit``), inserting no row.
    """

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum
        self.code = 128 + signum


class _Stopped(BaseException):
    """Raised by the signal handler of a run; ``train`` turns it into :class:`TrainingInterrupted`."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextmanager
def _signals_stop_the_run(model_dir: Path, resume_from: PathLike | None) -> Iterator[None]:
    """SIGTERM and SIGINT stop the run where it is (``_Stopped``), and become
    :class:`TrainingInterrupted` once the staging folders are gone.

    The caller's handlers are restored afterwards; a signal the caller ignores stays ignored,
    and outside the main thread (where Python cannot set handlers) nothing changes. A forked
    data-loading worker inherits the handler and ignores the signal: its parent stops it.
    """
    before = _identity(model_dir)
    owner = os.getpid()

    def stop(signum: int, frame: FrameType | None) -> None:
        if os.getpid() == owner:
            raise _Stopped(signum)

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in STOP_SIGNALS:
            if signal.getsignal(signum) is not signal.SIG_IGN:
                previous[signum] = signal.signal(signum, stop)
    try:
        yield
    except BaseException as exc:
        stopped = _stop_behind(exc)
        if stopped is None:
            raise
        name = signal.Signals(stopped.signum).name
        message = f"training stopped by {name} before it finished: {_what_is_left(model_dir, before, resume_from)}"
        raise TrainingInterrupted(message, stopped.signum) from None
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _stop_behind(exc: BaseException | None) -> _Stopped | None:
    """The stop that ``exc`` is, or that it arose while handling: a signal sent to a process group
    (the app's cancel) also ends the data-loading workers, and torch raises their deaths while
    Lightning tears the stopped run down."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, _Stopped):
            return exc
        seen.add(id(exc))
        exc = exc.__context__
    return None


def _identity(folder: Path) -> tuple[int, int] | None:
    try:
        found = folder.stat()
    except OSError:
        return None
    return found.st_dev, found.st_ino


def _what_is_left(model_dir: Path, before: tuple[int, int] | None, resume_from: PathLike | None) -> str:
    """What a stopped run leaves: its staging folder, checkpoints included, is deleted
    (``atomic_directory``), so only what was in ``model_dir`` before it remains."""
    after = _identity(model_dir)
    if after is not None and after != before:  # the signal came after the new model was renamed into place
        return f"the run had completed: {model_dir} holds its model"
    gone = "the run's staging folder was deleted with its checkpoints, so nothing of this run is left to resume from"
    if after is None:
        return f"no model directory was written ({model_dir} does not exist); {gone}"
    earlier = model_dir / "checkpoints" / "last.ckpt"
    if resume_from is not None:
        return f"{model_dir} is unchanged; {gone}: resume from {resume_from} again"
    if earlier.is_file():
        return f"{model_dir} is unchanged (the earlier model, whose {earlier} can be resumed); {gone}"
    return f"{model_dir} is unchanged; {gone}"


def train(
    config: TrainConfig | dict | PathLike | None,
    project_root: PathLike,
    model_dir: PathLike,
    *,
    resume_from: PathLike | None = None,
    progress: bool = True,
    one_network: bool = False,
    source: str = "",
) -> TrainResult | PerViewResult:
    """Train on the labeled project at ``project_root`` into ``model_dir``.

    ``config`` is a TrainConfig, a (partial) dict, a YAML path, or None for the defaults; with
    ``preset: auto`` the preset is picked for the project first
    (:func:`.advice.resolve_preset`).
    ``resume_from`` continues one network from a checkpoint (e.g.
    ``model_dir/checkpoints/last.ckpt``). Returns a :class:`TrainResult` for one network, a
    :class:`PerViewResult` for one network per view.

    ``one_network=True`` is for a caller that keeps one network per model directory (the
    pipeline: a ``Model`` row is one network): ``data.multiview=per_view`` on a multi-view
    project is then refused before any training, with a ``ConfigError`` that begins with
    ``source`` (e.g. ``"TrainingParamSet 3"``) and says what to do instead. Without it, the same
    parameter on a single-view project is refused (there are no views to train apart).

    SIGTERM or SIGINT during the run raises :class:`TrainingInterrupted` (a run is never
    returned unfinished); ``model_dir`` is then as it was.
    """
    reuse_freed_memory()  # each batch's activations and gradients reuse the last one's pages
    with _signals_stop_the_run(Path(model_dir), resume_from):
        return _train(config, project_root, model_dir, resume_from, progress, one_network, source)


def _train(
    config: TrainConfig | dict | PathLike | None,
    project_root: PathLike,
    model_dir: PathLike,
    resume_from: PathLike | None,
    progress: bool,
    one_network: bool,
    source: str,
) -> TrainResult | PerViewResult:
    config = TrainConfig.load(config)
    if config.preset == AUTO_PRESET:  # picked from the project now; config.yaml and model.json record the pick
        resolved = resolve_preset(config, project_root)
        for note in resolved.notes:
            logger.info(note)
        config = resolved.config
    if config.data.multiview == "per_view":
        views = project_views(project_root, config.data.csv_file, config.data.view_names)
        if one_network and views:
            prefix = f"{source}: " if source else ""
            raise ConfigError(
                f"{prefix}data.multiview=per_view trains one network per view ({', '.join(v for v, _ in views)}), "
                "but one network is trained here: train each view as a project of its own "
                f"(data.csv_file={views[0][1]}, ...; in the pipeline, one VideoSet per view, "
                "csv_file='CollectedData_<view>.csv'), or use data.multiview=shared"
            )
        if not one_network:
            if not views:
                raise ConfigError(
                    f"data.multiview=per_view: {project_root} is not a multi-view project "
                    "(set data.csv_file to one CSV per view, or lay it out as CollectedData_<view>.csv)"
                )
            if resume_from is not None:
                raise ConfigError(
                    "data.multiview=per_view: --resume is not supported (resume each view's model_dir/<view>)"
                )
            return train_per_view(config, project_root, model_dir, train_network=train_network, progress=progress)
    return train_network(config, project_root, model_dir, resume_from=resume_from, progress=progress)


def train_network(
    config: TrainConfig,
    project_root: PathLike,
    model_dir: PathLike,
    *,
    resume_from: PathLike | None = None,
    progress: bool = True,
) -> TrainResult:
    """One network of the kind ``config`` asks for: crop zoom (two stages) or one stage."""
    if config.crop_zoom.enabled:
        return train_crop_zoom(config, project_root, model_dir, resume_from=resume_from, progress=progress)
    return train_single(config, project_root, model_dir, resume_from=resume_from, progress=progress)
