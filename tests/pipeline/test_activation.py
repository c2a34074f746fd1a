"""Every schema module keeps its activation in one ``paths.LinkedSchema``: the linking module
checked the same way, the same roots for all of them, and a clear error before activation."""

from __future__ import annotations

import types

import pytest

from element_lightning_pose import paths


def test_schemas_share_the_linking_modules_roots(lp):
    roots = lp.model.root_dirs()
    assert lp.train.root_dirs() == lp.multicam.root_dirs() == roots
    processed = lp.model.processed_dir()
    assert lp.train.processed_dir() == lp.ensemble.processed_dir() == lp.multicam.processed_dir() == processed
    assert lp.model._linking_module is lp.model._LINK.linking_module()  # export.dj_nwb reads it


def test_linking_module_is_checked_and_required_before_use(tmp_path):
    link = paths.LinkedSchema("multicam")
    with pytest.raises(RuntimeError, match=r"multicam schema is not activated: call multicam.activate\(...\) first"):
        link.root_dirs()
    bare = types.ModuleType("lab_links")
    with pytest.raises(AttributeError, match="'lab_links' lacks get_lp_root_data_dir"):
        link.check(bare)
    with pytest.raises(TypeError, match="linking_module must be a module or a module name, not dict"):
        link.check({})
    bare.get_lp_root_data_dir = lambda: [str(tmp_path)]
    assert link.check(bare) is bare
    with pytest.raises(RuntimeError, match="not activated"):  # checked is not activated
        link.processed_dir()
