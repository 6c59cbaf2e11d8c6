"""One record per classified input: the JSON object written to ``--json``, ``--jsonl``,
``--csv`` and ``leukedge watch`` files.

A record is the result's own dictionary (:meth:`ClassificationResult.to_dict
<leukedge.classifier.ClassificationResult.to_dict>`) with the input's ``path`` in front and
``model_sha256`` and ``error`` behind, so every line names the exact model file it came
from::

    {"path": "slide_12/f001.jpg", "label": "ALL", "probabilities": {"ALL": 0.97, "HEM": 0.03},
     "score": 0.97, "model": "leukedge_default", "model_version": "0.1.0", ...,
     "status": "ok", "reason": null, "model_sha256": "9f2c…", "error": null}

An input that could not be classified gets ``status`` ``"error"``, a machine-readable
``reason`` (:data:`ERROR_REASONS`), ``error`` = ``"<path>: <problem>"`` and no label or
probabilities. Readers take ``status`` and ``reason`` with ``.get()``: :func:`status_of`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from leukedge.classifier import ClassificationResult, Classifier

STATUSES = ("ok", "refer", "rejected", "error")
"""Every ``status`` a record can have, in the order summaries list them: ``ok`` (a call),
``refer`` (the model is unsure: a person decides), ``rejected`` (not a usable image: quality
or out of domain), ``error`` (the input could not be classified at all)."""

ERROR_REASONS = ("not_found", "read_error", "decode_error", "internal_error")
"""``reason`` of an ``error`` record: no such file; the file could not be read (permission,
a folder, I/O); not a decodable image, or too large (the message says which); anything else
(a bug: please report it)."""


@dataclass(frozen=True)
class ModelInfo:
    """The model every record of a run names.

    Attributes:
        name, version: from the model's metadata.
        sha256: hex digest of the ``.tflite`` bytes.
        labels: class names in output order.
        positive_label: the class whose fraction groups report (``"ALL"`` when the model
            has it, else the first label).
    """

    name: str
    version: str
    sha256: str
    labels: tuple[str, ...]
    positive_label: str

    @classmethod
    def of(cls, classifier: Classifier) -> ModelInfo:
        """The :class:`ModelInfo` of ``classifier``'s model."""
        labels = tuple(classifier.labels)
        return cls(
            name=classifier.metadata.name,
            version=classifier.metadata.version,
            sha256=classifier.model_sha256,
            labels=labels,
            positive_label="ALL" if "ALL" in labels else labels[0],
        )


def result_record(
    path: str | os.PathLike | None, result: ClassificationResult, model: ModelInfo
) -> dict[str, Any]:
    """The record of a classified input: ``{"path", **result.to_dict(), "model_sha256",
    "error": None}``; ``status`` ``"ok"`` and ``reason`` ``None`` unless the result says
    otherwise."""
    record = {"path": None if path is None else str(path), **result.to_dict()}
    record["model_sha256"] = model.sha256
    record["error"] = None
    record.setdefault("status", "ok")
    record.setdefault("reason", None)
    return record


def error_record(path: str | os.PathLike, exc: Exception, model: ModelInfo) -> dict[str, Any]:
    """The record of an input that could not be classified (``status`` ``"error"``)."""
    return {
        "path": str(path),
        "label": None,
        "probabilities": None,
        "score": None,
        "status": "error",
        "reason": error_reason(exc),
        "model": model.name,
        "model_version": model.version,
        "model_sha256": model.sha256,
        "error": describe_error(path, exc),
    }


def error_reason(exc: BaseException) -> str:
    """The :data:`ERROR_REASONS` entry for ``exc`` (an error's own ``reason`` attribute
    wins, when it has one)."""
    from leukedge.preprocess import ImageDecodeError

    own = getattr(exc, "reason", None)
    if isinstance(own, str):
        return own
    if isinstance(exc, FileNotFoundError):
        return "not_found"
    if isinstance(exc, ImageDecodeError):
        return "decode_error"
    if isinstance(exc, OSError):
        return "read_error"
    return "internal_error"


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
