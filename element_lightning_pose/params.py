"""Parameter-set tables whose rows are identified by a hash of their parameters.

``TrainingParamSet`` and ``SmoothingParamSet`` store a parameter dict and its hash
(``param_set_hash``, unique): ``insert_new_params`` returns the existing set when the same
parameters come again. Updating ``params`` in place would leave the hash describing other
parameters, and would silently change what every model trained with the set claims to have
used; so those updates are refused. A new set is inserted instead. Descriptions may change.
No engine import here; DataJoint is not imported either (the mixin calls the table's own
``update1``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class ParamSetUpdateError(ValueError):
    """An ``update1`` that would change a parameter set's parameters or hash."""


class ImmutableParams:
    """Mixin for a DataJoint parameter-set table: ``update1`` may not touch ``params`` or its hash.

    Use it before the DataJoint tier: ``class TrainingParamSet(ImmutableParams, dj.Lookup)``.
    Works on DataJoint 0.14 and 2.x alike: both define ``update1(row)`` on the table class.
    """

    immutable_attributes: tuple[str, ...] = ("params", "param_set_hash")

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


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value it holds, so that messages read ``{'idx': 2}``."""
    return value.item() if hasattr(value, "item") and getattr(value, "ndim", None) == 0 else value
