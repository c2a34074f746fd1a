"""Paths stored relative to the lab's data roots, so a pipeline moves between machines.

The linking module passed to ``activate()`` provides ``get_lp_root_data_dir()`` (one path or
a list) and optionally ``get_lp_processed_data_dir()``. Tables store paths relative to one of
those roots; these helpers turn them back into absolute paths on whichever machine runs the
worker. No DataJoint import here.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

PathLike = str | os.PathLike


def _as_list(value) -> list[Path]:
    if value is None:
        return []
    if isinstance(value, (str, os.PathLike)):
        return [Path(value)]
    return [Path(v) for v in value]


def root_dirs(linking_module: ModuleType) -> list[Path]:
    """The root data directories named by ``get_lp_root_data_dir()`` (at least one)."""
    roots = _as_list(linking_module.get_lp_root_data_dir())
    if not roots:
        raise ValueError("get_lp_root_data_dir() returned no directory")
    return roots


def processed_dir(linking_module: ModuleType) -> Path:
    """Where outputs go: ``get_lp_processed_data_dir()`` if defined, else the first root."""
    getter = getattr(linking_module, "get_lp_processed_data_dir", None)
    found = _as_list(getter()) if getter else []
    return found[0] if found else root_dirs(linking_module)[0]


def find_full_path(roots: Iterable[PathLike], relative_path: PathLike) -> Path:
    """The absolute path of ``relative_path`` under the first root that holds it."""
    relative_path = Path(relative_path)
    roots = [Path(r) for r in roots]
    if relative_path.is_absolute():
        if relative_path.exists():
            return relative_path
        raise FileNotFoundError(f"{relative_path} does not exist")
    for root in roots:
        candidate = root / relative_path
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"{relative_path} is not found under any root data directory: {[str(r) for r in roots]}")


def find_root_directory(roots: Iterable[PathLike], full_path: PathLike) -> Path:
    """The root that contains ``full_path``."""
    full_path = Path(full_path).absolute()
    for root in (Path(r).absolute() for r in roots):
        if full_path == root or root in full_path.parents:
            return root
    raise ValueError(f"{full_path} is not inside any root data directory: {[str(r) for r in roots]}")


def relative_to_roots(roots: Iterable[PathLike], path: PathLike) -> str:
    """``path`` (absolute, or already relative to a root) as a POSIX path relative to its root."""
    roots = [Path(r) for r in roots]
    path = Path(path)
    if not path.is_absolute():
        find_full_path(roots, path)  # must exist under some root
        return path.as_posix()
    return path.absolute().relative_to(find_root_directory(roots, path)).as_posix()


def key_folder_name(key: dict, attributes: Iterable[str]) -> str:
    """A folder name for the values of ``attributes`` in ``key``: joined by ``_``, with spaces
    and colons (a datetime's) replaced so the name is portable. The one spelling of a key as a
    folder, shared by the prediction and ensemble outputs."""
    return "_".join(str(key[a]).replace(" ", "_").replace(":", "-") for a in attributes)
