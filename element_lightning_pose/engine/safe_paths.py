"""Names that become file names, and computed paths that must stay inside their root.

Two kinds of value reach a path in this project:

- **Names** of cameras and views: ``<camera>.csv`` of ``elp triangulate --reproject``, the
  per-view model folders and frame caches of multi-view training. :func:`check_name` allows a
  file-name-safe set only (letters, digits, ``_ - . +``; not starting with ``.`` or ``-``; at
  most :data:`MAX_NAME_LENGTH` characters), checked where the names enter (calibration files,
  the calibration tables, the training configuration) and again where a file is named.
- **Path parts** computed from table rows (a key value, a folder column). :func:`check_path_part`
  refuses what could leave a folder (``/``, ``\\``, ``.``, ``..``, NUL, empty), and
  :func:`inside_root` resolves the root and the target (symbolic links followed) and refuses a
  target outside the root, before anything is written.

Body-part names never become path parts (they are CSV columns and NWB object names), so they are
not restricted here. Errors are :class:`UnsafePathError` (an ``ElpError``: one line, rc 2 in ``elp``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from element_lightning_pose.engine.errors import ElpError
from element_lightning_pose.engine.types import PathLike

MAX_NAME_LENGTH = 64
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*")
_LEAVING = ("/", "\\", "\0")


class UnsafePathError(ElpError):
    """A name or a computed path would leave its folder or root; the message names the value."""


def check_name(name: object, what: str = "name") -> str:
    """``name`` if it is a file-name-safe camera or view name, else :class:`UnsafePathError`.

    ``what`` says where it comes from (``"camera name in calibration.toml"``) and opens the message.
    """
    if not isinstance(name, str):
        raise UnsafePathError(f"{what} {name!r} is not a string")
    if len(name) > MAX_NAME_LENGTH or not _NAME.fullmatch(name):
        raise UnsafePathError(
            f"{what} {name!r} is not a file-name-safe name: use letters, digits, '_', '-', '.' and '+' "
            f"(not '.' or '-' first), at most {MAX_NAME_LENGTH} characters; it names files and folders"
        )
    return name


def check_path_part(value: str, what: str) -> str:
    """``value`` if it can be one path component (no separator, not ``.``/``..``, no NUL, not
    empty), else :class:`UnsafePathError` opening with ``what`` (e.g. ``"key subject='x'"``)."""
    if value in ("", ".", ".."):
        raise UnsafePathError(f"{what} cannot name a folder ({'empty' if not value else repr(value)})")
    bad = [repr(c) for c in _LEAVING if c in value]
    if bad:
        raise UnsafePathError(f"{what} cannot name a folder: it holds {', '.join(bad)}")
    return value


def inside_root(root: PathLike, target: PathLike, what: str) -> Path:
    """``root / target`` (``target`` relative, or absolute) after checking that it resolves inside
    ``root`` (both resolved: ``..`` and symbolic links followed). Returns the joined path, not the
    resolved one, so that it stays relative to ``root`` as the tables store it."""
    text = os.fspath(target)
    if "\0" in text or "\0" in os.fspath(root):
        raise UnsafePathError(f"{what} {text!r} holds a NUL character")
    joined = Path(root) / text
    real_root = Path(root).resolve()
    real = joined.resolve()
    if real != real_root and real_root not in real.parents:
        raise UnsafePathError(
            f"{what} {text!r} leads to {real}, outside its root {real_root}; nothing was written "
            "(a symbolic link inside the root that points out of it counts as outside)"
        )
    return joined
