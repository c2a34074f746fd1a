"""DataJoint schema for ensembles: several models' pose on one recording, smoothed by EKS.

Tables
------
SmoothingParamSet                 Ensemble Kalman Smoother parameters, deduplicated by hash
EnsembleSmoothingTask (+ Member)  the pose-estimation tasks (one per model) of one recording
EnsembleSmoothing (+ BodyPartPosition,  smoothed traces with ensemble and posterior variance;
  Member)                         foreign keys to the members' PoseEstimation rows read

The smoother itself is ``element_lightning_pose.engine.eks`` (numpy, no database).

A smoothing depends on the 2D it was computed from: ``EnsembleSmoothing.Member`` is a foreign
key to each member's ``PoseEstimation``, so deleting one of those (to compute it again from a
changed video, say) deletes the smoothing, its body-part rows and, through
``multicam.Triangulation.EnsembleSource``, the triangulations computed from it. The cascade
reaches a part table without its master, which DataJoint refuses by default (an error naming
the part table, nothing deleted): ``dj_compat.delete_cascading`` includes the masters (0.14:
``force_masters=True``; 2.x: ``part_integrity="cascade"``). A smoothing is never left beside
changed 2D.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from types import ModuleType
from typing import Any

import datajoint as dj
import numpy as np

from element_lightning_pose import model, paths
from element_lightning_pose.dj_compat import BLOB, FLOAT64, INT16, INT32, fetch_dicts, match
from element_lightning_pose.engine.eks.params import SmoothingParams
from element_lightning_pose.engine.safe_paths import inside_root
from element_lightning_pose.params import ImmutableParams

schema = dj.Schema()
_LINK = paths.LinkedSchema("ensemble")

SMOOTHING_KEYS = set(SmoothingParams.model_fields)  # the engine's model owns the parameters


def activate(
    ensemble_schema_name: str,
    *,
    create_schema: bool = True,
    create_tables: bool = True,
    linking_module: str | ModuleType | None = None,
) -> None:
    """Activate this schema; the model schema must be active already.

    Args:
        ensemble_schema_name: schema name on the database server.
        create_schema: create the schema on the server if it does not exist yet.
        create_tables: create the tables if they do not exist yet.
        linking_module: the same linking module given to ``model.activate``.
    """
    if not model.schema.is_activated():
        raise RuntimeError("ensemble.activate(): activate the model schema first")
    _LINK.activate(
        schema, ensemble_schema_name, linking_module, create_schema=create_schema, create_tables=create_tables
    )


processed_dir = _LINK.processed_dir


def validate_smoothing_params(params: dict) -> dict:
    """Check smoothing parameters (``engine.eks.params.SmoothingParams``, as ``elp smooth``
    does); returns them with defaults filled in. The error names every key at fault."""
    return SmoothingParams.from_dict(params, source="SmoothingParamSet").to_dict()


@schema
class SmoothingParamSet(ImmutableParams, dj.Lookup):
    """Parameters of the Ensemble Kalman Smoother.

    Attributes:
        smoothing_paramset_idx (int): unique id.
        paramset_desc (varchar): description.
        param_set_hash (char): hash of the canonical parameters.
        params (blob): s (None = automatic by marginal likelihood), centre (median|mean),
            var_mode (plain|confidence_weighted), keypoint_groups, fit_range, noise
            (auto|eks|calibrated; see engine.eks.smooth), outliers (auto|reject|none:
            members confidently wrong rejected against the smoothed trace; auto = reject
            when s is fitted) and outlier_threshold (robust sd, default 5), view_groups (the
            same keypoint in each view, e.g. [["paw_top", "paw_bot"]]: the multi-view
            smoother, engine.eks.smooth_multiview). Validated at insert by
            ``engine.eks.params.SmoothingParams``; unknown keys are refused. The keys added
            later (outliers, outlier_threshold, view_groups) are stored only when not at
            their defaults, so older parameter sets keep their hash.
    """

    definition = f"""
    smoothing_paramset_idx : {INT16}
    ---
    paramset_desc          : varchar(1000)
    param_set_hash         : char(32)  # md5 of the canonical params
    params                 : {BLOB}
    unique index (param_set_hash)
    """
    params_example = "{'s': None}"

    @classmethod
    def canonical_params(cls, params: Mapping[str, Any]) -> dict:
        """``params`` checked by :func:`validate_smoothing_params`, defaults filled in."""
        return validate_smoothing_params(dict(params))

    @classmethod
    def insert_new_params(cls, paramset_desc: str, params: dict, smoothing_paramset_idx: int | None = None) -> int:
        """Validate and insert; returns the id of the new or identical existing set. A
        ``smoothing_paramset_idx`` holding other parameters raises ``params.ParamSetConflictError``
        (:meth:`params.ImmutableParams.insert_canonical`)."""
        return cls.insert_canonical(paramset_desc, params, smoothing_paramset_idx)


@schema
class EnsembleSmoothingTask(dj.Manual):
    """An ensemble: the pose-estimation tasks of several models on one recording.

    Attributes:
        ensemble_id (int): unique within the recording.
        SmoothingParamSet (foreign key): how to smooth.
        ensemble_description (varchar): free text.
    """

    definition = f"""
    -> model.VideoRecording
    ensemble_id : {INT16}
    ---
    -> SmoothingParamSet
    ensemble_description = '' : varchar(1000)
    """

    class Member(dj.Part):
        """One member: a model's pose-estimation task on the same recording."""

        definition = """
        -> master
        -> model.PoseEstimationTask
        """

    @classmethod
    def create(
        cls,
        recording_key: dict,
        model_names: list[str],
        smoothing_paramset_idx: int,
        ensemble_id: int = 1,
        description: str = "",
    ) -> dict:
        """Insert an ensemble over the given models' tasks on a recording; returns its key."""
        rec = {k: recording_key[k] for k in model.VideoRecording.primary_key}
        missing = [m for m in model_names if not model.PoseEstimationTask & match({**rec, "model_name": m})]
        if missing:
            raise ValueError(f"no PoseEstimationTask on recording {rec} for model(s) {missing}")
        key = {**rec, "ensemble_id": ensemble_id}
        with cls.connection.transaction:
            cls.insert1({**key, "smoothing_paramset_idx": smoothing_paramset_idx, "ensemble_description": description})
            cls.Member.insert({**key, "model_name": m} for m in model_names)
        return key


@schema
class EnsembleSmoothing(dj.Computed):
    """Smoothed pose of an ensemble (Ensemble Kalman Smoother).

    The part table ``Member`` is a foreign key to each ``PoseEstimation`` read: deleting one of
    those deletes this row (see the module's docstring).

    Attributes:
        n_members (int): models in the ensemble.
        n_frames (int): frames.
        output_file (varchar): eks-layout CSV, relative to the processed-data root.
        smoothing_time_s (float64): wall time of the smoother.
    """

    definition = f"""
    -> EnsembleSmoothingTask
    ---
    n_members        : {INT16}
    n_frames         : {INT32}
    output_file      : varchar(1000)
    smoothing_time_s : {FLOAT64}
    """

    class Member(dj.Part):
        """The ``PoseEstimation`` a member's pose was read from (see the module's docstring)."""

        definition = """
        -> master
        -> model.PoseEstimation
        """

    class BodyPartPosition(dj.Part):
        """Smoothed trajectory of one body part, in original-frame pixels.

        Attributes:
            x_pos, y_pos (blob): (n_frames,) smoothed coordinates.
            likelihood (blob): (n_frames,) ensemble confidence.
            ensemble_centre (blob): (n_frames, 2) ensemble median or mean.
            ensemble_var (blob): (n_frames, 2) ensemble variance.
            posterior_var (blob): (n_frames, 2) posterior variance of the smoother.
            s (float64): smoothing parameter used.
        """

        definition = f"""
        -> master
        -> model.BodyPart
        ---
        x_pos           : {BLOB}
        y_pos           : {BLOB}
        likelihood      : {BLOB}
        ensemble_centre : {BLOB}
        ensemble_var    : {BLOB}
        posterior_var   : {BLOB}
        s               : {FLOAT64}
        """

    @property
    def key_source(self):
        # Wait until every member's pose estimation exists (and there is at least one member).
        task = EnsembleSmoothingTask
        incomplete = task.Member - model.PoseEstimation
        return (task & task.Member) - incomplete.proj()

    def make_fetch(self, key: dict) -> tuple:
        members = sorted(m["model_name"] for m in fetch_dicts(EnsembleSmoothingTask.Member & key, "model_name"))
        files = [(model.PoseEstimation & key & {"model_name": m}).fetch1("predictions_file") for m in members]
        params = (SmoothingParamSet * EnsembleSmoothingTask & key).fetch1("params")
        return members, files, params

    def make_compute(self, key, members, files, params) -> tuple:
        from element_lightning_pose.engine import eks
        from element_lightning_pose.engine.data.keypoints import read_predictions

        processed = processed_dir()
        recording = paths.key_folder_name(key, model.VideoRecording.primary_key)
        out = inside_root(processed, f"lp_ensembles/{recording}/ensemble{key['ensemble_id']}.csv", f"ensemble {key}")
        arrays, bodyparts = [], None
        # parameters stored before validation at insert (or inserted by hand) fail here, key named
        smoothing = SmoothingParams.from_dict(params, source=f"SmoothingParamSet of ensemble {key}")
        for name, file in zip(members, files):
            values, parts = read_predictions(processed / file)
            eks.require_predictions(values, f"{processed / file} (member {name!r})")
            if bodyparts is None:
                bodyparts, first, first_len = parts, name, len(values)
            elif parts != bodyparts:
                raise ValueError(
                    f"ensemble {key}: member {name!r} has body parts {parts}, member {first!r} has {bodyparts}"
                )
            elif len(values) != first_len:
                raise ValueError(
                    f"ensemble {key}: member {name!r} has {len(values)} frames, member {first!r} has {first_len}"
                )
            arrays.append(values)
        start = time.perf_counter()
        result = eks.smooth_ensemble(np.stack(arrays), bodyparts, smoothing)
        elapsed = time.perf_counter() - start
        result.to_csv(out)
        return members, result, paths.relative_to_roots([processed], out), elapsed

    def make_insert(self, key, members, result, output_file, elapsed) -> None:
        self.insert1(
            {
                **key,
                "n_members": len(members),
                "n_frames": int(result.x.shape[0]),
                "output_file": output_file,
                "smoothing_time_s": float(elapsed),
            }
        )
        self.BodyPartPosition.insert(
            {
                **key,
                "body_part": bp,
                "x_pos": result.x[:, i],
                "y_pos": result.y[:, i],
                "likelihood": result.likelihood[:, i],
                "ensemble_centre": result.centre[:, i],
                "ensemble_var": result.ensemble_var[:, i],
                "posterior_var": result.posterior_var[:, i],
                "s": float(result.s[i]),
            }
            for i, bp in enumerate(result.bodyparts)
        )
        self.Member.insert({**key, "model_name": name} for name in members)
