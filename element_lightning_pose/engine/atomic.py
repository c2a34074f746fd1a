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
"""

from __future__ import annotations

import glob
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PathLike = str | os.PathLike


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


@contextmanager
def atomic_output(path: PathLike, mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` with ``mode``
    (default: 0666 less the umask), on any error it is deleted and ``path`` is untouched."""
    path = Path(path)
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
    directory at ``path`` but never a mixed one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=f".tmp{path.suffix}", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, default_dir_mode())
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=f".tmp{path.suffix}", dir=path.parent))
            os.replace(path, old / "old")
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


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
