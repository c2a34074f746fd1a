"""Training: presets with the engine's advice, parameters checked per field, jobs, the models.

The page's form names a few parameters (backbone, image_resize, epochs, time limit, head, seed)
and takes any other as ``KEY=VALUE`` lines; a preset's parameters come first, the form's
fields over them, the extra lines last (the last word wins, as with ``elp train --set``). The
whole is validated by :class:`~element_lightning_pose.engine.config.TrainConfig`, whose errors
name their dotted key, and answered per field of the form. A job is ``elp train`` in a process
of its own (:mod:`element_lightning_pose.app.jobs`); the models are the project's model
directories with their evaluation on the labels as they are now
(:mod:`element_lightning_pose.engine.labeling.rounds`).
"""

from __future__ import annotations

import json
import re
import threading
import typing
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Body, Request
from fastapi.responses import JSONResponse

from element_lightning_pose.app import pipeline
from element_lightning_pose.app.jobs import STOPPED_NAME, TrainingJobs, kept_run_problem
from element_lightning_pose.app.routes.common import project_at, settings_of
from element_lightning_pose.engine.config import (
    PRESET_DESCRIPTIONS,
    PRESETS,
    Backbone,
    ConfigError,
    ModelConfig,
    TrainConfig,
    dotted_params,
    load_yaml,
    parse_assignments,
)
from element_lightning_pose.engine.errors import ElpError
from element_lightning_pose.engine.labeling import rounds
from element_lightning_pose.engine.safe_paths import check_name
from element_lightning_pose.engine.training.advice import advise_project, preset_params
from element_lightning_pose.engine.training.stopping import STOPPED_SUFFIX

router = APIRouter(prefix="/api/train")

# the form's fields and the parameter each sets
FIELDS = {
    "backbone": "model.backbone",
    "image_resize": "data.image_resize",
    "max_epochs": "training.max_epochs",
    "max_time_s": "training.max_time_s",
    "model_type": "model.model_type",
    "seed": "training.seed",
}
EXTRA = "extra"  # the KEY=VALUE lines, and what belongs to no field of the form
_KEY_LINE = re.compile(r"^\s+(?P<key>\S+): (?P<message>.*)$")
_jobs_lock = threading.Lock()


class ParameterError(ElpError):
    """Parameters the engine refuses; ``fields`` maps each field of the form to its problem."""

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__("parameters: " + "; ".join(f"{name}: {problem}" for name, problem in fields.items()))
        self.fields = fields


def project_of(request: Request, p: str) -> Path:
    """The project named by ``p``, whose ``models/`` folder (models, staging folders, job
    records) lies inside the same root: a link out of it is refused, not followed."""
    location = project_at(request, p)
    location.child(rounds.MODELS_DIR, "models folder")
    return location.path


def jobs_of(request: Request) -> TrainingJobs:
    """The server's training jobs (one list per app, made on first use)."""
    with _jobs_lock:
        if not hasattr(request.app.state, "training_jobs"):
            request.app.state.training_jobs = TrainingJobs()
        return request.app.state.training_jobs


# ---- parameters ------------------------------------------------------------------------------
def _resize(text: str) -> list[int]:
    numbers = re.findall(r"\d+", text)
    if len(numbers) != 2 or re.sub(r"[\d\sx,\[\]()]", "", text.lower()):
        raise ValueError("give height x width, e.g. 256x256 (multiples of 32)")
    return [int(n) for n in numbers]


def _preset_values(preset: str, frame_size: tuple[int, int] | None, budget: tuple[int, int] | None) -> dict[str, Any]:
    if preset not in PRESETS:
        raise ParameterError({"preset": f"unknown preset {preset!r} (known: {', '.join(PRESETS)})"})
    try:
        return dotted_params(preset_params(preset, frame_size=frame_size, image_resize=budget))
    except ValueError as exc:  # full_resolution_crops needs the frames' size: the project has no labels
        raise ParameterError({"preset": str(exc)}) from None


def parameters(body: dict[str, Any], frame_size: tuple[int, int] | None = None, budget: tuple[int, int] | None = None):
    """The dotted parameters the form asks for (preset, then fields, then extra lines) and
    their validated :class:`TrainConfig`; a :class:`ParameterError` names each field at fault."""
    errors: dict[str, str] = {}
    values: dict[str, Any] = {}
    preset = str(body.get("preset") or "default")
    try:
        values.update(_preset_values(preset, frame_size, budget))
    except ParameterError as exc:
        errors.update(exc.fields)
    fields = body.get("fields") or {}
    if not isinstance(fields, dict):
        raise ParameterError({EXTRA: "fields: give {name: value} of the form's fields"})
    for name, value in fields.items():
        if name not in FIELDS:
            errors[EXTRA] = f"unknown field {name!r} (known: {', '.join(FIELDS)})"
            continue
        text = "" if value is None else str(value).strip()
        if not text:
            continue  # an empty field keeps the preset's value, or the default
        try:
            values[FIELDS[name]] = _resize(text) if name == "image_resize" else load_yaml(text)
        except ValueError as exc:
            errors[name] = str(exc)
    extra = body.get("extra") or ""
    lines = [line.strip() for line in str(extra).splitlines() if line.strip() and not line.strip().startswith("#")]
    try:
        for _, parts, value in parse_assignments(lines, "line", "training.batch_size=4"):
            values[".".join(parts)] = value
    except ConfigError as exc:
        errors[EXTRA] = str(exc)
    if errors:
        raise ParameterError(errors)
    try:
        config = TrainConfig.from_dict(nested(values), source="parameters")
    except ConfigError as exc:
        raise ParameterError(_per_field(str(exc))) from None
    return values, config


def nested(values: dict[str, Any]) -> dict[str, Any]:
    """Dotted parameters as the nested sections TrainConfig reads (a later key wins, as with ``--set``)."""
    tree: dict[str, Any] = {}
    for key, value in values.items():
        node = tree
        *sections, name = key.split(".")
        for section in sections:
            if not isinstance(node.get(section), dict):
                node[section] = {}
            node = node[section]
        node[name] = value
    return tree


def _field_of(key: str) -> str:
    return next((name for name, dotted in FIELDS.items() if dotted == key), EXTRA)


def _per_field(message: str) -> dict[str, str]:
    """TrainConfig's per-key lines (``  data.image_resize: ...``) as {field of the form: problem}."""
    fields: dict[str, list[str]] = {}
    for line in message.splitlines()[1:]:
        match = _KEY_LINE.match(line)
        key, problem = (match["key"], match["message"]) if match else ("", line.strip())
        field = _field_of(key)
        fields.setdefault(field, []).append(problem if field != EXTRA or not key else f"{key}: {problem}")
    return {name: "; ".join(problems) for name, problems in fields.items()} or {EXTRA: message}


def overrides_of(values: dict[str, Any]) -> list[str]:
    """``KEY=VALUE`` options of ``elp train --set`` (each value as JSON, which YAML reads back)."""
    return [f"{key}={json.dumps(value)}" for key, value in values.items()]


def _advice(project: Path, config: TrainConfig | None = None) -> tuple[Any, str | None]:
    try:
        return advise_project(project, config), None
    except ElpError as exc:
        return None, str(exc)


def _advice_dict(advice: Any) -> dict[str, Any] | None:
    if advice is None:
        return None
    return {
        "preset": advice.preset,
        "reason": advice.reason,
        "summary": advice.summary(),
        "frame_size": list(advice.frame_size),
        "animal_heatmap_px": advice.animal_heatmap_px if advice.animal_heatmap_px == advice.animal_heatmap_px else None,
        "params": dotted_params(advice.params),
    }


def _checked(request: Request, p: str, body: dict[str, Any]):
    project = project_of(request, p)
    advice, advice_error = _advice(project)
    frame = tuple(advice.frame_size) if advice else None
    budget = tuple(advice.budget_resize) if advice else None
    values, config = parameters(body, frame, budget)
    return project, values, config, advice_error


# ---- routes ----------------------------------------------------------------------------------
@router.get("/presets")
def presets(request: Request, p: str) -> dict[str, Any]:
    """The presets, the engine's advice for the project (what ``elp train`` prints), and the
    form's defaults and choices."""
    project = project_of(request, p)
    advice, advice_error = _advice(project)
    listed = []
    for name in PRESETS:
        try:
            params = _preset_values(name, tuple(advice.frame_size) if advice else None, _budget(advice))
        except ParameterError:
            continue  # full_resolution_crops needs the labeled frames' size
        listed.append(
            {
                "name": name,
                "description": PRESET_DESCRIPTIONS[name],
                "params": params,
                "recommended": bool(advice and advice.preset == name),
            }
        )
    defaults = TrainConfig()
    return {
        "advice": _advice_dict(advice),
        "advice_error": advice_error,
        "presets": listed,
        "defaults": {
            "backbone": defaults.model.backbone,
            "image_resize": "x".join(map(str, defaults.data.image_resize)),
            "max_epochs": defaults.training.max_epochs,
            "max_time_s": defaults.training.max_time_s,
            "model_type": defaults.model.model_type,
            "seed": defaults.training.seed,
        },
        "choices": {
            "backbone": list(typing.get_args(Backbone)),
            "model_type": list(typing.get_args(ModelConfig.model_fields["model_type"].annotation)),
        },
        "suggested_name": _suggested_name(project),
        "pipeline": pipeline.describe(settings_of(request).roots),
    }


def _budget(advice: Any) -> tuple[int, int] | None:
    return tuple(advice.budget_resize) if advice else None


def _suggested_name(project: Path) -> str:
    taken = {path.name for path in (project / rounds.MODELS_DIR).glob("*")}
    base = datetime.now().strftime("model-%Y%m%d")
    for n in range(1, 1000):
        name = f"{base}-{n}"
        if name not in taken and f".{name}" not in taken:
            return name
    return base


@router.post("/validate")
def validate(request: Request, p: str, body: dict[str, Any] = Body(...)) -> JSONResponse:
    """The parameters checked: ``{ok, fields: {field: problem}, overrides, advice}``."""
    try:
        project, values, config, advice_error = _checked(request, p, body)
    except ParameterError as exc:
        return JSONResponse({"ok": False, "fields": exc.fields, "overrides": []})
    advice, advice_error = _advice(project, config)  # for these parameters (resize, backbone)
    problems = _name_problems(request, p, body)
    return JSONResponse(
        {
            "ok": not problems,
            "fields": problems,
            "overrides": overrides_of(values),
            "advice": _advice_dict(advice),
            "advice_error": advice_error,
        }
    )


@router.post("/start")
def start(request: Request, p: str, body: dict[str, Any] = Body(...)) -> JSONResponse:
    """Start a job: ``{name, replace, preset, fields, extra}``; 400 with per-field problems."""
    try:
        project, values, _, advice_error = _checked(request, p, body)
    except ParameterError as exc:
        return JSONResponse({"error": str(exc), "fields": exc.fields}, status_code=400)
    if advice_error is not None:  # no labels to train on: said before a process starts
        raise ElpError(advice_error)
    problems = _name_problems(request, p, body)
    if problems:
        return JSONResponse({"error": problems["name"], "fields": problems}, status_code=400)
    name = str(body.get("name") or "").strip()
    job = jobs_of(request).start(
        project,
        name,
        overrides_of(values),
        replace=bool(body.get("replace")),
        fields={
            "preset": body.get("preset") or "default",
            **(body.get("fields") or {}),
            EXTRA: body.get("extra") or "",
        },
    )
    return JSONResponse(job.status())


def _name_problems(request: Request, p: str, body: dict[str, Any]) -> dict[str, str]:
    """{"name": problem} for a model name that is no folder name, lies outside the root, or names
    an existing model that the form does not ask to replace; {} for a good one."""
    name = str(body.get("name") or "").strip()
    try:
        check_name(name, "model name")
        target = project_at(request, p).child(f"{rounds.MODELS_DIR}/{name}", "model")  # links followed
    except ElpError as exc:
        return {"name": str(exc)}
    if name.endswith(STOPPED_SUFFIX):
        return {"name": STOPPED_NAME}
    if (target.path.exists() or target.path.is_symlink()) and not body.get("replace"):
        return {"name": f"{rounds.MODELS_DIR}/{name} exists already; choose another name (or replace that model)"}
    problem = kept_run_problem(target.path, bool(body.get("replace")))
    return {"name": problem} if problem else {}


@router.get("/jobs")
def jobs(request: Request, p: str) -> dict[str, Any]:
    """The project's jobs, newest first, each with its epochs so far."""
    project = project_of(request, p)
    return {"jobs": [job.status() for job in jobs_of(request).jobs(project)]}


@router.get("/job")
def job(request: Request, p: str, name: str) -> dict[str, Any]:
    return jobs_of(request).get(project_of(request, p), name).status()


@router.post("/cancel")
def cancel(request: Request, p: str, name: str) -> dict[str, Any]:
    return jobs_of(request).cancel(project_of(request, p), name).status()


@router.post("/resume")
def resume(request: Request, p: str, name: str) -> dict[str, Any]:
    """Go on with a cancelled job from the epochs its run kept (``models/<name>.stopped/``)."""
    return jobs_of(request).resume(project_of(request, p), name).status()


@router.get("/models")
def models(request: Request, p: str) -> dict[str, Any]:
    """The project's models, oldest first, with their cached evaluation (``current`` says
    whether it was computed on the labels as they are now)."""
    project = project_of(request, p)
    listed = []
    for model in rounds.project_models(project):
        entry = model.to_dict()
        entry["evaluation"] = rounds.cached_evaluation(model, project)
        listed.append(entry)
    return {"models": listed}


@router.post("/evaluate")
def evaluate(request: Request, p: str, model: str) -> dict[str, Any]:
    """Evaluate one model on the labels as they are now (from its cache when current)."""
    project = project_of(request, p)
    check_name(model, "model name")
    found = next((m for m in rounds.project_models(project) if m.name == model), None)
    if found is None:
        raise ElpError(f"model {model!r}: no model directory of that name in {rounds.MODELS_DIR}/")
    return {"name": model, "evaluation": rounds.evaluate_model(found, project)}


@router.get("/pipeline")
def pipeline_tasks(request: Request, p: str) -> dict[str, Any]:
    """With a database: the TrainingTasks of the project's VideoSets and what became of them."""
    project = project_of(request, p)
    described = pipeline.describe(settings_of(request).roots)
    if not described["configured"]:
        return {**described, "tasks": []}
    return {**described, "tasks": pipeline.tasks(settings_of(request).roots, project)}


@router.post("/pipeline")
def pipeline_submit(request: Request, p: str, body: dict[str, Any] = Body(...)) -> JSONResponse:
    """Register the project as a VideoSet (a new one when relabeled), the parameters and a
    TrainingTask for a worker: ``{name, preset, fields, extra}`` as for a job."""
    try:
        project, values, _, advice_error = _checked(request, p, body)
    except ParameterError as exc:
        return JSONResponse({"error": str(exc), "fields": exc.fields}, status_code=400)
    if advice_error is not None:
        raise ElpError(advice_error)
    name = str(body.get("name") or "").strip()
    try:
        check_name(name, "model name")
    except ElpError as exc:
        return JSONResponse({"error": str(exc), "fields": {"name": str(exc)}}, status_code=400)
    keys = pipeline.submit(settings_of(request).roots, project, nested(values), name=name)
    return JSONResponse({**keys, "worker": pipeline.describe(settings_of(request).roots)["worker"]})
