"""One inference engine in its own process, for ``leukedge bench --compare``.

:mod:`leukedge.converters.compare` runs ``python -m leukedge.converters.engines TASK.json``
once per engine and thread count, so each process loads exactly one engine: its peak RSS is
that engine's, thread settings that must precede initialisation (TensorFlow's) take effect,
and one engine's thread pool cannot slow the next. Only the engine's own package is
imported (no TensorFlow for LiteRT, ONNX Runtime or OpenVINO).

Every engine is called the same way: a ``(1, H, W, 3)`` tensor already in the engine's input
dtype (prepared outside the timing) in, the model's ``(1, n_classes)`` probabilities out as a
NumPy array (read back inside the timing).

Task JSON keys: ``engine`` (a key of :data:`LOADERS`), ``artifact`` (model file), ``threads``,
``runs``, ``warmup``, ``image`` (``.npy``, one ``(H, W, 3)`` uint8 image), ``val`` (``.npy``
``(n, H, W, 3)`` uint8, or ``null``: no accuracy pass), ``result`` (JSON path to write).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable

import numpy as np

Runner = Callable[[np.ndarray], np.ndarray]
"""``(1, H, W, 3)`` prepared input → ``(1, n_classes)`` probabilities."""


def _keras(artifact: str, threads: int, compiled: bool) -> tuple[Runner, Callable]:
    os.environ["KERAS_BACKEND"] = "tensorflow"
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)

    from leukedge.modeling.saving import load_keras_model  # registers leukedge's layers

    model = load_keras_model(artifact)
    if compiled:
        # A traced graph (tf.function); XLA (jit_compile=True) was measured 10x slower on
        # this model on CPU, so it is not used.
        graph = tf.function(lambda x: model(x, training=False), reduce_retracing=True)

        def run(x: np.ndarray) -> np.ndarray:
            return graph(x).numpy()
    else:

        def run(x: np.ndarray) -> np.ndarray:
            return model.predict(x, verbose=0)

    def prepare(rgb: np.ndarray) -> np.ndarray:
        return rgb.astype(np.float32)

    return run, prepare


def _litert(artifact: str, threads: int) -> tuple[Runner, Callable]:
    from leukedge.engine.interpreter import TFLiteEngine

    engine = TFLiteEngine(artifact, num_threads=threads)
    interpreter = engine._interpreter
    index_in, index_out = engine._input["index"], engine._output["index"]

    def run(x: np.ndarray) -> np.ndarray:
        interpreter.set_tensor(index_in, x)
        interpreter.invoke()
        return engine._dequantize_output(interpreter.get_tensor(index_out))

    return run, lambda rgb: engine._quantize_input(rgb)


def _onnxruntime(artifact: str, threads: int) -> tuple[Runner, Callable]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(artifact, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(x: np.ndarray) -> np.ndarray:
        return session.run(None, {name: x})[0]

    return run, lambda rgb: rgb.astype(np.float32)


def _openvino(artifact: str, threads: int) -> tuple[Runner, Callable]:
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(
        artifact,
        "CPU",
        {
            "INFERENCE_NUM_THREADS": threads,
            "NUM_STREAMS": 1,
            "PERFORMANCE_HINT": "LATENCY",
            # float32 as named: on CPUs with AVX512_BF16 or AMX the plugin would otherwise
            # run in bfloat16 by default.
            "INFERENCE_PRECISION_HINT": "f32",
        },
    )
    request = compiled.create_infer_request()

    def run(x: np.ndarray) -> np.ndarray:
        return np.array(request.infer({0: x})[0])

    return run, lambda rgb: rgb.astype(np.float32)


LOADERS: dict[str, Callable[[str, int], tuple[Runner, Callable]]] = {
    "keras": lambda a, t: _keras(a, t, compiled=False),
    "keras-compiled": lambda a, t: _keras(a, t, compiled=True),
    "litert": _litert,
    "onnxruntime": _onnxruntime,
    "openvino": _openvino,
}
"""Runtime kind → loader ``(artifact, threads) → (run, prepare)``; ``prepare`` turns a
``(1, H, W, 3)`` uint8 image into the engine's input tensor."""


def run_task(task: dict) -> dict:
    """Load one engine, time it, record its peak RSS, then (if asked) run the validation
    images; returns the result dictionary (see the module docstring)."""
    from leukedge.bench.measure import peak_rss_mb, time_calls

    start = time.perf_counter()
    run, prepare = LOADERS[task["engine"]](task["artifact"], int(task["threads"]))
    load_s = time.perf_counter() - start
    x = prepare(np.load(task["image"])[None])
    result = {"load_s": load_s, **time_calls(lambda: run(x), task["runs"], task["warmup"])}
    result["peak_rss_mb"] = peak_rss_mb()  # before the validation images are read
    if task.get("val"):
        images = np.load(task["val"], mmap_mode="r")
        result["probabilities"] = [
            np.asarray(run(prepare(np.asarray(images[i : i + 1]))), dtype=np.float64)[0].tolist()
            for i in range(len(images))
        ]
    return result


def main(argv: list[str] | None = None) -> None:
    """``python -m leukedge.converters.engines TASK.json``: run the task, write its result."""
    with open((argv or sys.argv[1:])[0]) as handle:
        task = json.load(handle)
    result = run_task(task)
    with open(task["result"], "w") as handle:
        json.dump(result, handle)


if __name__ == "__main__":
    main()
