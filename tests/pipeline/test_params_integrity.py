"""Parameter sets and projects are registered once and not changed behind their hashes."""

from __future__ import annotations

import logging
import shutil

import datajoint as dj
import pytest

from element_lightning_pose import dj_compat
from element_lightning_pose.engine.errors import ElpError
from element_lightning_pose.params import ImmutableParams, ParamSetTypeError, ParamSetUpdateError
from tests.pipeline.conftest import TINY_PARAMS


def test_update1_of_training_params_or_hash_is_refused(lp):
    table = lp.train.TrainingParamSet()
    params = {**TINY_PARAMS, "training": {**TINY_PARAMS["training"], "max_epochs": 3}}
    idx = table.insert_new_params("integrity", params)
    key = {"paramset_idx": idx}
    before = (table & key).fetch1()
    other = {**params, "training": {**params["training"], "max_epochs": 7}}
    with pytest.raises(ParamSetUpdateError, match=rf"TrainingParamSet .*'paramset_idx': {idx}.*params"):
        table.update1({**key, "params": other})
    with pytest.raises(ParamSetUpdateError, match="param_set_hash"):
        table.update1({**key, "param_set_hash": "0" * 32})
    after = (table & key).fetch1()
    assert after["param_set_hash"] == before["param_set_hash"] == lp.train.params_hash(after["params"])
    assert after["params"] == before["params"]
    # the description is free text: it may change
    table.update1({**key, "paramset_desc": "renamed"})
    assert (table & key).fetch1("paramset_desc") == "renamed"
    (table & key).delete_quick()  # the flow tests count the parameter sets of the shared schema


def test_immutable_params_mixin_guards_any_param_set_table(lp, schema_prefix):
    """The mechanism SmoothingParamSet shares: a mixin before the DataJoint tier."""
    schema = dj.Schema(schema_prefix + "paramguard")

    @schema
    class OtherParamSet(ImmutableParams, dj.Lookup):
        definition = f"""
        other_idx      : {dj_compat.INT16}
        ---
        paramset_desc  : varchar(100)
        param_set_hash : char(32)
        params         : {dj_compat.BLOB}
        """

    table = OtherParamSet()
    table.insert1({"other_idx": 1, "paramset_desc": "a", "param_set_hash": "1" * 32, "params": {"s": 1}})
    with pytest.raises(ParamSetUpdateError, match=r"OtherParamSet \{'other_idx': 1\}: params"):
        table.update1({"other_idx": 1, "params": {"s": 2}})
    assert (table & {"other_idx": 1}).fetch1("params") == {"s": 1}
    table.update1({"other_idx": 1, "paramset_desc": "b"})
    assert (table & {"other_idx": 1}).fetch1("paramset_desc") == "b"


def test_same_project_twice_returns_the_existing_video_set(lp, lp_root, caplog):
    root, project = lp_root
    copy = root / "projects" / "registered_twice"
    shutil.copytree(project.root, copy)
    video_set = lp.train.VideoSet
    first = video_set.insert_project("projects/registered_twice")
    count = len(video_set())
    with caplog.at_level(logging.INFO, logger="element_lightning_pose"):
        again = video_set.insert_project("projects/registered_twice/")
        absolute = video_set.insert_project(copy)
    assert again == absolute == first
    assert len(video_set()) == count
    assert "already registered" in caplog.text
    # another id for the same project is refused, naming the existing one
    with pytest.raises(ValueError, match=rf"already registered as video_set_id {first['video_set_id']}"):
        video_set.insert_project("projects/registered_twice", video_set_id=first["video_set_id"] + 100)
    assert len(video_set()) == count
    # changed labels are another VideoSet: the first still describes what it was
    csv = copy / "CollectedData.csv"
    lines = csv.read_text().splitlines(keepends=True)
    csv.write_text("".join(lines[:-1]))
    changed = video_set.insert_project("projects/registered_twice")
    assert changed != first
    n_first, n_changed = ((video_set & k).fetch1("n_labeled_frames") for k in (first, changed))
    assert n_changed == n_first - 1
    assert (video_set & first).fetch1("labels_hash") != (video_set & changed).fetch1("labels_hash")


def test_update1_of_smoothing_params_is_refused(lp):
    table = lp.ensemble.SmoothingParamSet()
    idx = table.insert_new_params("integrity", {"s": 3.5})
    key = {"smoothing_paramset_idx": idx}
    before = (table & key).fetch1()
    with pytest.raises(ParamSetUpdateError, match="SmoothingParamSet"):
        table.update1({**key, "params": {**before["params"], "s": 9.0}})
    assert (table & key).fetch1("param_set_hash") == before["param_set_hash"]
    (table & key).delete_quick()


@pytest.mark.parametrize(
    ("table_name", "first", "second", "differing"),
    [
        (
            "train.TrainingParamSet",
            {**TINY_PARAMS, "training": {**TINY_PARAMS["training"], "max_epochs": 5}},
            {**TINY_PARAMS, "training": {**TINY_PARAMS["training"], "max_epochs": 6}},
            "training.max_epochs",
        ),
        ("ensemble.SmoothingParamSet", {"s": 2.75}, {"s": 3.25, "centre": "mean"}, "centre, s"),
        (
            "multicam.TriangulationParamSet",
            {"method": "robust", "min_likelihood": 0.35},
            {"method": "dlt", "min_likelihood": 0.35},
            "method",
        ),
    ],
    ids=["training", "smoothing", "triangulation"],
)
def test_given_idx_holding_other_params_is_refused(lp, table_name, first, second, differing):
    """Every parameter-set table: the same parameters again return their id; other parameters
    under a taken id are refused naming the table, id and keys; nothing is inserted."""
    schema_name, class_name = table_name.split(".")
    table = getattr(getattr(lp, schema_name), class_name)
    (id_name,) = table.primary_key
    idx = 901
    assert not table & {id_name: idx}
    try:
        assert table.insert_new_params("first", first, idx) == idx
        before = (table & {id_name: idx}).fetch1()
        count = len(table())
        with pytest.raises(ValueError) as caught:  # params.ParamSetConflictError
            table.insert_new_params("second", second, idx)
        message = str(caught.value)
        assert f"{class_name} {id_name}={idx} already holds different parameters" in message
        assert f"(differing: {differing})" in message
        assert len(table()) == count
        after = (table & {id_name: idx}).fetch1()
        assert after["param_set_hash"] == before["param_set_hash"] and after["paramset_desc"] == "first"
        # idempotent: the same parameters, with or without the id, are the set already there
        assert table.insert_new_params("again", first, idx) == idx
        assert table.insert_new_params("again", first) == idx
        assert len(table()) == count
    finally:
        (table & {id_name: idx}).delete_quick()  # the flow tests count the parameter sets


@pytest.mark.parametrize("params", ["smoother", None, ["s", 2.0], 5], ids=["string", "none", "list", "number"])
@pytest.mark.parametrize(
    ("table_name", "example"),
    [
        ("train.TrainingParamSet", "{'training': {'max_epochs': 10}}"),
        ("ensemble.SmoothingParamSet", "{'s': None}"),
        ("multicam.TriangulationParamSet", "{'method': 'smoother'}"),
    ],
    ids=["training", "smoothing", "triangulation"],
)
def test_params_that_are_not_a_mapping_are_refused(lp, table_name, example, params):
    """Every parameter-set table (issue 26): a string, None or a list as params was a TypeError
    or ValueError traceback from ``dict(params)`` (triangulation had a check of its own)."""
    schema_name, class_name = table_name.split(".")
    table = getattr(getattr(lp, schema_name), class_name)
    before = len(table())
    with pytest.raises(ParamSetTypeError) as caught:
        table.insert_new_params("malformed", params)
    message = str(caught.value)
    assert isinstance(caught.value, ElpError) and "\n" not in message
    assert message.startswith(f"{class_name}.insert_new_params('malformed', ...): params must be a mapping")
    assert f"e.g. {example}, got {type(params).__name__}" in message
    assert len(table()) == before


def test_training_params_beyond_a_timedelta_are_refused_at_insert(lp):
    """Issue 26, item 20: max_time_s=1e15 was stored, then training crashed with OverflowError."""
    from element_lightning_pose.engine.config import ConfigError

    table = lp.train.TrainingParamSet
    before = len(table())
    for value in (1e15, float("inf")):
        params = {**TINY_PARAMS, "training": {**TINY_PARAMS["training"], "max_time_s": value}}
        with pytest.raises(ConfigError, match=r"training\.max_time_s"):
            table.insert_new_params("too long", params)
    assert len(table()) == before
