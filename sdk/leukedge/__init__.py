"""leukedge: find leukemic blasts (ALL vs HEM) in microscope images on edge hardware.

The runtime API; importing it loads NumPy, Pillow and the flatbuffers reader, never
TensorFlow or Keras::

    from leukedge import Classifier

    result = Classifier().classify("field.jpg")
    result.label, result.probabilities  # "ALL", {"ALL": 0.97, "HEM": 0.03}
"""

from leukedge._version import __version__
from leukedge.classifier import (
    ClassificationResult,
    Classifier,
    ClassifierOptions,
    RunningMode,
    default_model_path,
)
from leukedge.metadata import ModelMetadata, read_metadata

__all__ = [
    "ClassificationResult",
    "Classifier",
    "ClassifierOptions",
    "ModelMetadata",
    "RunningMode",
    "__version__",
    "default_model_path",
    "read_metadata",
]
