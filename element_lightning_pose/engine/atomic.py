"""Atomic file output: write beside the target, rename into place, never leave a partial file.

Every file the project writes (CSVs, YAML/JSON, checkpoints, videos, figures, NWB, frame
caches, the local database's state) goes through this module, so a crash or an exception
leaves either the old file or nothing, and the new file gets an ordinary mode:

- ``mode=None`` (the default) gives what ``open()`` would give, 0666 less the umask (0644 under
  umask 022), so other accounts of the lab can read the output. ``tempfile.mkstemp`` alone
  would leave 0600, which is what this module exists to avoid.
- ``mode=0o600`` is for secrets: the temporary file is created 0600 and never widened, so the
  content is not readable by others even for a moment.

Temporary names are ``.<stem>.<pid>.<random>.tmp<suffix>`` in the target's directory (same
file system, so ``os.replace`` is atomic; same suffix, so writers that pick a format from the
name, such as OpenCV or matplotlib, still work). A process killed mid-write leaves such a
file behind; the next write to the same target removes those whose process is gone.

A target that exists and is not a regular file (a folder, a device, a pipe, a socket) is
refused (:class:`OutputError`), never replaced: as root, ``-o /dev/sda`` would otherwise swap
the device node for a file. The null device is the one exception: an output sent there is
written to a temporary outside ``/dev`` and discarded, which is what writing to it means.
:func:`check_output` applies the same rules, and the others an ``elp`` command checks before
any work (an output that is one of its inputs, a read-only folder, a path under a file).
"""

from __future__ import annotations

import glob
import os
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from element_lightning_pose.engine.errors import ElpError
from element_lightning_pose.engine.types import PathLike

# Kernel pseudo-file systems: writing there changes the system, never makes an output file.
_PSEUDO_FILE_SYSTEMS = (Path("/proc"), Path("/sys"))


class OutputError(ElpError):
    """An output cannot be written where asked; the message names the output and why."""


def default_file_mode() -> int:
    """The mode ``open()`` would give a new file: 0666 less the umask."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def default_dir_mode() -> int:
    """The mode ``mkdir()`` would give a new directory: 0777 less the umask."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o777 & ~mask


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine (another user's counts). The one check
    shared by the stale-temporary cleanup, ``localdb`` and the jobs' liveness."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _temp_prefix(path: Path) -> str:
    return f".{path.stem}.{os.getpid()}."


def remove_stale_temporaries(path: PathLike) -> list[Path]:
    """Delete the temporaries a killed writer of ``path`` left (their pid no longer runs)."""
    path = Path(path)
    removed: list[Path] = []
    if not path.parent.is_dir():
        return removed
    for candidate in path.parent.glob(f".{glob.escape(path.stem)}.*.tmp{glob.escape(path.suffix)}"):
        pid_text = candidate.name[len(path.stem) + 2 :].split(".", 1)[0]
        if not pid_text.isdigit() or pid_alive(int(pid_text)):
            continue
        if candidate.is_dir():
            shutil.rmtree(candidate, ignore_errors=True)
        else:
            candidate.unlink(missing_ok=True)
        removed.append(candidate)
    return removed


def is_null_device(path: PathLike) -> bool:
    """Whether ``path`` is (a link to) the null device."""
    try:
        found, null = os.stat(path), os.stat(os.devnull)
    except (OSError, ValueError):
        return False
    return stat.S_ISCHR(found.st_mode) and found.st_rdev == null.st_rdev


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a named pipe"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def refuse_non_regular(path: PathLike, what: str = "output") -> None:
    """Raise :class:`OutputError` when ``path`` exists (links followed) and is not a regular file."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):  # absent, a dangling link, or under a file (said later)
        return
    if not stat.S_ISREG(mode):
        raise OutputError(
            f"{what} {os.fspath(path)}: is {_kind(mode)}; an output replaces only a regular file "
            "(a device, pipe or socket is never replaced)"
        )


@contextmanager
def _discarded(path: Path) -> Iterator[Path]:
    """A temporary (outside ``/dev``) for an output sent to the null device, deleted afterwards."""
    fd, name = tempfile.mkstemp(prefix=".elp-discarded.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    try:
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)


@contextmanager
def atomic_output(path: PathLike, mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` with ``mode``
    (default: 0666 less the umask), on any error it is deleted and ``path`` is untouched.

    An existing ``path`` that is not a regular file raises :class:`OutputError` before the
    caller writes anything; the null device receives nothing (the output is discarded).
    """
    path = Path(path)
    if is_null_device(path):
        with _discarded(path) as tmp:
            yield tmp
        return
    refuse_non_regular(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, name = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, default_file_mode() if mode is None else mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_directory(path: PathLike) -> Iterator[Path]:
    """Yield an empty temporary directory beside ``path``; on success it takes ``path``'s place
    (an existing directory there is replaced whole), on any error it is deleted.

    The swap is two renames (old aside, new in), so a crash between them can leave no
    directory at ``path`` but never a mixed one. An existing ``path`` that is not a folder
    raises :class:`OutputError` (a file there is never deleted to make room).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"output folder {path}: exists and is not a folder; it is not replaced")
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=f".tmp{path.suffix}", dir=path.parent))
    try:
        yield tmp
        replace_directory(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_directory(source: PathLike, target: PathLike) -> Path:
    """Move the folder ``source`` to ``target`` on the same file system, replacing a folder there
    whole, and give it the mode a new folder gets (:func:`default_dir_mode`).

    Two renames (the old folder aside, the new one in): a crash between them can leave no
    folder at ``target``, never a mixed one.
    """
    source, target = Path(source), Path(target)
    if target.exists() and not target.is_dir():
        raise OutputError(f"output folder {target}: exists and is not a folder; it is not replaced")
    os.chmod(source, default_dir_mode())
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=_temp_prefix(target), suffix=f".tmp{target.suffix}", dir=target.parent))
        os.replace(target, old / "old")
        os.replace(source, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(source, target)
    return target


def write_text_atomic(path: PathLike, text: str, mode: int | None = None) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_output` for ``mode``)."""
    with atomic_output(path, mode=mode) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_bytes_atomic(path: PathLike, data: bytes, mode: int | None = None) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_output` for ``mode``)."""
    with atomic_output(path, mode=mode) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def _nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists (links followed)."""
    for candidate in (path, *path.parents):
        if os.path.exists(candidate):
            return candidate
    return Path(path.anchor or ".")


def _check_writable_folder(folder: Path, target: Path, what: str) -> None:
    """The folder in which ``target`` is (or will be) created exists as far as it goes, is a
    folder, and this account may create files in it."""
    found = _nearest_existing(folder)
    if not found.is_dir():
        raise OutputError(f"{what} {target}: {found} is a file, so nothing can be created under it")
    if not os.access(found, os.W_OK | os.X_OK):
        raise OutputError(f"{what} {target}: {found} is not writable (permissions or a read-only file system)")


def check_output(
    target: PathLike,
    *,
    inputs: Iterable[PathLike] = (),
    folder: bool = False,
    replaced_whole: bool = False,
    what: str = "output",
) -> Path:
    """Check, before any work, that ``target`` can be written as an output; returns it as a Path.

    Refused with :class:`OutputError` (``what`` opens the message, e.g. ``"-o"``): a target
    under ``/proc`` or ``/sys``; for a file (``folder=False``): an existing folder, device, pipe
    or socket (the null device is accepted: the output is discarded); for a folder: an existing
    file; a parent path that runs through a file; a folder this account cannot write (checked
    on the nearest existing one, so a read-only mount counts); an output that is one of
    ``inputs`` (the same file after links are resolved, ``os.path.samefile``; an input that does
    not exist yet, such as another output of the same command, by its resolved path); and, for a folder
    ``replaced_whole`` (a model directory), one that is or holds an input.
    """
    text = os.fspath(target)
    if "\0" in text:
        raise OutputError(f"{what} {text!r}: holds a NUL character")
    path = Path(text)
    real = path.resolve()
    for pseudo in _PSEUDO_FILE_SYSTEMS:
        if real == pseudo or pseudo in real.parents:
            raise OutputError(f"{what} {path}: is in {pseudo}, a kernel file system, not a place for outputs")
    if folder:
        if path.exists() and not path.is_dir():
            raise OutputError(f"{what} {path}: exists and is not a folder")
        _check_writable_folder(path.parent if replaced_whole else path, path, what)
    else:
        if is_null_device(path):
            return path
        refuse_non_regular(path, what)
        _check_writable_folder(path.parent, path, what)
    for given in inputs:  # an input not written yet (another output of the command) compares by path
        source = Path(given)
        same = os.path.samefile(source, path) if source.exists() and path.exists() else source.resolve() == real
        if same or (folder and replaced_whole and real in source.resolve().parents):
            raise OutputError(
                f"{what} {path}: {'is' if same else 'holds'} the input {source}; an output never replaces an input"
            )
    return path
