"""leukedge model metadata: a JSON document carried inside the ``.tflite`` flatbuffer.

The TFLite schema has a ``Model.metadata`` list of ``(name, buffer index)`` pairs; leukedge
stores one UTF-8 JSON buffer there under the name :data:`METADATA_NAME`. The interpreter
ignores it, so the model stays a plain ``.tflite`` that any LiteRT build runs, while the
labels, input contract and model card can never be separated from the weights.

Reading needs only the ``flatbuffers`` package (no TensorFlow, no schema module). Writing
uses the schema's object API (``ai_edge_litert.schema_py_generated``) and is done by the
converters.

Over 400 lines: the document (:class:`ModelMetadata`), the rule the SDK loads a model by
(:func:`check_gate`) and the flatbuffer reading and writing are one format, read and
written in one place.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import flatbuffers
from flatbuffers import table

from leukedge.checks.decision import DecisionSpec
from leukedge.checks.ood import OODSpec
from leukedge.checks.quality import QualityThresholds
from leukedge.errors import LeukedgeError

METADATA_NAME = "leukedge_metadata"
"""Name of the metadata entry in ``Model.metadata``."""

SCHEMA_VERSION = 2
"""Version of the JSON layout below. 2 added ``quality``, ``ood`` and ``decision`` (all
optional); version-1 files load with those ``None``."""

# Field slots of table ``Model`` in tflite/schema.fbs (stable since schema v3).
_MODEL_SUBGRAPHS = 2
_MODEL_BUFFERS = 4
_MODEL_METADATA = 6
# Field slots of tables ``SubGraph``, ``Tensor``, ``Metadata`` and ``Buffer``.
_SUBGRAPH_TENSORS = 0
_TENSOR_BUFFER = 2
_METADATA_NAME = 0
_METADATA_BUFFER = 1
_BUFFER_DATA = 0
_BUFFER_OFFSET = 1
_BUFFER_SIZE = 2


class MetadataError(LeukedgeError, ValueError):
    """The file is not a TFLite flatbuffer, or its leukedge metadata is malformed. Still a
    ``ValueError`` for older code."""


class FailedGateError(LeukedgeError, ValueError):
    """The model's card records that it failed the conversion's accuracy gate
    (``model_card["gate"]["passed"]`` is ``false``): its calls may differ from the float
    model's by more than the gate allows. The message gives the gate's figures and the
    opt-in (``ClassifierOptions(allow_failed_gate=True)``, ``--allow-failed-gate``)."""


@dataclass
class InputSpec:
    """The preprocessing contract of a model's input.

    Attributes:
        height, width: input size in pixels (the model's ``(1, height, width, 3)`` input).
        kind: ``"cell"`` (one segmented white cell on black, C-NMC style) or ``"field"``
            (a smear field photographed through the microscope, Taleqani style).
        color: channel order, always ``"RGB"``.
        value_range: pixel range the model expects, ``[0, 255]``: normalisation happens
            inside the model graph, never in the caller.
        resize: how any image is brought to ``(height, width)``: ``"bilinear"`` resize of
            the whole image, no crop (:func:`leukedge.engine.preprocess.resize_rgb`).
    """

    height: int = 224
    width: int = 224
    kind: str = "field"
    color: str = "RGB"
    value_range: list[float] = field(default_factory=lambda: [0.0, 255.0])
    resize: str = "bilinear"


@dataclass
class ModelMetadata:
    """Everything that travels inside a leukedge ``.tflite``.

    Attributes:
        name: model name, e.g. ``"proposed-lite-taleqani"``.
        version: the model's own version (e.g. ``"2.0.0"`` for the embedded default model
            v2), reported as every result's ``model_version``; distinct for every model
            released under one ``name``. The leukedge version that wrote the file is the
            card's ``leukedge_version``. (Files written before 2026-12 hold the leukedge
            version here, ``"0.1.0"``.)
        labels: class names in output order; ``labels[i]`` is probability ``i``.
        positive_label: the class that counts as a positive finding (``"ALL"``).
        input: :class:`InputSpec`.
        precision: ``"fp32"``, ``"fp16"``, ``"dynamic"``, ``"int8"`` or ``"int16x8"``.
        temperature: softmax calibration temperature (1.0 = uncalibrated).
        source_sha256: sha256 of the ``.keras`` file the model was converted from.
        model_card: free-form dictionary: training data, split, validation/test metrics,
            float and quantized accuracy, delta, creation date.
        quality: :class:`~leukedge.checks.quality.QualityThresholds` derived from the training
            images (``None``: built-in defaults, see ``QualityThresholds.generic``).
        ood: :class:`~leukedge.checks.ood.OODSpec` for the embedding output (``None``: the model
            has none; the out-of-domain check is unavailable).
        decision: :class:`~leukedge.checks.decision.DecisionSpec`, the operating point and refer
            band (``None``: threshold 0.5 on the positive class, no band).
        schema_version: layout version of the file it was read from (:data:`SCHEMA_VERSION`
            when written).
    """

    name: str
    labels: list[str]
    version: str = ""
    positive_label: str = "ALL"
    input: InputSpec = field(default_factory=InputSpec)
    precision: str = "fp32"
    temperature: float = 1.0
    source_sha256: str = ""
    model_card: dict[str, Any] = field(default_factory=dict)
    quality: QualityThresholds | None = None
    ood: OODSpec | None = None
    decision: DecisionSpec | None = None
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (nested specs as dictionaries, arrays base64-encoded), in
        the current layout (``schema_version`` = :data:`SCHEMA_VERSION`)."""
        return asdict(self) | {"schema_version": SCHEMA_VERSION}

    def to_json(self) -> str:
        """Serialise to an indented JSON string (UTF-8 safe, keys in declaration order)."""
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelMetadata:
        """Build from a parsed JSON dictionary.

        Raises:
            MetadataError: a required key (``name``, ``labels``) is missing, the labels
                are not a non-empty list of strings, or a ``quality`` / ``ood`` /
                ``decision`` entry is malformed.
        """
        try:
            labels = data["labels"]
            name = data["name"]
        except KeyError as exc:
            raise MetadataError(f"leukedge metadata lacks the key {exc.args[0]!r}") from exc
        if not labels or not all(isinstance(label, str) for label in labels):
            raise MetadataError(f"leukedge metadata labels must be strings, got {labels!r}")
        known = set(cls.__dataclass_fields__)
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["input"] = InputSpec(
            **{
                k: v
                for k, v in dict(data.get("input", {})).items()
                if k in InputSpec.__dataclass_fields__
            }
        )
        kwargs["name"], kwargs["labels"] = name, list(labels)
        kwargs["schema_version"] = int(data.get("schema_version", 1))
        for key, spec_cls in (
            ("quality", QualityThresholds),
            ("ood", OODSpec),
            ("decision", DecisionSpec),
        ):
            value = data.get(key)
            try:
                kwargs[key] = None if value is None else spec_cls.from_dict(dict(value))
            except (TypeError, ValueError) as exc:
                raise MetadataError(f"leukedge metadata: malformed {key!r} entry ({exc})") from exc
        return cls(**kwargs)


ALLOW_FAILED_GATE_HINT = (
    "ClassifierOptions(allow_failed_gate=True) in Python, --allow-failed-gate on the command line"
)
"""How to opt in to a model that failed its gate (named in :class:`FailedGateError`)."""


def gate_failure(metadata: ModelMetadata | None) -> str | None:
    """Why the model failed its conversion's accuracy gate, or ``None`` if it did not.

    Reads ``model_card["gate"]`` as :func:`leukedge.converters.card.model_card` writes it.
    A model without leukedge metadata, without a gate record (``"gate": null``: not
    checked, e.g. ``--no-check``), or whose gate has no ``passed`` entry counts as not
    failed: nothing recorded says it failed. A ``passed`` entry that is anything but
    ``true`` (``false``, ``0``, ``"false"``, ``null``) counts as failed: a verdict that does
    not say "passed" is not trusted.

    Returns:
        One line with the gate's figures: precision, split and images, accuracy against the
        float model's, agreement, mean |Δp|, ECE, and the bounds it broke (``failures``,
        written by converters since 2026-12).
    """
    if metadata is None:
        return None
    gate = metadata.model_card.get("gate") if isinstance(metadata.model_card, dict) else None
    if not isinstance(gate, dict) or "passed" not in gate or gate["passed"] is True:
        return None
    figures = []
    if "accuracy" in gate and "float_accuracy" in gate:
        figures.append(
            f"accuracy {_fmt(gate['accuracy'])} vs {_fmt(gate['float_accuracy'])} float"
            + (f" (delta {_fmt(gate['delta_pp'], '.2f')} pp)" if "delta_pp" in gate else "")
        )
    if "agreement" in gate:
        figures.append(f"agreement with the float model {_fmt(gate['agreement'])}")
    if "mean_abs_prob_diff" in gate:
        figures.append(f"mean |dp| {_fmt(gate['mean_abs_prob_diff'], '.4f')}")
    if "ece" in gate and "float_ece" in gate:
        figures.append(f"ECE {_fmt(gate['ece'], '.4f')} vs {_fmt(gate['float_ece'], '.4f')} float")
    where = f"{metadata.precision} on {gate.get('eval_split', '?')}, n={gate.get('n', '?')}"
    text = f"{where}: " + (", ".join(figures) or "no figures recorded")
    failures = gate.get("failures")
    if failures:
        text += "; failed: " + "; ".join(str(f) for f in failures)
    return text


def _fmt(value: Any, spec: str = ".3f") -> str:
    try:
        return format(float(value), spec)
    except (TypeError, ValueError):
        return str(value)


def check_gate(metadata: ModelMetadata | None, origin: str, allow: bool = False) -> str | None:
    """Refuse a model whose card says it failed its accuracy gate, unless ``allow``.

    Args:
        metadata: the model's metadata (``None``: a model without leukedge metadata, not
            refused).
        origin: the model's path (or ``"<model bytes>"``), for the message.
        allow: the caller's explicit opt-in.

    Returns:
        ``None`` when the model did not fail; with ``allow``, the warning to show at every
        run (one sentence naming the model and the gate's figures).

    Raises:
        FailedGateError: the model failed its gate and ``allow`` is false; the message
            gives the figures and the opt-in (:data:`ALLOW_FAILED_GATE_HINT`).
    """
    why = gate_failure(metadata)
    if why is None:
        return None
    if not allow:
        raise FailedGateError(
            f"{origin}: this model FAILED its conversion's accuracy gate ({why}), so its "
            "calls may differ from the trained model's. Re-convert it (e.g. with other "
            "calibration images or --auto-keep-float), or to use it anyway, opt in with "
            f"{ALLOW_FAILED_GATE_HINT}"
        )
    return (
        f"{origin}: using a model that FAILED its accuracy gate ({why}) because it was "
        "allowed explicitly; its calls may differ from the trained model's"
    )


def weights_sha256(buf: bytes) -> str:
    """SHA-256 (hex) of a TFLite model's weights, independent of its metadata.

    Hashes, in subgraph and tensor order, each tensor's index and the bytes of the buffer it
    reads (constant tensors: weights, biases, quantization tables), each prefixed by its
    length, so rewriting the metadata (a model card update, :func:`write_metadata`) keeps
    the digest while any change of a weight changes it. The file's own ``sha256sum``
    changes with every metadata rewrite; this one names the weights.

    Args:
        buf: the whole ``.tflite`` file content.

    Raises:
        MetadataError: ``buf`` is not a TFLite flatbuffer, or a tensor names a missing
            buffer.
    """
    import hashlib

    model = _root_table(buf)
    buffers = _vector_of_tables(model, _MODEL_BUFFERS)
    digest = hashlib.sha256()
    for s, subgraph in enumerate(_vector_of_tables(model, _MODEL_SUBGRAPHS)):
        for t, tensor in enumerate(_vector_of_tables(subgraph, _SUBGRAPH_TENSORS)):
            o = tensor.Offset(4 + 2 * _TENSOR_BUFFER)
            index = tensor.Get(flatbuffers.number_types.Uint32Flags, o + tensor.Pos) if o else 0
            if index == 0:
                continue  # buffer 0 is the empty sentinel: an activation, no weights
            if index >= len(buffers):
                raise MetadataError(f"tensor {t} of subgraph {s} points at missing buffer {index}")
            data = _buffer_bytes(buf, buffers[index])
            if data:
                digest.update(f"{s}:{t}:{len(data)}:".encode())
                digest.update(data)
    return digest.hexdigest()


def _buffer_bytes(buf: bytes, data_tab: table.Table) -> bytes:
    """A ``Buffer``'s bytes: its ``data`` vector, or ``offset``/``size`` into the file
    (models over 2 GB keep their weights after the flatbuffer)."""
    o = data_tab.Offset(4 + 2 * _BUFFER_DATA)
    if o:
        start, length = data_tab.Vector(o), data_tab.VectorLen(o)
        return bytes(buf[start : start + length])
    o_off = data_tab.Offset(4 + 2 * _BUFFER_OFFSET)
    o_size = data_tab.Offset(4 + 2 * _BUFFER_SIZE)
    if o_off and o_size:
        offset = data_tab.Get(flatbuffers.number_types.Uint64Flags, o_off + data_tab.Pos)
        size = data_tab.Get(flatbuffers.number_types.Uint64Flags, o_size + data_tab.Pos)
        if offset > 1:
            return bytes(buf[offset : offset + size])
    return b""


def _root_table(buf: bytes) -> table.Table:
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise MetadataError("not a TFLite flatbuffer (file identifier 'TFL3' missing)")
    offset = flatbuffers.encode.Get(flatbuffers.packer.uoffset, buf, 0)
    return table.Table(buf, offset)


def _vector_of_tables(tab: table.Table, slot: int) -> list[table.Table]:
    o = tab.Offset(4 + 2 * slot)
    if not o:
        return []
    start, length = tab.Vector(o), tab.VectorLen(o)
    return [table.Table(tab.Bytes, tab.Indirect(start + 4 * i)) for i in range(length)]


def read_metadata_entries(buf: bytes) -> dict[str, bytes]:
    """All ``Model.metadata`` entries of a TFLite flatbuffer as ``{name: payload bytes}``.

    Args:
        buf: the whole ``.tflite`` file content.

    Raises:
        MetadataError: ``buf`` is not a TFLite flatbuffer.
    """
    model = _root_table(buf)
    buffers = _vector_of_tables(model, _MODEL_BUFFERS)
    entries: dict[str, bytes] = {}
    for meta in _vector_of_tables(model, _MODEL_METADATA):
        o = meta.Offset(4 + 2 * _METADATA_NAME)
        name = meta.String(o + meta.Pos).decode("utf-8") if o else ""
        o = meta.Offset(4 + 2 * _METADATA_BUFFER)
        index = meta.Get(flatbuffers.number_types.Uint32Flags, o + meta.Pos) if o else 0
        if index >= len(buffers):
            raise MetadataError(f"metadata {name!r} points at missing buffer {index}")
        data_tab = buffers[index]
        o = data_tab.Offset(4 + 2 * _BUFFER_DATA)
        if o:
            start, length = data_tab.Vector(o), data_tab.VectorLen(o)
            entries[name] = bytes(buf[start : start + length])
        else:
            entries[name] = b""
    return entries


def read_metadata(model: bytes | str | Path) -> ModelMetadata | None:
    """The leukedge metadata of a ``.tflite`` model, or ``None`` if it carries none.

    Args:
        model: file path or the file's bytes.

    Raises:
        FileNotFoundError: the path does not exist.
        MetadataError: not a TFLite file, or the leukedge entry is not valid JSON.
    """
    buf = Path(model).read_bytes() if isinstance(model, (str, Path)) else model
    payload = read_metadata_entries(buf).get(METADATA_NAME)
    if payload is None:
        return None
    try:
        data = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MetadataError(f"leukedge metadata is not valid JSON: {exc}") from exc
    return ModelMetadata.from_dict(data)


def write_metadata(buf: bytes, metadata: ModelMetadata) -> bytes:
    """Return a copy of a TFLite flatbuffer with ``metadata`` embedded (replacing any older one).

    Uses the flatbuffer object API of ``ai_edge_litert.schema_py_generated`` (or TensorFlow's
    copy of the same schema). The operators, tensors and weights are copied unchanged
    (:func:`weights_sha256` stays the same); an earlier leukedge entry's buffer is reused.

    Args:
        buf: the ``.tflite`` content.
        metadata: what to embed.

    Returns:
        New ``.tflite`` content, still identified ``TFL3``.

    Raises:
        MetadataError: ``buf`` is not a TFLite flatbuffer.
    """
    import numpy as np

    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:  # pragma: no cover - training machines without LiteRT
        from tensorflow.lite.python import schema_py_generated as schema

    _root_table(buf)  # validates the identifier
    model = schema.ModelT.InitFromPackedBuf(bytearray(buf), 0)
    payload = np.frombuffer(metadata.to_json().encode("utf-8"), dtype=np.uint8)
    model.metadata = list(model.metadata or [])
    earlier = [m for m in model.metadata if _name(m) == METADATA_NAME]
    if earlier:  # rewrite the entry's own buffer: the file does not grow with each update
        model.metadata = [m for m in model.metadata if m is earlier[0] or m not in earlier]
        model.buffers[earlier[0].buffer].data = payload
    else:
        new_buffer = schema.BufferT()
        new_buffer.data = payload
        model.buffers.append(new_buffer)
        entry = schema.MetadataT()
        entry.name = METADATA_NAME
        entry.buffer = len(model.buffers) - 1
        model.metadata.append(entry)
    builder = flatbuffers.Builder(len(buf) + len(payload) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _name(entry: Any) -> str:
    name = entry.name
    return name.decode("utf-8") if isinstance(name, bytes) else str(name)


def add_scale_checks(
    model: bytes,
    diameter_range: Sequence[float] | None,
    black_background_max: float | None,
    source: str,
) -> bytes:
    """``model`` (a ``.tflite``'s bytes with leukedge quality metadata) with the red-cell
    range and the segmented-cell threshold set; the weights are untouched. No TensorFlow
    (:func:`write_metadata`).

    Args:
        model: the ``.tflite`` file's bytes.
        diameter_range: ``[low, high]`` px (:func:`leukedge.checks.scale.fit_diameter_range`),
            ``None``: off.
        black_background_max: see :class:`~leukedge.checks.quality.QualityThresholds`.
        source: how they were obtained, for the record (appended to the thresholds'
            ``source``).

    Raises:
        ValueError: the model has no leukedge metadata or no quality thresholds.
    """
    metadata = read_metadata(model)
    if metadata is None or metadata.quality is None:
        raise ValueError("the model has no leukedge quality thresholds to extend")
    metadata.quality.red_cell_diameter_range = (
        None if diameter_range is None else [float(v) for v in diameter_range]
    )
    metadata.quality.black_background_max = black_background_max
    metadata.quality.source = f"{metadata.quality.source}; scale checks: {source}"
    return write_metadata(model, metadata)
