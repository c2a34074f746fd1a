"""A run stopped by a signal: what it raises, and what it keeps to resume from.

SIGTERM (a scheduler's kill or pre-emption, the app's cancel) and SIGINT (Ctrl-C) stop a run
where it is (:func:`signals_stop_the_run`) and raise :class:`TrainingInterrupted`. Lightning
alone catches SIGTERM and ends ``fit()`` as if training had finished, so the caller would be
handed a result for a run that left no model. SIGHUP (the terminal closed) and, in a SLURM job,
SIGUSR1 (SLURM's warning before a time limit) stop it the same way unless the caller handles them.

A one-network run writes into a staging folder that becomes the model directory only when it
finishes. When such a run is stopped after at least one epoch, its staging folder is kept
beside the model directory as ``<model_dir>.stopped`` (:func:`keep_if_stopped`), checkpoints,
splits, history and frame cache included, so the epochs are not lost: resuming from its
``checkpoints/last.ckpt`` into the same model directory carries on from there
(:func:`stopped_checkpoint` finds it for a caller that resumes by itself, the pipeline), and the
run that completes the model directory removes it (:func:`discard_stopped`).

A run of several networks (crop zoom's detector and pose stages, one network per view) is kept
the same way: its staging folder holds each finished network as a model directory of its own and
the network it was stopped in as ``<network>.stopped``. Resuming from any checkpoint inside the
kept folder (:func:`kept_checkpoint` names the one it was stopped at) reuses the finished networks
and goes on with the stopped one from its last epoch.

A stop after a run's last files are written waits for its folder's rename into place
(:func:`stops_held_once_trained`), then ends the run, whose model is complete; one that comes
while they are written keeps the run, without its ``model.json``.

A run in several DDP processes stops in all of them at the same training step
(:func:`stops_agreed_by_processes`), whichever process the signal reached and when.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from types import FrameType
from typing import NoReturn

import yaml

from element_lightning_pose.engine.atomic import atomic_directory, replace_directory
from element_lightning_pose.engine.config import ConfigError, TrainConfig
from element_lightning_pose.engine.errors import ElpError
from element_lightning_pose.engine.model_dir import CONFIG_YAML, MODEL_JSON
from element_lightning_pose.engine.types import PathLike

logger = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# Signals whose default ends the process where it is, run lost, and that stop the run instead
# when the caller left them at that default (:func:`stop_signals_left_at_default`): SIGHUP (the
# terminal of `elp train` closed, an ssh session dropped) and, in a SLURM job, SIGUSR1 (`sbatch
# --signal=USR1@120`, SLURM's warning before a time limit; elsewhere it is left alone, where a
# user may have set faulthandler on it to dump a hung run's stacks). Holding SIGUSR1 also keeps
# Lightning's SLURM requeue handler out (it sets itself only on a signal left at its default):
# that handler saves a checkpoint from inside the signal handler, in the middle of whatever step
# the signal finds (Lightning issue 21406: it can hang there), with a barrier that under DDP
# meets the other processes' collectives out of step, and saves it for Lightning's own resume,
# which this engine never takes.
STOP_SIGNALS_LEFT_AT_DEFAULT = (signal.SIGHUP, signal.SIGUSR1)
STOPPED_SUFFIX = ".stopped"
LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"


class TrainingInterrupted(ElpError, SystemExit):
    """A run stopped by a signal before it finished; the message says what is left.

    Also a :class:`SystemExit` whose ``code`` is the status a shell gives a process that the
    signal ended (128 + its number: 143 for SIGTERM, 130 for SIGINT): uncaught, a script exits
    with it, and DataJoint's ``populate(suppress_errors=True)`` stops rather than going on to the
    next key (as it does for its own SIGTERM handler's ``SystemExit``), inserting no row.
    ``kept`` is the stopped run's folder (``<model_dir>.stopped``) when one was kept.
    """

    def __init__(self, message: str, signum: int, kept: Path | None = None) -> None:
        super().__init__(message)
        self.signum = signum
        self.code = 128 + signum
        self.kept = kept


class RunStopped(BaseException):
    """Raised by the signal handler of a run; :func:`signals_stop_the_run` turns it into
    :class:`TrainingInterrupted`. ``kept``: where :func:`keep_if_stopped` kept the run."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
        self.kept: Path | None = None


def stopped_folder(model_dir: PathLike) -> Path:
    """Where a stopped run into ``model_dir`` is kept: ``<model_dir>.stopped`` beside it."""
    model_dir = Path(model_dir)
    return model_dir.with_name(model_dir.name + STOPPED_SUFFIX)


class _Holding(threading.local):
    """Stop signals held back, and the run's way to raise one (set by :func:`signals_stop_the_run`).

    One per thread: Python runs signal handlers in the main thread, so only the main thread's
    run is stopped by them, and a run trained in another thread must not hold its stops.
    """

    def __init__(self) -> None:
        self.depth = 0  # stops_held_once_trained blocks whose network has trained
        self.signum: int | None = None  # the first stop that came meanwhile, held until the block ends
        self.stop: Callable[[int, FrameType | None], None] | None = None
        self.signals: tuple[int, ...] = ()  # the signals that stop handles
        self.agreeing = False  # a fit runs in several DDP processes: stops wait to be agreed on
        self.waiting: int | None = None  # the first stop that came while agreeing, to be agreed on


_HOLDING = _Holding()


@contextmanager
def stops_held_once_trained() -> Iterator[Callable[[], None]]:
    """Yields ``trained``, to call once the block's run has written its last files into its
    staging folder: a stop signal that comes from then to the block's end waits for it, and is
    raised there. The block then renames the folder into place and removes the kept stopped run,
    so the stop ends a run whose model is complete.

    Before ``trained()`` a stop is kept (:func:`keep_if_stopped`, around the training and the
    writes); after the rename it would find a complete model but a stale kept run beside it. Blocks
    nest (crop zoom's stages inside its run): a stop held by the inner one is raised at its end,
    where the outer run keeps what it has. A block that ends with an error raises the held stop
    too (the stop came first), the error logged and kept as its context.
    """
    holding = False

    def trained() -> None:
        nonlocal holding
        if not holding:
            _HOLDING.depth += 1  # first: a stop from here on is held, none is raised before holding is set
            holding = True

    try:
        yield trained
    except BaseException as error:
        if holding and _HOLDING.depth == 1 and _HOLDING.signum is not None:
            logger.warning("while a stop was held: %s: %s", type(error).__name__, error)
        raise
    finally:
        if holding:
            _HOLDING.depth -= 1
            if _HOLDING.depth == 0 and _HOLDING.signum is not None and _HOLDING.stop is not None:
                signum, _HOLDING.signum = _HOLDING.signum, None
                _HOLDING.stop(signum, None)


@contextmanager
def staged_run(
    model_dir: Path,
    *,
    when: Callable[[], bool],
    keep: bool = True,
    seed: Callable[[Path], None] | None = None,
    started_with: TrainConfig | None = None,
) -> Iterator[tuple[Path, Callable[[], None]]]:
    """The staging folder of a run into ``model_dir`` (:func:`atomic_directory`), and ``written``,
    to call once the run's last files are in it.

    ``when``: whether this process's stage may become the model (DDP's global rank 0, or the only
    process). The stage of any other is discarded when the block ends, however it ends: only
    global rank 0 saves the checkpoints, so another's stage holds no networks, and renamed into
    place it would replace the model with an empty one. The block of such a process ends once
    its networks have trained, before it reads or writes their files.

    ``seed`` fills the folder first (a resumed run's files). From then until ``written()``, a stop
    keeps the run (:func:`keep_if_stopped`, with ``when`` and ``started_with``; not with
    ``keep=False``); after it, a stop waits until the folder is in place and the kept run is
    removed (:func:`stops_held_once_trained`, :func:`discard_stopped`). In a process whose stage
    is discarded, ``written()`` holds nothing.
    """
    with stops_held_once_trained() as trained:

        def written() -> None:
            if when():
                trained()

        try:
            with atomic_directory(model_dir) as stage:
                if seed is not None:
                    seed(stage)  # before the keep: a half-copied stage must not replace the run it came from
                with keep_if_stopped(stage, model_dir, when=when, started_with=started_with) if keep else nullcontext():
                    yield stage, written
                if not when():
                    raise _NotTheModel  # atomic_directory removes the stage on the way out
        except _NotTheModel:
            return
        if keep:
            discard_stopped(model_dir)


class _NotTheModel(Exception):
    """Discards the staging folder of a process whose stage does not become the model."""


@contextmanager
def signals_stop_the_run(model_dir: Path, resume_from: PathLike | None) -> Iterator[None]:
    """SIGTERM and SIGINT stop the run where it is (:class:`RunStopped`), and become
    :class:`TrainingInterrupted` once the staging folders are gone or kept; so do SIGHUP, and
    SIGUSR1 in a SLURM job, where the caller left them at their default
    (:func:`stop_signals_left_at_default`).

    The caller's handlers are restored afterwards; a signal the caller ignores stays ignored,
    and outside the main thread (where Python cannot set handlers) nothing changes. A forked
    data-loading worker inherits the handler and ignores the signal: its parent stops it. Once
    a signal has stopped the run, further ones are ignored while it winds down (a second Ctrl-C,
    a scheduler's repeated SIGTERM): an exception raised in the middle of keeping the stopped
    run could lose it. SIGKILL still ends the process at once.
    """
    before = _identity(model_dir)
    owner = os.getpid()
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        if os.getpid() == owner and not stopping:
            if _HOLDING.depth:  # a trained network's files are being put in place (stops_held_once_trained)
                _HOLDING.signum = _HOLDING.signum or signum
                return
            if _HOLDING.agreeing:  # the DDP processes stop together (StopsAgreedByProcesses)
                _HOLDING.waiting = _HOLDING.waiting or signum
                return
            stopping = True
            raise RunStopped(signum)

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in STOP_SIGNALS:
            if signal.getsignal(signum) is not signal.SIG_IGN:
                previous[signum] = signal.signal(signum, stop)
        for signum in stop_signals_left_at_default():
            previous[signum] = signal.signal(signum, stop)
    outer, _HOLDING.stop = _HOLDING.stop, stop
    outer_signals, _HOLDING.signals = _HOLDING.signals, tuple(previous)
    try:
        yield
    except BaseException as exc:
        stopped = stop_behind(exc)
        if stopped is None:
            raise
        name = signal.Signals(stopped.signum).name
        left = _what_is_left(model_dir, before, resume_from, stopped.kept)
        raise TrainingInterrupted(
            f"training stopped by {name} before it finished: {left}", stopped.signum, stopped.kept
        ) from None
    finally:
        _HOLDING.stop, _HOLDING.signals = outer, outer_signals
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def stop_signals_left_at_default() -> list[signal.Signals]:
    """Those of :data:`STOP_SIGNALS_LEFT_AT_DEFAULT` that stop a run here: at their default, and
    SIGUSR1 only in a SLURM job."""
    in_slurm_job = "SLURM_JOB_ID" in os.environ
    return [
        signum
        for signum in STOP_SIGNALS_LEFT_AT_DEFAULT
        if signal.getsignal(signum) is signal.SIG_DFL and (signum != signal.SIGUSR1 or in_slurm_job)
    ]


def agree_on_stops(processes: int) -> None:
    """Whether the fit about to run in this thread runs in several DDP ``processes``: a stop signal
    then waits until they agree on it (:class:`.callbacks.StopsAgreedByProcesses`)."""
    _HOLDING.agreeing = processes > 1


def stop_waiting() -> int:
    """The stop signal waiting to be agreed on in this process, 0 if none (one waits only while
    the processes agree: whatever ends the agreement takes it)."""
    return _HOLDING.waiting or 0


def stop_agreed(signum: int) -> NoReturn:
    """End the run by ``signum``, which one of the DDP processes got: every one raises it at once."""
    _HOLDING.agreeing, _HOLDING.waiting = False, None
    if _HOLDING.stop is not None:
        _HOLDING.stop(signum, None)  # raises RunStopped, and ignores the signals that follow
    raise RunStopped(signum)


def take_back_the_signals() -> None:
    """While the processes agree on stops, the run's handler again stands for the stop signals in
    place of Lightning's: Lightning broadcasts from inside its SIGTERM handler, a collective wherever
    the signal finds the process, out of step with the other processes'."""
    if not _HOLDING.agreeing or _HOLDING.stop is None or threading.current_thread() is not threading.main_thread():
        return
    for signum in _HOLDING.signals:
        signal.signal(signum, _HOLDING.stop)


@contextmanager
def stops_agreed_by_processes() -> Iterator[None]:
    """A block holding a fit, and every collective after it, whose DDP processes stop together
    (:class:`.callbacks.StopsAgreedByProcesses`, which the fit's trainer must have). A stop that
    came after their last exchange is raised as the block ends: past the collectives, each
    process can stop by itself."""
    try:
        yield
    finally:
        _HOLDING.agreeing = False
        signum, _HOLDING.waiting = _HOLDING.waiting, None
        if signum is not None and _HOLDING.stop is not None:
            _HOLDING.stop(signum, None)


def stop_behind(exc: BaseException | None) -> RunStopped | None:
    """The stop that ``exc`` is, or that it arose while handling: a signal sent to a process group
    (the app's cancel) also ends the data-loading workers, and torch raises their deaths while
    Lightning tears the stopped run down."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, RunStopped):
            return exc
        seen.add(id(exc))
        exc = exc.__context__
    return None


@contextmanager
def keep_if_stopped(
    stage: Path, model_dir: Path, when: Callable[[], bool] = lambda: True, started_with: TrainConfig | None = None
) -> Iterator[None]:
    """Keep the staging folder ``stage`` of a run into ``model_dir`` as ``<model_dir>.stopped``
    when a signal stops the run after its first epoch's checkpoint, in any of its networks (an
    earlier stopped run kept there is replaced); a run stopped before it, or failing otherwise,
    keeps nothing. ``when``
    is asked at that moment (a DDP process other than global rank 0 keeps nothing). A model
    directory named like the kept folder (one with a ``model.json``) is never replaced.
    ``started_with``: the configuration the run started with, written back as the kept run's
    ``config.yaml`` (its last files replace it with the model's own, e.g. crop zoom's resolved
    crop size), so that a caller with that configuration resumes it (:func:`stopped_checkpoint`)."""
    try:
        yield
    except BaseException as exc:
        stopped = stop_behind(exc)
        target = stopped_folder(model_dir)
        if stopped is not None and kept_checkpoint(stage) is not None and when():
            if (target / MODEL_JSON).exists():
                logger.warning("the stopped run is not kept: %s is a model directory", target)
            else:
                try:
                    # a run stopped while writing its last files may have its model.json: a kept
                    # run is resumed, never loaded as a model
                    (stage / MODEL_JSON).unlink(missing_ok=True)
                    if started_with is not None:
                        started_with.to_yaml(stage / CONFIG_YAML)
                    stopped.kept = replace_directory(stage, target)
                except OSError as keep_error:  # the stop goes on; the message says nothing was kept
                    logger.warning("the stopped run's folder %s could not be kept: %s", stage, keep_error)
        raise


def kept_checkpoint(folder: PathLike) -> Path | None:
    """The checkpoint to resume the run kept in ``folder`` from, None when it holds none.

    A one-network run's ``checkpoints/last.ckpt``; in a run of several networks, the newest last
    checkpoint of its networks: the one it was stopped in (``<network>.stopped``), or the last
    finished network where the next one had not finished an epoch.
    """
    folder = Path(folder)
    own = folder / LAST_CHECKPOINT
    if own.is_file():
        return own
    networks = [path for path in folder.glob(f"*/**/{LAST_CHECKPOINT.as_posix()}") if path.is_file()]
    return max(networks, key=lambda path: path.stat().st_mtime_ns, default=None)


def resumes_kept_run(model_dir: PathLike, resume_from: PathLike | None) -> bool:
    """Whether ``resume_from`` is a checkpoint inside the stopped run kept for ``model_dir``."""
    if resume_from is None:
        return False
    return Path(resume_from).resolve().is_relative_to(stopped_folder(model_dir).resolve())


# what makes the networks of a run what they are: a kept run's finished networks are reused only
# by a run that asks for the same (more epochs, another learning rate may differ)
NETWORK_SETTINGS = ("model.backbone", "model.model_type", "data.image_resize", "data.multiview", "crop_zoom")


def check_same_networks(model_dir: PathLike, resume_from: PathLike, config: TrainConfig, what: str) -> None:
    """Refuse to go on with the run of several networks kept for ``model_dir`` (``what``: crop
    zoom, one network per view) from ``resume_from`` unless it is a checkpoint in there and the
    run asks for the same networks (:data:`NETWORK_SETTINGS`)."""
    kept = stopped_folder(model_dir)
    if not resumes_kept_run(model_dir, resume_from):
        raise ConfigError(
            f"{what}: {resume_from}: such a model resumes only the stopped run kept in {kept} "
            "(resume from a checkpoint in there); to go on training one of its networks, resume that network's "
            "model directory as a model of its own"
        )
    if not Path(resume_from).is_file():
        raise FileNotFoundError(f"{resume_from}: checkpoint to resume from not found")
    theirs, ours = TrainConfig.load(kept / CONFIG_YAML).to_dict(), config.to_dict()
    changed = [name for name in NETWORK_SETTINGS if _setting(theirs, name) != _setting(ours, name)]
    if changed:
        was = "; ".join(f"{name} was {_setting(theirs, name)!r}" for name in changed)
        raise ConfigError(
            f"{kept}: its networks were trained with other settings ({was}); resume it with the same ones, "
            "or train again"
        )


def _setting(config: dict, dotted: str) -> object:
    section, _, name = dotted.partition(".")
    return config.get(section, {}).get(name) if name else config.get(section)


def stopped_checkpoint(model_dir: PathLike, config: TrainConfig) -> Path | None:
    """The last checkpoint of a stopped run into ``model_dir`` with the same configuration as
    ``config`` (a caller that resumes by itself: the pipeline re-populating a preempted key),
    else None. A stopped run of another configuration is left alone, and logged."""
    folder = stopped_folder(model_dir)
    checkpoint = kept_checkpoint(folder)
    if checkpoint is None:
        return None
    try:
        theirs = TrainConfig.load(folder / "config.yaml").to_dict()
    except (ElpError, OSError, ValueError, yaml.YAMLError) as exc:
        logger.warning("%s: not resumed: its config.yaml cannot be read (%s)", folder, exc)
        return None
    if theirs != config.to_dict():
        logger.warning("%s: not resumed: it was trained with another configuration", folder)
        return None
    return checkpoint


def discard_stopped(model_dir: PathLike) -> None:
    """Remove the stopped run kept for ``model_dir``: the model directory now holds a whole model.
    A folder of that name that is a model directory itself (a ``model.json``) is left alone."""
    folder = stopped_folder(model_dir)
    if folder.is_dir() and not folder.is_symlink() and not (folder / MODEL_JSON).exists():
        shutil.rmtree(folder, ignore_errors=True)


def _identity(folder: Path) -> tuple[int, int] | None:
    try:
        found = folder.stat()
    except OSError:
        return None
    return found.st_dev, found.st_ino


def _finished_epochs(folder: Path) -> int:
    """Rows of the history (``metrics.csv``, one row per finished epoch) of each network of the
    kept run, 0 if it has none; a network is a folder with ``checkpoints/last.ckpt`` (Lightning's
    own ``logs/.../metrics.csv`` has a row per logged step, and is not counted)."""
    networks = {folder} | {path.parent.parent for path in folder.glob(f"*/**/{LAST_CHECKPOINT.as_posix()}")}
    rows = 0
    for metrics in (network / "metrics.csv" for network in networks):
        try:
            with open(metrics, "rb") as handle:
                rows += max(sum(1 for line in handle if line.strip()) - 1, 0)
        except OSError:
            continue
    return rows


def _what_is_left(
    model_dir: Path, before: tuple[int, int] | None, resume_from: PathLike | None, kept: Path | None
) -> str:
    """What a stopped run leaves: its staging folder kept as ``<model_dir>.stopped``
    (:func:`keep_if_stopped`) or deleted, and whatever was in ``model_dir`` before it."""
    after = _identity(model_dir)
    if after is not None and after != before:  # the signal came after the new model was renamed into place
        return f"the run had completed: {model_dir} holds its model"
    if after is None:
        unchanged = f"no model directory was written ({model_dir} does not exist)"
    else:
        unchanged = f"{model_dir} is unchanged"
    if kept is not None:
        epochs = _finished_epochs(kept)
        if epochs:
            done = f"its {epochs} finished epoch{' is' if epochs == 1 else 's are'}"
        else:
            done = "its checkpoints are"
        return (
            f"{unchanged}; {done} kept in {kept}: resume from {kept_checkpoint(kept)} into {model_dir} "
            "(elp train --resume, train(resume_from=...)) to go on from there"
        )
    gone = "the run's staging folder was deleted with its checkpoints, so nothing of this run is left to resume from"
    if resume_from is not None:
        return f"{unchanged}; {gone}: resume from {resume_from} again"
    earlier = model_dir / LAST_CHECKPOINT
    if after is not None and earlier.is_file():
        return f"{unchanged} (the earlier model, whose {earlier} can be resumed); {gone}"
    return f"{unchanged}; {gone}"
