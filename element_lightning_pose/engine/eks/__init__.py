"""Ensemble Kalman Smoother (EKS) over the predictions of an ensemble of pose models.

The members' predictions of each keypoint are summarised per frame by their centre (median
or mean) and spread; a random-walk state-space model then smooths the centre, with the
spread as the observation noise, and reports a posterior variance for every frame. The
smoothing parameter ``s`` is fitted by maximum marginal likelihood unless given.

Modules (each holds its own maths in its docstring):

- :mod:`.io` - reading member CSVs (:func:`load_members`) and the eks-layout result
  (:class:`SmoothingResult`, ``EKS_COORDS``);
- :mod:`.ensemble` - the members' centre and variance per frame (:func:`ensemble_stats`);
- :mod:`.singleview` - the random-walk smoother on every keypoint series at once with
  LAPACK's tridiagonal LDL', the likelihood and the ``s`` search (:func:`smooth`);
- :mod:`.robust` - members confidently wrong, rejected against the smoothed trace before
  the smoother runs again (:func:`reject_members`; ``outliers="reject"``, the default when
  ``s`` is fitted);
- :mod:`.multiview` - one latent 3-D random walk per keypoint seen in several views
  (:func:`smooth_multiview`);
- :mod:`.params` - the one validator of the smoothing parameters, shared by the Python API,
  ``elp smooth`` and ``SmoothingParamSet`` (:class:`SmoothingParams`).

``elp smooth`` is the command line (:mod:`element_lightning_pose.cli.smooth`).
"""

from element_lightning_pose.engine.eks.ensemble import LIKELIHOOD_FLOOR, VAR_FLOOR, EnsembleStats, ensemble_stats
from element_lightning_pose.engine.eks.io import EKS_COORDS, SmoothingResult, load_members, require_predictions
from element_lightning_pose.engine.eks.multiview import smooth_ensemble, smooth_multiview
from element_lightning_pose.engine.eks.params import (
    CENTRES,
    NOISE_MODELS,
    OUTLIER_MODES,
    VAR_MODES,
    CentreMode,
    NoiseModel,
    OutlierMode,
    SmoothingParamError,
    SmoothingParams,
    VarMode,
    check_choice,
    parse_fit_range,
    parse_groups,
    validate_smoothing_params,
)
from element_lightning_pose.engine.eks.robust import member_scales, reject_members
from element_lightning_pose.engine.eks.singleview import (
    LOG_S_BOUNDS,
    fit_range_mask,
    fit_smoothing_param,
    keypoint_group_ids,
    maximise_over_log_s,
    shrink_variance,
    smooth,
)

__all__ = [
    "CENTRES",
    "EKS_COORDS",
    "LIKELIHOOD_FLOOR",
    "LOG_S_BOUNDS",
    "NOISE_MODELS",
    "OUTLIER_MODES",
    "VAR_FLOOR",
    "VAR_MODES",
    "CentreMode",
    "EnsembleStats",
    "NoiseModel",
    "OutlierMode",
    "SmoothingParamError",
    "SmoothingParams",
    "SmoothingResult",
    "VarMode",
    "check_choice",
    "ensemble_stats",
    "fit_range_mask",
    "fit_smoothing_param",
    "keypoint_group_ids",
    "load_members",
    "maximise_over_log_s",
    "member_scales",
    "parse_fit_range",
    "parse_groups",
    "reject_members",
    "require_predictions",
    "shrink_variance",
    "smooth",
    "smooth_ensemble",
    "smooth_multiview",
    "validate_smoothing_params",
]
