"""One record per classified input: the JSON object written to ``--json``, ``--jsonl``,
``--csv`` and ``leukedge watch`` files.

A record is the result's own dictionary (:meth:`ClassificationResult.to_dict
<leukedge.classifier.ClassificationResult.to_dict>`: status, reason, message, label,
probabilities, model_label, ood_distance, quality, …) with the input's ``path`` in front and
``model_sha256``, ``weights_sha256`` and ``error`` behind, so every line names the exact
model file it came from, and the weights, which a model card update (a metadata rewrite that
changes the file's sha256) keeps::

    {"path": "slide_12/f001.jpg", "status": "ok", "reason": null, "message": null,
     "label": "ALL", "probabilities": {"ALL": 0.97, "HEM": 0.03}, "score": 0.97, ...,
     "model": "leukedge_default", "model_version": "2.0.0", "model_sha256": "9f2c…",
     "weights_sha256": "e972…", "error": null}

An input that could not be classified gets the result of
:meth:`ClassificationResult.from_error
<leukedge.classifier.ClassificationResult.from_error>` (``status`` ``"error"``, a
``reason`` from :data:`~leukedge.classifier.ERROR_REASONS`) and ``error`` =
``"<path>: <problem>"``. Readers take ``status`` with :func:`status_of`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from leukedge.classifier import ERROR_REASONS, STATUSES, ClassificationResult

if TYPE_CHECKING:
    from leukedge.classifier import Classifier

__all__ = [
    "ERROR_REASONS",
    "STATUSES",
    "ModelInfo",
    "describe_error",
    "error_record",
    "probability_decimals",
    "result_record",
    "status_of",
]


FLOAT_PROBABILITY_DECIMALS = 6
"""Decimals of a float32 output's probabilities in a CSV: float32 carries about 7
significant digits, and no reader needs more than 1e-6 of a probability."""


def probability_decimals(output_dtype: Any, output_scale: float) -> int:
    """Decimals that show every step a model's probabilities can take, and no more.

    A quantized output (``uint8``/``int8``, scale 1/256 for leukedge's int8 models) moves in
    steps of ``output_scale``; its first significant digit is decimal
    ``ceil(-log10(scale))`` (3 for 1/256 = 0.0039) and one more digit keeps neighbouring
    steps apart after the temperature's smooth rescaling: 4 decimals for 1/256. A float32
    output gets :data:`FLOAT_PROBABILITY_DECIMALS`.

    Args:
        output_dtype: numpy dtype of the probabilities tensor.
        output_scale: its quantization scale (0 for a float output).

    Returns:
        Decimals, between 2 and :data:`FLOAT_PROBABILITY_DECIMALS`.
    """
    if np.dtype(output_dtype).kind == "f" or not output_scale or output_scale <= 0:
        return FLOAT_PROBABILITY_DECIMALS
    step_digit = math.ceil(-math.log10(output_scale))
    return max(2, min(FLOAT_PROBABILITY_DECIMALS, step_digit + 1))


@dataclass(frozen=True)
class ModelInfo:
    """The model every record of a run names.

    Attributes:
        name, version: from the model's metadata.
        sha256: hex digest of the ``.tflite`` bytes.
        weights_sha256: hex digest of the weights alone
            (:func:`leukedge.engine.metadata.weights_sha256`; kept by metadata rewrites).
        labels: class names in output order.
        positive_label: the class whose fraction groups report: the model's decision
            spec's positive label (``"ALL"``), else the metadata's, else the first label.
        probability_decimals: decimals of probabilities in CSV files
            (:func:`probability_decimals` of the model's output: 4 for an int8 model).
    """

    name: str
    version: str
    sha256: str
    labels: tuple[str, ...]
    positive_label: str
    probability_decimals: int = FLOAT_PROBABILITY_DECIMALS
    weights_sha256: str = ""

    @classmethod
    def of(cls, classifier: Classifier) -> ModelInfo:
        """The :class:`ModelInfo` of ``classifier``'s model."""
        meta = classifier.metadata
        labels = tuple(classifier.labels)
        positive = meta.decision.positive_label if meta.decision else meta.positive_label
        return cls(
            name=meta.name,
            version=meta.version,
            sha256=classifier.model_sha256,
            labels=labels,
            positive_label=positive if positive in labels else labels[0],
            probability_decimals=probability_decimals(
                classifier.output_dtype, classifier.output_quantization[0]
            ),
            weights_sha256=classifier.weights_sha256,
        )


def result_record(
    path: str | os.PathLike | None,
    result: ClassificationResult,
    model: ModelInfo,
    error: str | None = None,
) -> dict[str, Any]:
    """``{"path", **result.to_dict(), "model_sha256", "weights_sha256", "error"}``."""
    record = {"path": None if path is None else str(path), **result.to_dict()}
    record["model_sha256"] = model.sha256
    record["weights_sha256"] = model.weights_sha256
    record["error"] = error
    return record


def error_record(path: str | os.PathLike, exc: Exception, model: ModelInfo) -> dict[str, Any]:
    """The record of an input that could not be classified (``status`` ``"error"``)."""
    message = describe_error(path, exc)
    result = ClassificationResult.from_error(exc, str(path), model.name, model.version)
    result.message = message
    return result_record(path, result, model, error=message)


def describe_error(path: str | os.PathLike, exc: BaseException) -> str:
    """``"<path>: <problem>"`` for one input that failed. The problem comes from the error's
    attributes (``ImageDecodeError.problem``, ``OSError.strerror``), never from searching
    its message for the path."""
    from leukedge.engine.preprocess import ImageDecodeError

    if isinstance(exc, ImageDecodeError):
        problem = exc.problem
    elif isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        problem = exc.strerror
    else:
        problem = str(exc) or type(exc).__name__
    return f"{path}: {problem}"


def status_of(record: dict[str, Any]) -> str:
    """A record's ``status`` (``"error"`` when it has an error and no status)."""
    status = record.get("status")
    if status:
        return str(status)
    return "error" if record.get("error") else "ok"
