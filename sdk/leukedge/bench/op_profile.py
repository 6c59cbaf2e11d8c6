"""Per-operator latency of a ``.tflite`` on LiteRT, with and without XNNPACK.

LiteRT's own op profiler lives in the C++ ``benchmark_model`` binary
(``--enable_op_profiling=true``), which no PyPI package ships, and the Python interpreter has
no profiling API. So each operator is cut out of the model into a one-operator model (its
constant inputs kept, its other inputs fed with the values they take in a real run, captured
with ``experimental_preserve_all_tensors``) and timed alone, twice:

- with LiteRT's default delegate (XNNPACK), as the SDK runs it: an operator XNNPACK takes
  shows up as one ``DELEGATE`` node; one it does not take runs on LiteRT's builtin kernel;
- without default delegates (``BUILTIN_WITHOUT_DEFAULT_DELEGATES``): the builtin kernels.

Timing operators one by one loses what the full graph gains from fusion and warm caches, and
adds a few microseconds of invoke overhead per operator, so the sum is compared with the
full model's own invoke time in the report. Needs only LiteRT and ``flatbuffers`` (runtime
dependencies); nothing is written into the model.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass
class OpTiming:
    """One operator of the model's main subgraph.

    Attributes:
        index: position in the subgraph's operator list (execution order).
        op: builtin operator name (``CONV_2D``, ``BATCH_MATMUL``, …).
        output: name of its first output tensor.
        dtypes: ``"in1,in2->out"`` numpy dtype names of its non-constant inputs and output.
        shape: shape of its first output.
        xnnpack: ``True`` when LiteRT's default XNNPACK delegate takes this operator.
        ms_default: median latency in ms with the default delegate (how the SDK runs it).
        ms_builtin: median latency in ms on LiteRT's builtin kernels (no delegate).
        error: why the operator could not be timed alone (``ms_*`` are then NaN), e.g. a
            weight that the full graph computes once (float16 weights' ``DEQUANTIZE``)
            becoming an input XNNPACK cannot take; ``None`` when it was timed.
    """

    index: int
    op: str
    output: str
    dtypes: str
    shape: list[int]
    xnnpack: bool
    ms_default: float
    ms_builtin: float
    error: str | None = None


def _schema():
    from ai_edge_litert import schema_py_generated as schema

    return schema


def _op_names(model) -> list[str]:
    schema = _schema()
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    out = []
    for code in model.operatorCodes:
        builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
        out.append(names.get(builtin, f"CUSTOM:{code.customCode!r}"))
    return out


def single_op_models(content: bytes) -> list[tuple[int, str, bytes, list[int], list[int]]]:
    """Every operator of subgraph 0 as its own model.

    Returns:
        ``(index, op name, model bytes, original input tensor indices, original output
        tensor indices)`` per operator; the inputs listed are the non-constant ones, in the
        order of the one-op model's inputs.
    """
    from ai_edge_litert.tools import flatbuffer_utils as fbu

    schema = _schema()
    model = fbu.read_model_from_bytearray(bytearray(content))
    names = _op_names(model)
    graph = model.subgraphs[0]
    out = []
    for index, op in enumerate(graph.operators):
        used = [t for t in list(op.inputs) + list(op.outputs) if t >= 0]
        used = list(dict.fromkeys(used))
        remap = {t: i for i, t in enumerate(used)}
        buffers = [schema.BufferT()]
        tensors = []
        feeds = []
        for t in used:
            tensor = copy.copy(graph.tensors[t])
            data = model.buffers[tensor.buffer].data
            if data is not None and len(data) and t not in op.outputs:
                buffers.append(model.buffers[tensor.buffer])
                tensor.buffer = len(buffers) - 1
            else:
                tensor.buffer = 0
                if t not in op.outputs:
                    feeds.append(t)
            tensors.append(tensor)
        new_op = copy.copy(op)
        new_op.inputs = [remap[t] if t >= 0 else -1 for t in op.inputs]
        new_op.outputs = [remap[t] for t in op.outputs]
        sub = schema.SubGraphT()
        sub.tensors = tensors
        sub.operators = [new_op]
        sub.inputs = [remap[t] for t in feeds]
        sub.outputs = [remap[t] for t in op.outputs]
        sub.name = "op"
        one = schema.ModelT()
        one.version = model.version
        one.operatorCodes = model.operatorCodes
        one.subgraphs = [sub]
        one.buffers = buffers
        one.description = b"leukedge op profile"
        out.append(
            (
                index,
                names[op.opcodeIndex],
                bytes(fbu.convert_object_to_bytearray(one)),
                feeds,
                list(op.outputs),
            )
        )
    return out


def capture_tensors(content: bytes, image: np.ndarray) -> dict[int, np.ndarray]:
    """Every tensor's value in one run of the full model on ``image`` (builtin kernels).

    Args:
        content: the ``.tflite`` bytes.
        image: ``(1, H, W, 3)`` array of the input tensor's dtype.
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(
        model_content=content,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        experimental_preserve_all_tensors=True,
    )
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image)
    interpreter.invoke()
    values = {}
    for detail in interpreter.get_tensor_details():
        try:
            values[detail["index"]] = interpreter.get_tensor(detail["index"])
        except ValueError:  # tensors without data (optional inputs)
            continue
    return values


def _time(interpreter, runs: int) -> float:
    for _ in range(3):
        interpreter.invoke()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        interpreter.invoke()
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def feed_inputs(interpreter, feeds: list[int], values: dict[int, np.ndarray]) -> list[dict]:
    """Set a one-op model's inputs to the full run's values; an input whose declared shape
    is not the value's (a tensor the full model resizes at run time, e.g. the
    ``(-1, 1280)`` reshape of model v3's class activation map) is resized first.

    Returns:
        The interpreter's input details, after any resize.
    """
    details = interpreter.get_input_details()
    resized = False
    for detail, tensor in zip(details, feeds, strict=True):
        if tuple(detail["shape"]) != values[tensor].shape:
            interpreter.resize_tensor_input(detail["index"], list(values[tensor].shape))
            resized = True
    if resized:
        interpreter.allocate_tensors()
        details = interpreter.get_input_details()
    for detail, tensor in zip(details, feeds, strict=True):
        interpreter.set_tensor(detail["index"], values[tensor])
    return details


def _interpreter(content: bytes, threads: int, delegate: bool):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from leukedge.engine.interpreter import quiet_delegate_banner

    resolver = OpResolverType.AUTO if delegate else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    with quiet_delegate_banner():
        interpreter = Interpreter(
            model_content=content, num_threads=threads, experimental_op_resolver_type=resolver
        )
        interpreter.allocate_tensors()
    return interpreter


def profile_ops(
    content: bytes, image: np.ndarray, threads: int = 1, runs: int = 30
) -> list[OpTiming]:
    """Time every operator of ``content`` alone, with and without XNNPACK.

    Args:
        content: ``.tflite`` bytes with one image input.
        image: ``(H, W, 3)`` ``uint8`` RGB at the model's input size (quantized with the
            input tensor's scale and zero point when the input is integer).
        threads: interpreter threads.
        runs: timed invokes per operator and setting (median taken).

    Returns:
        One :class:`OpTiming` per operator, in execution order.
    """
    from leukedge.engine.interpreter import TFLiteEngine

    engine = TFLiteEngine(content, num_threads=threads)
    batch = engine._quantize_input(image)[None]
    values = capture_tensors(content, batch)
    timings = []
    for index, name, one, feeds, _ in single_op_models(content):
        row, errors = {}, []
        for delegate in (False, True):  # builtin first: its details stand in if XNNPACK fails
            try:
                interpreter = _interpreter(one, threads, delegate)
                details = feed_inputs(interpreter, feeds, values)
                row[delegate] = _time(interpreter, runs)
            except (RuntimeError, ValueError) as exc:
                # e.g. XNNPACK cannot prepare a reshape whose shape the full graph sets at
                # run time (model v3's class activation map): timed on builtin kernels only.
                row[delegate] = float("nan")
                errors.append(f"{'XNNPACK' if delegate else 'builtin'}: {exc}")
                if delegate:
                    delegated = False
                    continue
                interpreter = _interpreter(one, threads, False)
                details = interpreter.get_input_details()
            if not delegate:
                out = interpreter.get_output_details()[0]
                in_types = [np.dtype(d["dtype"]).name for d in details]
                dtypes = ",".join(in_types) + "->" + np.dtype(out["dtype"]).name
                shape = [int(v) for v in out["shape"]]
                out_name = out["name"]
            else:
                delegated = any(o["op_name"] == "DELEGATE" for o in interpreter._get_ops_details())
        timings.append(
            OpTiming(
                index=index,
                op=name,
                output=out_name,
                dtypes=dtypes,
                shape=shape,
                xnnpack=delegated,
                ms_default=row[True],
                ms_builtin=row[False],
                error="; ".join(errors) or None,
            )
        )
    return timings


def summarize(timings: list[OpTiming]) -> list[dict[str, Any]]:
    """Per operator type and dtype signature: count, summed ms (default delegate / builtin)
    and whether XNNPACK took them; sorted by summed default time, largest first."""
    groups: dict[tuple[str, str, bool], list[OpTiming]] = defaultdict(list)
    for t in timings:
        groups[(t.op, t.dtypes, t.xnnpack)].append(t)
    rows = [
        {
            "op": op,
            "dtypes": dtypes,
            "xnnpack": xnnpack,
            "count": len(items),
            "ms_default": float(np.nansum([t.ms_default for t in items])),
            "ms_builtin": float(np.nansum([t.ms_builtin for t in items])),
            "not_timed": sum(t.error is not None for t in items),
        }
        for (op, dtypes, xnnpack), items in groups.items()
    ]
    return sorted(rows, key=lambda r: -r["ms_default"])


def as_dicts(timings: list[OpTiming]) -> list[dict[str, Any]]:
    """JSON-ready rows (an operator that could not be timed has ``None`` for its ms)."""
    rows = [asdict(t) for t in timings]
    for row in rows:
        for key in ("ms_default", "ms_builtin"):
            if row[key] != row[key]:  # NaN
                row[key] = None
    return rows


def table_lines(timings: list[OpTiming]) -> list[str]:
    """``leukedge bench --profile-ops``'s table: one line per operator kind
    (:func:`summarize`: operator, dtypes, XNNPACK or not, count, ms with the default
    delegate and with builtin kernels), then the sum over all operators and over those
    outside XNNPACK."""
    lines = [f"{'operator':<20}{'dtypes':<34}{'XNNPACK':<9}{'count':>6}{'ms':>9}{'builtin ms':>12}"]
    for r in summarize(timings):
        lines.append(
            f"{r['op']:<20}{r['dtypes']:<34}{'yes' if r['xnnpack'] else 'NO':<9}"
            f"{r['count']:>6}{r['ms_default']:>9.3f}{r['ms_builtin']:>12.3f}"
        )
    outside = [t for t in timings if not t.xnnpack]
    lines.append(
        f"sum of {len(timings)} operators alone: {sum(t.ms_default for t in timings):.2f} ms; "
        f"outside XNNPACK: {len(outside)} operators, "
        f"{sum(t.ms_default for t in outside):.2f} ms"
    )
    return lines
