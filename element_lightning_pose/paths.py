"""Paths stored relative to the lab's data roots, so a pipeline moves between machines.

The linking module passed to ``activate()`` provides ``get_lp_root_data_dir()`` (one path or
a list) and optionally ``get_lp_processed_data_dir()``. Tables store paths relative to one of
those roots; these helpers turn them back into absolute paths on whichever machine runs the
worker. :class:`LinkedSchema` is what every schema module (train, model, ensemble, multicam)
keeps of its activation: the checked linking module, and the roots it names. No DataJoint
import here (a schema's own ``activate`` is called).
"""

from __future__ import annotations

import datetime
import hashlib
import importlib
import inspect
import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from element_lightning_pose.engine.safe_paths import check_path_part
from element_lightning_pose.engine.types import PathLike


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


def check_linking_module(linking_module: Any, required: Iterable[str], schema_label: str) -> ModuleType:
    """Import the linking module (a module or its name) and check that it provides ``required``."""
    if isinstance(linking_module, str):
        linking_module = importlib.import_module(linking_module)
    if not inspect.ismodule(linking_module):
        raise TypeError(
            f"{schema_label}.activate(): linking_module must be a module or a module name, "
            f"not {type(linking_module).__name__}"
        )
    required = tuple(required)
    missing = [name for name in required if not hasattr(linking_module, name)]
    if missing:
        raise AttributeError(
            f"{schema_label}.activate(): the linking module {linking_module.__name__!r} lacks "
            f"{', '.join(missing)} (required: {', '.join(required)})"
        )
    return linking_module


class LinkedSchema:
    """A schema module's activation: its checked linking module and the directories it names.

    One per schema module (``_LINK = paths.LinkedSchema("model", REQUIRED)``); the module's
    ``activate()`` checks its own prerequisites, then calls :meth:`activate`; its
    ``root_dirs()`` and ``processed_dir()`` are this object's.
    """

    def __init__(self, schema_label: str, required: tuple[str, ...] = ("get_lp_root_data_dir",)) -> None:
        self.schema_label = schema_label
        self.required = required
        self._module: ModuleType | None = None

    def check(self, linking_module: Any) -> ModuleType:
        """The linking module, imported and checked for everything this schema requires."""
        return check_linking_module(linking_module, self.required, self.schema_label)

    def activate(
        self, schema: Any, schema_name: str, linking_module: Any, *, create_schema: bool, create_tables: bool
    ) -> ModuleType:
        """Check ``linking_module``, activate ``schema`` with its objects, and keep it."""
        module = self.check(linking_module)
        schema.activate(
            schema_name, create_schema=create_schema, create_tables=create_tables, add_objects=module.__dict__
        )
        self._module = module
        return module

    def linking_module(self) -> ModuleType:
        """The linking module given to ``activate()``."""
        if self._module is None:
            raise RuntimeError(
                f"{self.schema_label} schema is not activated: call {self.schema_label}.activate(...) first"
            )
        return self._module

    def root_dirs(self) -> list[Path]:
        """The root data directories of the linking module (:func:`root_dirs`)."""
        return root_dirs(self.linking_module())

    def processed_dir(self) -> Path:
        """Where this schema writes outputs (:func:`processed_dir`)."""
        return processed_dir(self.linking_module())


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


def key_folder_name(key: Mapping[str, Any], attributes: Iterable[str]) -> str:
    """The folder name of the values of ``attributes`` in ``key`` (as fetched from the database:
    a datetime as a datetime). The one spelling of a key as a folder, shared by every output.

    Different keys never share a folder. A key whose string values are plain (letters, digits,
    ``_ - . +``, a letter or digit first) keeps the historical name, the values joined by ``_``
    (datetimes with ``_`` and ``-`` for the space and colons), as long as no string value after
    the first holds ``_`` (the join would be ambiguous); any other key gets a readable stem plus
    ``~`` and 12 hex digits of the SHA-256 of its exact values (``k 1`` and ``k_1``, ``a:b`` and
    ``a-b`` get different folders). A value holding ``/``, ``\\`` or NUL, or that is empty,
    ``.`` or ``..``, is refused (:class:`~element_lightning_pose.engine.safe_paths.UnsafePathError`
    naming the attribute and value).
    """
    attributes = list(attributes)
    values = [key[a] for a in attributes]
    for attribute, value in zip(attributes, values):
        check_path_part(str(value), f"key value {attribute}={value!r}")
    spelled = [_spelling(v) for v in values]
    strings = [s for s, v in zip(spelled, values) if isinstance(v, str)]
    typed = [s for s, v in zip(spelled, values) if not isinstance(v, str)]
    historical = "_".join(spelled)
    if (
        all(_PLAIN_STRING.fullmatch(s) for s in strings)
        and not any("_" in s for s in strings[1:])
        and all(_PLAIN_TYPED.fullmatch(s) for s in typed)
        and len(historical) <= _MAX_FOLDER_NAME
    ):
        return historical
    exact = json.dumps([[a, str(v)] for a, v in zip(attributes, values)], ensure_ascii=False)
    digest = hashlib.sha256(exact.encode()).hexdigest()[:12]
    stem = re.sub(r"[^A-Za-z0-9_.+-]+", "_", historical).lstrip("._-+")[:80]
    return f"{stem or 'key'}~{digest}"


_PLAIN_STRING = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
_PLAIN_TYPED = re.compile(r"[A-Za-z0-9_.+-]+")  # ints (a sign), dates, datetimes after _spelling
_MAX_FOLDER_NAME = 200


def _spelling(value: Any) -> str:
    if isinstance(value, (datetime.date, datetime.datetime)):
        return str(value).replace(" ", "_").replace(":", "-")
    return str(value)
