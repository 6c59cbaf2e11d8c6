"""leukedge: find leukemic blasts (ALL vs HEM) in microscope images on edge hardware.

The runtime API; importing it loads NumPy, Pillow and the flatbuffers reader, never
TensorFlow or Keras::

    from leukedge import Classifier

    result = Classifier().classify("field.jpg")
    result.label, result.probabilities  # "ALL", {"ALL": 0.97, "HEM": 0.03}
"""

from leukedge._version import __version__
from leukedge.cells.field import FieldOptions, FieldResult
from leukedge.checks.quality import QualityThresholds
from leukedge.classifier import (
    REASONS,
    STATUSES,
    ClassificationResult,
    Classifier,
    ClassifierOptions,
    ResultCallback,
    RunningMode,
    default_model_path,
)
from leukedge.engine.interpreter import ModelLoadError, RuntimeNotFoundError
from leukedge.engine.metadata import FailedGateError, MetadataError, ModelMetadata, read_metadata
from leukedge.engine.preprocess import ImageDecodeError, PixelFormat
from leukedge.errors import LeukedgeError, LeukedgeWarning

__all__ = [
    "REASONS",
    "STATUSES",
    "ClassificationResult",
    "Classifier",
    "ClassifierOptions",
    "FailedGateError",
    "FieldOptions",
    "FieldResult",
    "ImageDecodeError",
    "LeukedgeError",
    "LeukedgeWarning",
    "MetadataError",
    "ModelLoadError",
    "ModelMetadata",
    "PixelFormat",
    "QualityThresholds",
    "ResultCallback",
    "RunningMode",
    "RuntimeNotFoundError",
    "__version__",
    "default_model_path",
    "read_metadata",
]
