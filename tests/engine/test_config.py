"""TrainConfig: defaults, round trips, and errors that name the key at fault."""

from __future__ import annotations

import pytest
import yaml

from element_lightning_pose.engine.config import ConfigError, TrainConfig, parameter_reference


def test_defaults_follow_the_reference_method():
    config = TrainConfig()
    assert config.model.heatmap_sigma == 1.25
    assert config.training.batch_size == 8
    assert config.training.learning_rate == 1e-3
    assert config.augmentation.hflip is False
    assert config.model.model_type == "heatmap"
    assert config.losses.unsupervised == []  # supervised only unless asked


def test_yaml_round_trip_keeps_every_value(tmp_path):
    config = TrainConfig.from_dict(
        {
            "data": {"image_resize": [128, 96]},
            "model": {"backbone": "resnet18", "pretrained": "w.pth"},
            "training": {"lr_milestones": [3, 5], "max_steps": 7},
        }
    )
    path = config.to_yaml(tmp_path / "sub" / "config.yaml")
    text = yaml.safe_load(path.read_text())
    assert text["data"]["image_resize"] == [128, 96]  # every default written out
    assert "augmentation" in text and "rotation_deg" in text["augmentation"]
    again = TrainConfig.from_yaml(path)
    assert again == config
    assert again.model.pretrained == "w.pth"
    assert again.data.image_resize == (128, 96)


@pytest.mark.parametrize(
    "values, key",
    [
        ({"training": {"lerning_rate": 0.1}}, "training.lerning_rate: unknown key"),
        ({"optimiser": {}}, "optimiser: unknown key"),
        ({"losses": {"temporal": {"weight": 1}}}, "losses.temporal: unknown key"),
        ({"data": {"image_resize": [100, 64]}}, "data.image_resize"),
        ({"model": {"backbone": "vgg16"}}, "model.backbone"),
        ({"training": {"batch_size": 0}}, "training.batch_size"),
        ({"augmentation": {"scale_range": [1.2, 0.8]}}, "augmentation.scale_range"),
    ],
)
def test_bad_values_name_the_key(values, key):
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_dict(values)
    assert key in str(info.value)


def test_split_probabilities_must_fit():
    with pytest.raises(ConfigError, match="train_prob \\+ val_prob"):
        TrainConfig.from_dict({"data": {"train_prob": 0.95, "val_prob": 0.1}})


def test_yaml_errors_name_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("training:\n  max_epoch: 3\n")
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_yaml(path)
    assert str(path) in str(info.value) and "training.max_epoch" in str(info.value)
    with pytest.raises(ConfigError, match="not found"):
        TrainConfig.from_yaml(tmp_path / "missing.yaml")


def test_overrides_parse_values_and_reject_unknown_keys():
    config = TrainConfig().with_overrides(
        ["training.max_epochs=12", "model.pretrained=false", "data.image_resize=[64, 64]"]
    )
    assert config.training.max_epochs == 12 and config.model.pretrained is False
    assert config.data.image_resize == (64, 64)
    with pytest.raises(ConfigError, match="training.max_epoch"):
        TrainConfig().with_overrides(["training.max_epoch=3"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        TrainConfig().with_overrides(["training.max_epochs"])


def test_parameter_reference_covers_every_field():
    rows = parameter_reference()
    fields = {row["field"] for row in rows}
    for section, section_field in TrainConfig.model_fields.items():
        if section == "preset":  # the one top-level value
            assert "preset" in fields
            continue
        for name in section_field.annotation.model_fields:
            assert f"{section}.{name}" in fields
    sigma = next(row for row in rows if row["field"] == "model.heatmap_sigma")
    assert sigma["default"] == "1.25" and sigma["type"] == "float" and sigma["description"]


@pytest.mark.parametrize(
    "values, key, got",
    [
        ({"training": {"max_epochs": True}}, "training.max_epochs", "True"),
        ({"training": {"max_epochs": "5"}}, "training.max_epochs", "'5'"),
        ({"training": {"max_epochs": 2.0}}, "training.max_epochs", "2.0"),
        ({"training": {"learning_rate": True}}, "training.learning_rate", "True"),
        ({"training": {"learning_rate": "0.1"}}, "training.learning_rate", "'0.1'"),
        ({"augmentation": {"enabled": 1}}, "augmentation.enabled", "1"),
        ({"augmentation": {"hflip": "yes"}}, "augmentation.hflip", "'yes'"),
        ({"data": {"image_resize": [True, 64]}}, "data.image_resize.0", "True"),
        ({"training": {"lr_milestones": [3, "5"]}}, "training.lr_milestones.1", "'5'"),
        ({"training": {"num_workers": False}}, "training.num_workers", "False"),
    ],
)
def test_types_are_strict(values, key, got):
    # lax pydantic stored `max_epochs: true` as 1 and "5" as 5: a YAML typo trained silently
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_dict(values)
    assert key in str(info.value) and f"(got {got})" in str(info.value)


def test_ints_are_floats_and_numpy_scalars_are_numbers():
    import numpy as np

    config = TrainConfig.from_dict(
        {
            "training": {"learning_rate": 1, "max_epochs": np.int64(3)},
            "augmentation": {"rotation_deg": 10, "enabled": np.bool_(False)},
            "losses": {"temporal_epsilon": [1, 2.5]},
        }
    )
    assert config.training.learning_rate == 1.0 and isinstance(config.training.learning_rate, float)
    assert config.training.max_epochs == 3 and type(config.training.max_epochs) is int
    assert config.augmentation.enabled is False and config.augmentation.rotation_deg == 10.0
    assert config.losses.temporal_epsilon == [1.0, 2.5]


def test_invalid_yaml_in_an_override_is_one_line_naming_it():
    with pytest.raises(ConfigError) as info:
        TrainConfig().with_overrides(["data.image_resize=[64, 64"])
    message = str(info.value)
    assert "data.image_resize=[64, 64" in message and "not valid YAML" in message
    assert "\n" not in message


# --------------------------------------------------------------------------- numbers (issue 26, item 20)


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", "1e15", "1.0e15"])
def test_max_time_s_beyond_a_timedelta_or_not_finite_is_refused(value):
    """`.inf` and 1e15 passed validation, then training crashed with OverflowError (timedelta)."""
    with pytest.raises(ConfigError, match=r"training\.max_time_s: Input should be (a finite number|less than)"):
        TrainConfig().with_overrides([f"training.max_time_s={value}"])
    with pytest.raises(ConfigError, match=r"training\.max_time_s"):
        TrainConfig.from_dict({"training": {"max_time_s": float(value.replace(".inf", "inf").replace(".nan", "nan"))}})


@pytest.mark.parametrize("key", ["training.learning_rate", "model.heatmap_sigma", "augmentation.scale_range"])
def test_no_float_parameter_takes_inf_or_nan(key):
    value = "[.nan, 1.0]" if key == "augmentation.scale_range" else ".inf"
    with pytest.raises(ConfigError, match=rf"{key}.*finite number"):
        TrainConfig().with_overrides([f"{key}={value}"])


def test_exponent_without_a_dot_is_a_number(tmp_path):
    """YAML 1.1 reads `1e-9` as a string ("not a valid number"); YAML 1.2 and JSON read a number."""
    config = TrainConfig().with_overrides(["training.max_time_s=1e-9", "training.learning_rate=3E-4"])
    assert config.training.max_time_s == 1e-9 and config.training.learning_rate == 3e-4
    (tmp_path / "c.yaml").write_text("training:\n  max_time_s: 1e-9\n  learning_rate: 2e-3\ndata:\n  csv_file: 1e5x\n")
    config = TrainConfig.from_yaml(tmp_path / "c.yaml")
    assert config.training.max_time_s == 1e-9 and config.training.learning_rate == 2e-3
    assert config.data.csv_file == "1e5x"  # not every string with an e is a number
