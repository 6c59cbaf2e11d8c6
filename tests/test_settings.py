"""One source for each setting: the dataclasses, their tables, their command-line options.

Fast and without TensorFlow: the configs, tables and CLIs import no backend, and the
commands are run with ``train`` / ``convert_model`` replaced by a recorder.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import get_args

import pytest
from typer.testing import CliRunner

from leukedge.cli import app
from leukedge.cli_kit.options import attribute_docs
from leukedge.converters.convert import ConvertConfig
from leukedge.converters.precisions import PRECISION_TABLE, Precision
from leukedge.errors import LeukedgeError
from leukedge.modeling.architectures import ARCHITECTURE_TABLE, Architecture
from leukedge.modeling.config import HeadConfig
from leukedge.training.config import Recipe, TrainConfig
from leukedge.training.recipes import RECIPES, recipe


def test_choices_are_the_tables():
    assert get_args(Architecture) == tuple(ARCHITECTURE_TABLE)
    assert get_args(Precision) == tuple(PRECISION_TABLE)
    assert set(get_args(Recipe)) == set(RECIPES)


def _documented(cls) -> list[str]:
    """Fields of ``cls`` and its nested dataclasses without an ``Attributes:`` entry."""
    docs, hints, missing = attribute_docs(cls), typing.get_type_hints(cls), []
    for f in dataclasses.fields(cls):
        if not docs.get(f.name):
            missing.append(f"{cls.__name__}.{f.name}")
        if dataclasses.is_dataclass(hints[f.name]):
            missing += _documented(hints[f.name])
    return missing


def test_every_field_is_documented_for_the_help():
    """The CLI's help is the docstring's Attributes entry: none may be missing."""
    assert _documented(TrainConfig) == [] and _documented(ConvertConfig) == []


@pytest.fixture
def started(monkeypatch):
    """Replace ``train`` with a recorder of the configs it is given."""
    import leukedge.training.train as train_module

    configs = []
    monkeypatch.setattr(train_module, "train", lambda config, resume=False: configs.append(config))
    return configs


def _train(*args):
    return CliRunner().invoke(app, ["train", *map(str, args)])


def test_recipe_sets_the_defaults_and_options_override_them(started, example_images, tmp_path):
    out = tmp_path / "run"
    # No option: the default recipe (camera), exactly.
    assert _train("--data", example_images, "--out", out).exit_code == 0
    camera = TrainConfig(
        data=str(example_images), out=str(out), recipe="camera", **recipe("camera")
    )
    assert started[-1] == camera
    # The paper recipe is TrainConfig's defaults.
    assert _train("--recipe", "paper", "--data", example_images, "--out", out).exit_code == 0
    assert started[-1] == TrainConfig(data=str(example_images), out=str(out), recipe="paper")
    # Options given win, top-level and nested, and leave the recipe's other values.
    result = _train(
        "--data", example_images, "--out", out, "--head-epochs", 2, "--zoom", 0.3,
        "--photometric-stain", 0.02, "--head-dropout", 0.4, 0.2, "--weights", "none",
        "--no-augment",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    config = started[-1]
    assert config.head_epochs == 2 and config.head_lr == camera.head_lr == 3e-4
    assert config.augment.zoom == 0.3 and config.augment.zoom_in_only  # camera's
    assert config.augment.photometric.stain == 0.02
    assert config.augment.photometric.hue == camera.augment.photometric.hue
    assert config.augment.enabled is False
    assert config.head == HeadConfig(dropout=(0.4, 0.2)) and config.weights is None
    # The recipe's own objects are not changed by an override.
    assert recipe("camera")["augment"].zoom == 0.1


def test_help_shows_what_each_recipe_sets():
    result = CliRunner().invoke(app, ["train", "run", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    text = " ".join(result.output.replace("│", " ").split())  # rich table borders out
    assert "camera: head_epochs=15, finetune_epochs=0" in text
    assert "(camera: 15; paper: 4)" in text  # --head-epochs
    assert "(default: 224)" in text  # --image-size: the recipes agree


def test_bad_values_are_usage_errors(started, example_images, tmp_path):
    out = tmp_path / "run"
    for args, message in [
        (("--arch", "bogus"), "'bogus' is not one of"),
        (("--batch-size", 0), "--batch-size"),
        (("--head-lr", -1), "head_lr must be a positive number"),
        (("--recipe", "fast"), "'fast' is not one of"),
    ]:
        result = _train("--data", example_images, "--out", out, *args)
        assert result.exit_code == 2 and message in result.output, (args, result.output)
    assert not started and not out.exists()


def test_old_config_json_loads(tmp_path):
    """A config.json from before the head was nested (flat ``dropout``) still loads."""
    old = {
        "data": str(tmp_path),
        "out": str(tmp_path / "r"),
        "arch": "proposed",
        "dropout": [0.4, 0.2],
        "fractions": [0.8, 0.1, 0.1],
        "leukedge_version": "0.1",
    }
    config = TrainConfig.from_dict(old)
    assert config.head.dropout == (0.4, 0.2) and config.fractions == (0.8, 0.1, 0.1)
    again = TrainConfig.from_dict(json.loads(json.dumps(dataclasses.asdict(config))))
    assert again == config


def test_convert_options_build_the_nested_config(monkeypatch, tmp_path):
    import leukedge.converters.convert as convert_module

    seen = []

    def record(config):
        seen.append(config)
        return {"precisions": {}}

    monkeypatch.setattr(convert_module, "convert_model", record)
    result = CliRunner().invoke(
        app,
        ["convert", str(tmp_path / "m.keras"), "-p", "int8", "--max-delta", "2",
         "--ood-rank", "8", "--trust-ood-shrinkage", "0.2", "--keep-float", "a",
         "--keep-float", "b", "--io-dtype", "int8"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (config,) = seen
    assert list(config.precisions) == ["int8"] and config.io_dtype == "int8"
    assert config.gate.max_delta == 2.0 and config.gate.min_agreement == 0.98
    assert config.trust_config.ood_rank == 8 and config.trust_config.ood_shrinkage == 0.2
    assert config.keep_float == ("a", "b")
    bad = CliRunner().invoke(app, ["convert", "m.keras", "-p", "int4"])
    assert bad.exit_code == 2 and "int4" in bad.output


def test_library_errors_share_one_base():
    from leukedge.converters.gate import GateFailedError
    from leukedge.converters.tflite import ConversionError
    from leukedge.evaluation.data import DatasetError
    from leukedge.training.train import RunExistsError

    for error, builtin in [
        (GateFailedError, RuntimeError),
        (ConversionError, RuntimeError),
        (DatasetError, ValueError),
        (RunExistsError, FileExistsError),
    ]:
        assert issubclass(error, LeukedgeError) and issubclass(error, builtin), error


def test_a_converter_failure_is_a_conversion_error_whatever_its_message(monkeypatch):
    """Not decided by searching the message: a converter ValueError that mentions
    'representative' or 'precision' is the converter's failure like any other."""
    import numpy as np

    from leukedge.converters import tflite

    def failing(model):
        def make():
            raise ValueError("bad representative dataset precision inside the converter")

        yield "from_keras_model", make

    monkeypatch.setattr(tflite, "_converters", failing)
    with pytest.raises(tflite.ConversionError, match="from_keras_model: ValueError"):
        tflite.convert_keras(object(), "fp32")
    # Our own argument checks still come first, as ValueError.
    with pytest.raises(ValueError, match="needs a representative dataset"):
        tflite.convert_keras(object(), "int8")
    with pytest.raises(ValueError, match="empty or malformed"):
        tflite.convert_keras(object(), "int8", np.zeros((0, 8, 8, 3)))
