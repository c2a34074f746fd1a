"""Named training presets for ``TrainingParamSet`` (defined in ``engine.training.advice``, chosen by ``elp train``'s advice).

    from element_lightning_pose import presets, train
    presets.insert_preset(train.TrainingParamSet, "small_animal_crop_zoom")
    presets.insert_preset(train.TrainingParamSet, "full_resolution_crops", frame_size=(480, 640))

``presets.PRESETS`` lists them; ``elp train PROJECT`` prints the one recommended for a project.
"""

from __future__ import annotations

from typing import Any

from element_lightning_pose.engine.training.advice import PRESET_DESCRIPTIONS, PRESETS, preset_params

__all__ = ["PRESETS", "PRESET_DESCRIPTIONS", "insert_preset", "preset_params"]


def insert_preset(
    param_table: Any,
    name: str,
    *,
    frame_size: tuple[int, int] | None = None,
    base: dict[str, Any] | None = None,
    paramset_desc: str | None = None,
    paramset_idx: int | None = None,
) -> int:
    """Insert preset ``name`` (over ``base``) into ``param_table`` (``train.TrainingParamSet``); returns its id.

    ``frame_size`` (height, width) is needed by ``full_resolution_crops``. The parameters are
    validated and deduplicated by ``TrainingParamSet.insert_new_params``: inserting the same
    preset twice returns the same id.
    """
    params = preset_params(name, frame_size=frame_size, base=base)
    if paramset_desc is None:
        size = f" ({frame_size[0]}x{frame_size[1]} frames)" if frame_size is not None and name != "default" else ""
        paramset_desc = f"preset {name}{size}: {PRESET_DESCRIPTIONS[name]}"
    return int(param_table.insert_new_params(paramset_desc, params, paramset_idx=paramset_idx))
