"""Parameter-set tables whose rows are identified by a hash of their parameters.

``TrainingParamSet``, ``SmoothingParamSet`` and ``TriangulationParamSet`` store a parameter
dict and its hash (``param_set_hash``, unique). They share one way in,
:meth:`ImmutableParams.insert_canonical` (each table's ``insert_new_params`` calls it): the
parameters are validated by the table's engine model and stored with defaults filled in; the
same parameters again return the existing set's id; an id given for a set that already holds
other parameters is refused, naming the keys that differ, and nothing is inserted; parameters
that are not a mapping (a method name, None, a list) are refused naming the table.

Updating ``params`` in place would leave the hash describing other parameters, and would
silently change what every result computed with the set claims to have used; so those updates
are refused. A new set is inserted instead. Descriptions may change. No engine model is
imported here (each table validates with its own); the DataJoint calls are the ones both
generations share, or ``dj_compat``'s.
"""

from __future__ import annotations

import hashlib
import json
import reprlib
from collections.abc import Iterator, Mapping
from typing import Any

from element_lightning_pose.dj_compat import fetch_column
from element_lightning_pose.engine.config import dotted_params
from element_lightning_pose.engine.errors import ElpError


class ParamSetUpdateError(ElpError, ValueError):
    """An ``update1`` that would change a parameter set's parameters or hash."""


class ParamSetConflictError(ElpError, ValueError):
    """A parameter-set id given at insert already holds different parameters."""


class ParamSetTypeError(ElpError, TypeError):
    """Parameters given at insert are not a mapping of parameter names to values."""


def params_hash(params: Mapping[str, Any]) -> str:
    """MD5 hex digest of the canonical JSON of ``params`` (key order does not matter)."""
    canonical = json.dumps(params, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.md5(canonical.encode()).hexdigest()


class ImmutableParams:
    """Mixin for a DataJoint parameter-set table: one insert routine, and no ``update1`` of
    ``params`` or its hash.

    Use it before the DataJoint tier: ``class TrainingParamSet(ImmutableParams, dj.Lookup)``,
    with one primary-key attribute (the id), ``paramset_desc``, ``param_set_hash`` and
    ``params``. A table that inserts through :meth:`insert_canonical` defines
    :meth:`canonical_params`. Works on DataJoint 0.14 and 2.x alike: both define ``insert1``
    and ``update1(row)`` on the table class.
    """

    immutable_attributes: tuple[str, ...] = ("params", "param_set_hash")
    # shown in the error for parameters that are not a mapping
    params_example: str = "{}"

    @classmethod
    def canonical_params(cls, params: Mapping[str, Any]) -> dict:
        """``params`` validated, defaults filled in (the table's engine model); raises naming the key at fault."""
        raise NotImplementedError(f"{cls.__name__} does not define canonical_params()")

    @classmethod
    def insert_canonical(cls, paramset_desc: str, params: Mapping[str, Any], idx: int | None = None) -> int:
        """Validate ``params`` and insert them; returns the id of the new or identical existing set.

        Parameters that only differ from an existing set by defaults or key order are that set
        (its id is returned, whatever ``idx`` says). Without ``idx`` the new set gets the next
        free id. An ``idx`` that holds other parameters raises :class:`ParamSetConflictError`
        naming the table, the id and the differing keys; nothing is inserted. ``params`` that are
        not a mapping raise :class:`ParamSetTypeError` naming the table.
        """
        if not isinstance(params, Mapping):
            raise ParamSetTypeError(
                f"{cls.__name__}.insert_new_params({paramset_desc!r}, ...): params must be a mapping of "
                f"parameters, e.g. {cls.params_example}, got {type(params).__name__} {reprlib.repr(params)}"
            )
        table = cls()
        (id_name,) = table.primary_key  # type: ignore[attr-defined]
        canonical = cls.canonical_params(dict(params))
        digest = params_hash(canonical)
        existing = table & {"param_set_hash": digest}  # type: ignore[operator]
        if existing:
            return int(existing.fetch1(id_name))
        if idx is None:
            idx = int(max(fetch_column(table, id_name), default=0)) + 1
        else:
            held = table & {id_name: idx}  # type: ignore[operator]
            if held:
                differing = differing_keys(held.fetch1("params"), canonical)
                raise ParamSetConflictError(
                    f"{cls.__name__} {id_name}={idx} already holds different parameters "
                    f"(differing: {', '.join(differing) or 'param_set_hash'}); "
                    f"omit {id_name} to insert them as a new set, or choose a free {id_name}"
                )
        table.insert1(  # type: ignore[attr-defined]
            {id_name: idx, "paramset_desc": paramset_desc, "param_set_hash": digest, "params": canonical}
        )
        return int(idx)

    def update1(self, row: Mapping[str, Any], *args: Any, **kwargs: Any) -> Any:
        """Update secondary attributes other than the parameters and their hash."""
        refused = [name for name in self.immutable_attributes if name in row]
        if refused:
            key = {k: _plain(row[k]) for k in self.primary_key if k in row}  # type: ignore[attr-defined]
            raise ParamSetUpdateError(
                f"{self.__class__.__name__} {key}: {' and '.join(refused)} cannot be updated "
                f"(the hash identifies the parameters, and results computed with this set "
                f"record them); insert a new set with insert_new_params(...) instead"
            )
        return super().update1(row, *args, **kwargs)  # type: ignore[misc]


def differing_keys(stored: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """The dotted keys (``training.max_epochs``) whose values differ between two parameter dicts,
    sorted; a key present in one only counts. Arrays read back from a blob equal their lists."""
    old_leaves, new_leaves = dict(_leaves(stored)), dict(_leaves(new))
    return sorted(
        key
        for key in old_leaves.keys() | new_leaves.keys()
        if key not in old_leaves or key not in new_leaves or old_leaves[key] != new_leaves[key]
    )


def _leaves(params: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    """(dotted key, canonical JSON of the value) of every non-dict value in nested dicts."""
    for name, value in dotted_params(params, prefix).items():
        yield name, json.dumps(_as_python(value), sort_keys=True, default=str)


def _as_python(value: Any) -> Any:
    """Numpy arrays and scalars (a blob read back) as the lists and numbers they hold."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_as_python(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _as_python(v) for k, v in value.items()}
    return value


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value it holds, so that messages read ``{'idx': 2}``."""
    return value.item() if hasattr(value, "item") and getattr(value, "ndim", None) == 0 else value
