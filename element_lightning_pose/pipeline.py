"""A reference pipeline: upstream tables, the linking module, and activation of the element.

Labs plug the element into their own pipeline through a linking module (see the README);
this module is one, used by the demo, the tutorial and the tests:

- Under DataJoint 0.14 with the published elements installed (``pip install
  element-lightning-pose[elements]``), upstream comes from element-lab (``lab``),
  element-animal (``subject``) and element-session (``session_with_datetime``).
- Otherwise (DataJoint 2.x, where those elements do not import), a minimal ``Subject`` /
  ``Session`` schema stands in, keyed by ``subject`` and ``session_id``.

Either way a ``Device`` lookup lists the cameras, and ``get_lp_root_data_dir()`` /
``get_lp_processed_data_dir()`` come from :func:`activate_pipeline` arguments or the
``LP_ROOT_DATA_DIR`` / ``LP_PROCESSED_DATA_DIR`` environment variables.

Call :func:`activate_pipeline` once per process; it returns a namespace of the modules.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import datajoint as dj

from element_lightning_pose import dj_compat, ensemble, model, multicam, train

_ROOT_DIRS: list[Path] = []
_PROCESSED_DIR: Path | None = None
_ACTIVE: SimpleNamespace | None = None

# Filled by activate_pipeline: the names the element's schemas look up in this module.
Session = None
Device = None
Subject = None


def get_lp_root_data_dir() -> list[Path]:
    """Root data directories (arguments of activate_pipeline, else ``LP_ROOT_DATA_DIR``)."""
    if _ROOT_DIRS:
        return list(_ROOT_DIRS)
    env = os.environ.get("LP_ROOT_DATA_DIR")
    if not env:
        raise RuntimeError("no root data directory: pass root_dir to activate_pipeline or set LP_ROOT_DATA_DIR")
    return [Path(p) for p in env.split(os.pathsep)]


def get_lp_processed_data_dir() -> Path:
    """Where outputs go (argument, else ``LP_PROCESSED_DATA_DIR``, else the first root)."""
    if _PROCESSED_DIR is not None:
        return _PROCESSED_DIR
    env = os.environ.get("LP_PROCESSED_DATA_DIR")
    return Path(env) if env else get_lp_root_data_dir()[0]


def elements_available() -> bool:
    """True when the published elements import (DataJoint 0.14 with the [elements] extra)."""
    if dj_compat.IS_DJ2:
        return False
    try:
        import element_animal  # noqa: F401
        import element_lab  # noqa: F401
        import element_session  # noqa: F401
    except ImportError:
        return False
    return True


def _minimal_upstream(prefix: str) -> dict:
    """Subject, Session and Device for pipelines without element-lab/-animal/-session."""
    schema = dj.Schema(prefix + "session")

    @schema
    class Subject(dj_compat.KeyTextChecked, dj.Manual):
        """An animal. Fields follow what DANDI asks for in NWB files."""

        definition = """
        subject                 : varchar(32)
        ---
        sex = 'U'               : enum('M', 'F', 'U', 'O')
        species = 'Mus musculus': varchar(64)   # Latin binomial
        subject_birth_date = null : date
        subject_description = '': varchar(1000)
        """

    @schema
    class Session(dj.Manual):
        """A recording session of one subject."""

        definition = f"""
        -> Subject
        session_id        : {dj_compat.INT32}
        ---
        session_datetime  : datetime
        session_description = '' : varchar(1000)
        """

    return {"Subject": Subject, "Session": Session, "schema": schema}


def _element_upstream(prefix: str) -> dict:
    """Subject and Session from element-lab, element-animal and element-session (0.14)."""
    from element_animal import subject
    from element_lab import lab
    from element_session import session_with_datetime as session

    # The elements read their upstream from a linking module's namespace; a dedicated one
    # keeps this module's own names (Subject = None before activation) out of their context.
    links = ModuleType("element_lightning_pose._element_links")
    lab.activate(prefix + "lab")
    for name in ("Source", "Lab", "Protocol", "User", "Project"):
        setattr(links, name, getattr(lab, name))
    subject.activate(prefix + "subject", linking_module=links)
    links.Subject = subject.Subject
    links.Experimenter = lab.User
    session.activate(prefix + "session", linking_module=links)
    return {"Subject": subject.Subject, "Session": session.Session, "lab": lab, "subject": subject, "session": session}


def _device_table(prefix: str):
    schema = dj.Schema(prefix + "device")

    @schema
    class Device(dj.Lookup):
        """A camera."""

        definition = """
        device             : varchar(32)
        ---
        device_description = '' : varchar(1000)
        """

    return Device


def activate_pipeline(
    prefix: str = "lp_",
    root_dir: str | Path | list | None = None,
    processed_dir: str | Path | None = None,
    upstream: str = "auto",
) -> SimpleNamespace:
    """Activate upstream and the element's schemas under ``prefix``; returns the modules.

    Args:
        prefix: schema-name prefix (``<prefix>train``, ``<prefix>model``, ...).
        root_dir: root data directory or directories (default: ``LP_ROOT_DATA_DIR``).
        processed_dir: where outputs go (default: ``LP_PROCESSED_DATA_DIR`` or the first root).
        upstream: 'elements' (element-lab/-animal/-session, DataJoint 0.14 only), 'minimal',
            or 'auto' (elements when they import).
    """
    global _ROOT_DIRS, _PROCESSED_DIR, _ACTIVE, Session, Device, Subject
    if _ACTIVE is not None:
        if _ACTIVE.prefix != prefix:
            raise RuntimeError(f"pipeline already active with prefix {_ACTIVE.prefix!r}; one per process")
        return _ACTIVE
    if root_dir is not None:
        _ROOT_DIRS = [Path(p) for p in (root_dir if isinstance(root_dir, (list, tuple)) else [root_dir])]
    if processed_dir is not None:
        _PROCESSED_DIR = Path(processed_dir)
    dj_compat.configure_from_env()
    use_elements = elements_available() if upstream == "auto" else upstream == "elements"
    if use_elements and not elements_available():
        raise RuntimeError(
            f"upstream='elements' needs DataJoint 0.14 and element-lab/-animal/-session "
            f"(DataJoint {dj_compat.DJ_VERSION} is installed)"
        )
    parts = _element_upstream(prefix) if use_elements else _minimal_upstream(prefix)
    Session, Subject = parts["Session"], parts["Subject"]
    Device = _device_table(prefix)
    this = sys.modules[__name__]
    model.activate(prefix + "model", train_schema_name=prefix + "train", linking_module=this)
    ensemble.activate(prefix + "ensemble", linking_module=this)
    multicam.activate(prefix + "multicam", linking_module=this)
    dj_compat.ensure_jobs_tables(computed_tables())
    extras = {k: v for k, v in parts.items() if k not in ("Session", "Subject")}
    _ACTIVE = SimpleNamespace(
        prefix=prefix,
        upstream="elements" if use_elements else "minimal",
        Session=Session,
        Subject=Subject,
        Device=Device,
        train=train,
        model=model,
        ensemble=ensemble,
        multicam=multicam,
        **extras,
    )
    return _ACTIVE


def computed_tables() -> list:
    """The element's auto-populated tables, in the order a worker runs them."""
    return [
        model.RecordingInfo,
        multicam.Calibration,
        train.ModelTraining,
        model.ModelEvaluation,
        model.PoseEstimation,
        ensemble.EnsembleSmoothing,
        multicam.Triangulation,
    ]


def add_session(
    subject: str,
    session_datetime,
    *,
    session_id: int = 1,
    sex: str = "U",
    species: str = "Mus musculus",
    subject_birth_date=None,
    description: str = "",
) -> dict:
    """Insert a subject (if new) and a session into whichever upstream is active; returns the
    session key. A convenience for demos and tests: labs insert into their own tables. A subject
    name with a double quote or a backslash is refused (``dj_compat.check_key_text``)."""
    lp = _require_active()
    dj_compat.check_key_text("Subject", {"subject": subject})
    if lp.upstream == "elements":
        if len(subject) > 8:
            raise ValueError(f"subject {subject!r}: element-animal's Subject.subject holds at most 8 characters")
        birth = subject_birth_date or "2020-01-01"
        lp.Subject.insert1(
            {"subject": subject, "sex": sex, "subject_birth_date": birth, "subject_description": description},
            skip_duplicates=True,
        )
        key = {"subject": subject, "session_datetime": session_datetime}
        lp.Session.insert1(key, skip_duplicates=True)
        return key
    lp.Subject.insert1(
        {
            "subject": subject,
            "sex": sex,
            "species": species,
            "subject_birth_date": subject_birth_date,
            "subject_description": description,
        },
        skip_duplicates=True,
    )
    key = {"subject": subject, "session_id": session_id}
    lp.Session.insert1(
        {**key, "session_datetime": session_datetime, "session_description": description}, skip_duplicates=True
    )
    return key


def _require_active() -> SimpleNamespace:
    if _ACTIVE is None:
        raise RuntimeError("call activate_pipeline(...) first")
    return _ACTIVE
