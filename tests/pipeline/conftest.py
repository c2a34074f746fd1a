"""Fixtures for tests against a real database server.

The server is named by ``DJ_HOST`` / ``DJ_PORT`` / ``DJ_USER`` / ``DJ_PASS`` / ``DJ_BACKEND``
(``elp db start`` prints them). Each test run gets a unique schema prefix and drops its
schemas afterwards. When no server is reachable the tests are skipped on a workstation and
FAIL in CI (``CI=true``) or when ``ELP_REQUIRE_DB=1``: a silent skip there would hide a
broken setup.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import uuid

import pytest

from element_lightning_pose import dj_compat

REQUIRE_DB = any(os.environ.get(var, "").lower() in {"1", "true", "yes"} for var in ("CI", "ELP_REQUIRE_DB"))


def _server_reachable() -> tuple[bool, str]:
    host = os.environ.get("DJ_HOST")
    if not host:
        return False, "DJ_HOST is not set (run `elp db start` and source its env.sh)"
    default_port = 5432 if os.environ.get("DJ_BACKEND") == "postgresql" else 3306
    port = int(os.environ.get("DJ_PORT", default_port))
    with socket.socket() as sock:
        sock.settimeout(2)
        if sock.connect_ex((host, port)) != 0:
            return False, f"no database server answers on {host}:{port}"
    return True, ""


@pytest.fixture(scope="session")
def dj_connection():
    """A live DataJoint connection to the server named by the DJ_* variables."""
    ok, why = _server_reachable()
    if not ok:
        if REQUIRE_DB:
            pytest.fail(f"database server required but unreachable: {why}")
        pytest.skip(why)
    from element_lightning_pose import dj_compat

    dj_compat.configure_from_env()
    import datajoint as dj

    return dj.conn(reset=True)


@pytest.fixture(scope="session")
def schema_prefix(dj_connection):
    """A prefix unique to this test run; every schema created under it is dropped at the end."""
    prefix = f"elptest_{uuid.uuid4().hex[:8]}_"
    yield prefix
    drop_schemas(dj_connection, prefix)


def drop_schemas(connection, prefix: str) -> None:
    """Drop every schema whose name starts with ``prefix``, dependants first."""
    from element_lightning_pose import dj_compat

    if dj_compat.backend() == "postgresql":
        query = "SELECT nspname FROM pg_namespace WHERE nspname LIKE %s"
    else:
        query = "SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE %s"
    names = [row[0] for row in connection.query(query, args=(prefix + "%",)).fetchall()]
    quote = '"' if dj_compat.backend() == "postgresql" else "`"
    # Dependants were created after their parents: drop in reverse creation order, retrying
    # until foreign keys stop blocking.
    for _ in range(len(names) + 1):
        remaining = []
        for name in sorted(names, reverse=True):
            try:
                suffix = " CASCADE" if quote == '"' else ""
                connection.query(f"DROP SCHEMA IF EXISTS {quote}{name}{quote}{suffix}")
            except Exception:
                remaining.append(name)
        if not remaining:
            return
        names = remaining


# --------------------------------------------------------------------------- the element

TINY_PARAMS = {
    "data": {"image_resize": [64, 64], "train_prob": 0.7, "val_prob": 0.15},
    "model": {"backbone": "resnet18", "pretrained": False},
    "training": {
        "batch_size": 4,
        "max_epochs": 2,
        "unfreeze_epoch": 0,
        "lr_milestones": [],
        "num_workers": 0,
        "log_every_n_steps": 1,
    },
}


@pytest.fixture(scope="session")
def lp_root(tmp_path_factory):
    """A root data directory holding a tiny synthetic labeled project and session videos."""
    from element_lightning_pose.synthetic.projects import make_synthetic_project

    root = tmp_path_factory.mktemp("lp_root")
    project = make_synthetic_project(
        root / "projects" / "synth", seed=0, image_size=(64, 64), n_labeled=16, n_video_frames=48, n_videos=1
    )
    return root, project


@pytest.fixture(scope="session")
def lp(dj_connection, schema_prefix, lp_root):
    """The reference pipeline activated on the test server under the run's prefix."""
    from element_lightning_pose import pipeline

    root, _ = lp_root
    return pipeline.activate_pipeline(schema_prefix, root_dir=root, processed_dir=root / "processed")


@pytest.fixture(scope="session")
def flow(lp, lp_root):
    """VideoSet -> two trainings (seeds 0, 1) -> Models -> evaluation -> pose -> ensemble."""
    root, project = lp_root
    train, model = lp.train, lp.model
    vs_key = train.VideoSet.insert_project("projects/synth", description="tiny synthetic")
    idx = train.TrainingParamSet.insert_new_params("tiny", TINY_PARAMS)
    for training_id, seed in ((1, 0), (2, 1)):
        train.TrainingTask.insert1({**vs_key, "paramset_idx": idx, "training_id": training_id, "seed": seed})
    # restricted to its own set: other modules may have left tasks of their own waiting
    trained = dj_compat.populate(train.ModelTraining, vs_key, reserve_jobs=True)
    assert trained.errors == [] and trained.success_count == 2
    names = []
    for training_id in (1, 2):
        tkey = {**vs_key, "paramset_idx": idx, "training_id": training_id}
        names.append(model.Model.insert_from_training(tkey, model_name=f"tiny_seed{training_id}")["model_name"])
    session = lp_session(lp)
    lp.Device.insert1({"device": "cam_top", "device_description": "top camera"}, skip_duplicates=True)
    rec = {**session, "recording_id": 1}
    model.VideoRecording.insert1({**rec, "device": "cam_top"})
    video_rel = project.videos[0].relative_to(root).as_posix()
    model.VideoRecording.File.insert1({**rec, "file_id": 0, "file_path": video_rel})
    for name in names:
        model.PoseEstimationTask.generate(rec, name, batch_size=8)
    return {"vs_key": vs_key, "paramset_idx": idx, "names": names, "rec": rec, "project": project}


def lp_session(lp) -> dict:
    from element_lightning_pose import pipeline

    return pipeline.add_session(
        "mouse1",
        dt.datetime(2024, 5, 1, 10, 30),
        species="Mus musculus",
        sex="F",
        subject_birth_date=dt.date(2024, 1, 15),
    )


def pytest_collection_modifyitems(items):
    """Every pipeline test talks to a database server: mark it ``db`` (select with -m db)."""
    for item in items:
        if "tests/pipeline/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.db)
