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

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from leukedge.classifier import ERROR_REASONS, STATUSES, ClassificationResult

if TYPE_CHECKING:
    from leukedge.classifier import Classifier

__all__ = [
    "ERROR_REASONS",
    "STATUSES",
    "ModelInfo",
    "describe_error",
    "error_record",
    "result_record",
    "status_of",
]


@dataclass(frozen=True)
class ModelInfo:
    """The model every record of a run names.

    Attributes:
        name, version: from the model's metadata.
        sha256: hex digest of the ``.tflite`` bytes.
        weights_sha256: hex digest of the weights alone
            (:func:`leukedge.metadata.weights_sha256`; kept by metadata rewrites).
        labels: class names in output order.
        positive_label: the class whose fraction groups report: the model's decision
            spec's positive label (``"ALL"``), else the metadata's, else the first label.
    """

    name: str
    version: str
    sha256: str
    labels: tuple[str, ...]
    positive_label: str
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
    from leukedge.preprocess import ImageDecodeError

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
