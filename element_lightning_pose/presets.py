"""Named training presets for ``TrainingParamSet`` (defined in ``engine.config``, picked by the rule of ``engine.training.advice``).

    from element_lightning_pose import presets, train
    train.TrainingParamSet.insert_preset("auto", video_set={"video_set_id": 1})  # the rule's pick for it
    presets.insert_preset(train.TrainingParamSet, "small_animal_crop_zoom")
    presets.insert_preset(train.TrainingParamSet, "full_resolution_crops", frame_size=(480, 640))

``presets.PRESETS`` lists them; ``elp train PROJECT`` trains the one the rule picks for a project.
"""

from __future__ import annotations

from typing import Any

from element_lightning_pose.engine.config import AUTO_PRESET, PRESET_DESCRIPTIONS, PRESETS
from element_lightning_pose.engine.training.advice import advise_project, preset_params, resolve_preset
from element_lightning_pose.engine.types import PathLike

__all__ = ["PRESETS", "PRESET_DESCRIPTIONS", "insert_preset", "preset_params"]


def insert_preset(
    param_table: Any,
    name: str,
    *,
    frame_size: tuple[int, int] | None = None,
    base: dict[str, Any] | None = None,
    paramset_desc: str | None = None,
    paramset_idx: int | None = None,
    project_root: PathLike | None = None,
) -> int:
    """Insert preset ``name`` (over ``base``) into ``param_table`` (``train.TrainingParamSet``); returns its id.

    ``auto`` is resolved for the labeled project at ``project_root`` (the rule's pick, and a
    backbone whose ImageNet weights can be had: ``engine.training.advice.resolve_preset``);
    the set records the preset picked. ``full_resolution_crops`` needs ``frame_size`` (height,
    width), or reads it from ``project_root``. The parameters are validated and deduplicated by
    ``TrainingParamSet.insert_new_params``: inserting the same preset twice returns the same id.
    """
    if name == AUTO_PRESET:
        if project_root is None:
            raise ValueError("preset 'auto' is picked for a project: give project_root (or video_set=)")
        resolved = resolve_preset(base or {}, project_root, AUTO_PRESET)
        params = resolved.config.to_dict()
        if paramset_desc is None:
            why = resolved.advice.reason if resolved.advice is not None else ""
            paramset_desc = f"preset auto: {resolved.config.preset}: {why}"
        return int(param_table.insert_new_params(paramset_desc[:1000], params, paramset_idx=paramset_idx))
    if frame_size is None and project_root is not None and name == "full_resolution_crops":
        frame_size = advise_project(project_root, base).frame_size
    params = preset_params(name, frame_size=frame_size, base=base)
    params["preset"] = name
    if paramset_desc is None:
        size = f" ({frame_size[0]}x{frame_size[1]} frames)" if frame_size is not None and name != "default" else ""
        paramset_desc = f"preset {name}{size}: {PRESET_DESCRIPTIONS[name]}"
    return int(param_table.insert_new_params(paramset_desc, params, paramset_idx=paramset_idx))
