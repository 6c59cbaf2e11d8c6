"""Runtime measurements behind ``leukedge bench``: commands that write numbers, not tests.

Everything here needs the runtime only (LiteRT, NumPy, Pillow). ``leukedge bench --compare``
(:mod:`leukedge.converters.compare`) adds the other engines on top of these.

Timing on a shared machine: besides wall-clock latency (p50/p90), each call's **CPU time**
is recorded (``time.process_time``: all threads of the process). With one interpreter
thread the computation runs in the calling thread, so its CPU time is what the call would
take on an idle machine even while other jobs preempt it; wall time is what the caller
waited. Both are reported, with the load average.
"""

from __future__ import annotations

import contextlib
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

CPU_FLAGS = (
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_int8",
    "asimddp",  # ARMv8.2 dot product (dotprod)
    "i8mm",
    "asimdhp",
    "sve",
)
"""CPU features that decide which int8/float kernels XNNPACK, ONNX Runtime and OpenVINO
pick, as spelled in ``/proc/cpuinfo`` (x86 ``flags``, ARM ``Features``)."""

PACKAGES = (
    "leukedge",
    "ai-edge-litert",
    "numpy",
    "pillow",
    "opencv-python-headless",
    "tensorflow",
    "keras",
    "onnxruntime",
    "openvino",
    "tf2onnx",
    "onnx",
)
"""Library versions recorded with every measurement (absent ones as ``None``)."""


def cpu_info() -> dict[str, Any]:
    """CPU model, logical cores available to this process, and :data:`CPU_FLAGS` present.

    Returns:
        ``{"model": str, "cores": int, "flags": {flag: bool}, "machine": str}``; on systems
        without ``/proc/cpuinfo`` the flags are empty.
    """
    model, flags = platform.processor() or platform.machine(), set()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and value.strip():
            model = value.strip()
        elif key in ("flags", "features"):
            flags |= set(value.split())
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "model": model,
        "machine": platform.machine(),
        "cores": cores,
        "flags": {f: f in flags for f in CPU_FLAGS} if flags else {},
    }


def versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed versions of ``packages`` (distribution names), ``None`` when absent."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def environment() -> dict[str, Any]:
    """Date, CPU, versions and load average: what every benchmark file records."""
    import datetime as dt

    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_info(),
        "versions": versions(),
        "load_average": list(os.getloadavg()),
        "command": " ".join(sys.argv),
    }


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MB.

    Linux: ``VmHWM`` of ``/proc/self/status``, the peak of this program's own address
    space. Not ``ru_maxrss``: Linux carries that over from the parent across fork and exec,
    so every process started by a TensorFlow process would report TensorFlow's peak.
    Elsewhere ``ru_maxrss``.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def time_calls(call: Callable[[], Any], runs: int, warmup: int = 5) -> dict[str, float]:
    """Latency statistics of ``call()``.

    Args:
        call: what to time (one inference, input already prepared).
        runs: timed calls (≥ 1); ``warmup`` untimed calls first.

    Returns:
        ``p50_ms``, ``p90_ms`` (wall clock), ``cpu_p50_ms`` (CPU time of the process per
        call, all threads), ``images_per_s`` (``runs`` / summed wall time: back-to-back
        batch-1 throughput), ``runs``.
    """
    for _ in range(warmup):
        call()
    wall, cpu = [], []
    for _ in range(runs):
        start, start_cpu = time.perf_counter(), time.process_time()
        call()
        cpu.append(time.process_time() - start_cpu)
        wall.append(time.perf_counter() - start)
    return {
        "p50_ms": 1000 * statistics.median(wall),
        "p90_ms": 1000 * float(np.percentile(wall, 90)),
        "cpu_p50_ms": 1000 * statistics.median(cpu),
        "images_per_s": runs / sum(wall),
        "runs": runs,
    }


def paired_cpu_ratio(
    calls: dict[str, Callable[[], Any]], rounds: int, warmup: int = 5
) -> dict[str, float]:
    """Median CPU time (ms) of each call, measured interleaved (a, b, a, b, …) so that load
    and frequency changes hit all alike; ``time.thread_time`` of the calling thread."""
    for call in calls.values():
        for _ in range(warmup):
            call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            start = time.thread_time()
            call()
            times[name].append(time.thread_time() - start)
    return {name: 1000 * statistics.median(t) for name, t in times.items()}


def camera_jpeg(
    source: str | os.PathLike, path: str | os.PathLike, size=(2592, 1944), noise: float = 4.0
) -> Path:
    """Write a camera-size JPEG made from ``source``: upscaled (bicubic) to ``size``
    ``(width, height)``, Gaussian noise σ=``noise`` (0–255 units, seeded) for a camera-like
    file size, quality 92."""
    from PIL import Image

    big = Image.open(source).convert("RGB").resize(size, Image.Resampling.BICUBIC)
    pixels = np.asarray(big, dtype=np.float32)
    if noise:
        pixels = pixels + np.random.default_rng(0).normal(0, noise, pixels.shape)
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=92)
    return Path(path)


def sdk_measurements(
    model: str | os.PathLike | None,
    image: str | os.PathLike,
    rounds: int = 200,
    cold: int = 5,
    allow_failed_gate: bool = False,
) -> dict[str, Any]:
    """What the SDK adds to a bare ``invoke()``, at one interpreter thread.

    - ``array_224``: :meth:`Classifier.classify` on a ``(224, 224, 3)`` array vs the bare
      ``set_tensor``/``invoke``/``get_tensor`` on the prepared tensor (CPU time, paired).
    - ``camera_jpeg``: ``classify(path)`` of a 2592×1944 JPEG made by :func:`camera_jpeg`
      from ``image`` vs the bare invoke, and the peak RSS of a fresh process classifying it
      once against one classifying the 224×224 array (what the large file costs in memory).
    - ``cold_start_s``: wall time of ``leukedge classify IMAGE`` in a new process (Python
      start, imports, model load, one image), median of ``cold`` runs after one untimed run.

    Args:
        model: ``.tflite`` path; ``None`` = the embedded default model.
        image: an image file to classify (the camera JPEG is made from it).
        rounds: paired calls per comparison.
        cold: cold-start runs.
        allow_failed_gate: measure a model that failed its accuracy gate
            (:attr:`~leukedge.classifier.ClassifierOptions.allow_failed_gate`).
    """
    from leukedge.classifier import Classifier, ClassifierOptions
    from leukedge.engine.preprocess import load_and_resize

    classifier = Classifier(
        ClassifierOptions(
            model_path=model,
            num_threads=1,
            max_interpreters=1,
            allow_failed_gate=allow_failed_gate,
        )
    )
    engine = classifier._engine
    rgb = load_and_resize(image, engine.input_size)
    tensor = engine._quantize_input(rgb)[None]
    interpreter = engine._interpreter
    index_in, index_out = engine._input["index"], engine._output["index"]

    def bare() -> None:
        interpreter.set_tensor(index_in, tensor)
        interpreter.invoke()
        interpreter.get_tensor(index_out)

    out: dict[str, Any] = {"model": str(model or "embedded"), "threads": 1}
    cpu = paired_cpu_ratio({"bare": bare, "sdk": lambda: classifier.classify(rgb)}, rounds)
    out["array_224"] = {"bare_cpu_ms": cpu["bare"], "sdk_cpu_ms": cpu["sdk"]}
    out["array_224"]["ratio"] = cpu["sdk"] / cpu["bare"]
    with tempfile.TemporaryDirectory(prefix="leukedge_bench_") as tmp:
        jpeg = camera_jpeg(image, Path(tmp) / "camera_2592x1944.jpg")
        cpu = paired_cpu_ratio(
            {"bare": bare, "sdk": lambda: classifier.classify(jpeg)}, max(rounds // 4, 5)
        )
        out["camera_jpeg"] = {
            "size": "2592x1944",
            "file_mb": jpeg.stat().st_size / 1e6,
            "bare_cpu_ms": cpu["bare"],
            "sdk_cpu_ms": cpu["sdk"],
            "ratio": cpu["sdk"] / cpu["bare"],
            "peak_rss_mb": _peak_rss_of_classify(model, jpeg, allow_failed_gate),
            "peak_rss_mb_array_224": _peak_rss_of_classify(model, None, allow_failed_gate),
        }
        out["cold_start_s"] = cold_start(model, image, cold, allow_failed_gate)
    return out


@contextlib.contextmanager
def example_image() -> Iterator[Path]:
    """An image to measure with: ``examples/images/WBC-Benign-420.jpg`` of a source
    checkout, else a synthetic 224×224 field (smooth noise) in a temporary folder."""
    example = Path(__file__).resolve().parents[2] / "examples" / "images" / "WBC-Benign-420.jpg"
    if example.is_file():
        yield example
        return
    from PIL import Image

    with tempfile.TemporaryDirectory(prefix="leukedge_bench_") as tmp:
        noise = np.random.default_rng(0).integers(0, 256, (28, 28, 3), dtype=np.uint8)
        path = Path(tmp) / "field.jpg"
        Image.fromarray(noise).resize((224, 224), Image.Resampling.BICUBIC).save(path)
        yield path


def _peak_rss_of_classify(model, image, allow_failed_gate: bool = False) -> float:
    """Peak RSS (MB) of a fresh process that classifies ``image`` once (``None``: a 224×224
    array)."""
    code = (
        "import sys, numpy as np\n"
        "from leukedge.classifier import Classifier, ClassifierOptions\n"
        "from leukedge.bench.measure import peak_rss_mb\n"
        "c = Classifier(ClassifierOptions(model_path=sys.argv[1] or None, num_threads=1,\n"
        "    allow_failed_gate=sys.argv[3] == '1'))\n"
        "x = sys.argv[2] or np.zeros((224, 224, 3), np.uint8)\n"
        "c.classify(x)\n"
        "print(peak_rss_mb())\n"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            str(model or ""),
            str(image or ""),
            str(int(allow_failed_gate)),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(result.stdout.strip().splitlines()[-1])


def cold_start(model, image, runs: int = 5, allow_failed_gate: bool = False) -> dict[str, float]:
    """Seconds of ``leukedge classify IMAGE [--model MODEL]`` in a fresh process, after one
    untimed run (which fills the file cache).

    Returns:
        ``median`` and ``min`` wall seconds of ``runs``, and ``cpu_median``: the child's
        user + system CPU seconds, what the start costs whoever else runs.
    """
    command = [sys.executable, "-m", "leukedge.cli", "classify", str(image)]
    if model:
        command += ["--model", str(model)]
    if allow_failed_gate:
        command.append("--allow-failed-gate")
    wall, cpu = [], []
    for i in range(runs + 1):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(command, capture_output=True, check=True)
        elapsed = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if i:
            wall.append(elapsed)
            cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return {
        "median": statistics.median(wall),
        "min": min(wall),
        "cpu_median": statistics.median(cpu),
        "runs": runs,
    }


def print_report(results: dict[str, Any], stream: Any = None) -> None:
    """``leukedge bench``'s results as a person reads them: the model and machine, a table
    of latency per thread count (median and p90 wall time, median CPU time, ms) and, with
    ``--sdk``, the SDK's costs; ``--json`` prints ``results`` as they are.

    Args:
        results: what ``leukedge bench`` measured: ``path``, ``size_bytes``,
            ``latency_ms`` ``{threads: {median, p90, cpu_median}}``, optional ``sdk``
            (:func:`sdk_measurements`) and ``environment`` (:func:`environment`).
        stream: where to print (default standard output).
    """
    from rich.console import Console
    from rich.table import Table

    console = Console(file=stream or sys.stdout, width=100)
    env = results.get("environment") or {}
    cpu = env.get("cpu") or {}
    flags = " ".join(name for name, on in (cpu.get("flags") or {}).items() if on)
    litert = (env.get("versions") or {}).get("ai-edge-litert")
    load = env.get("load_average")
    console.print(
        f"{results['path']} ({results['size_bytes'] / 1e6:.2f} MB)", highlight=False, soft_wrap=True
    )
    console.print(
        f"{cpu.get('model', '?')} {cpu.get('machine', '')}, {cpu.get('cores', '?')} cores"
        + (f" ({flags})" if flags else "")
        + (f", LiteRT {litert}" if litert else "")
        + (f", load average {load[0]:.1f}" if load else ""),
        highlight=False,
        soft_wrap=True,
    )
    table = Table(title="latency per image (ms)")
    table.add_column("threads", justify="right")
    for column in ("median", "p90", "CPU median"):
        table.add_column(column, justify="right")
    for threads, figures in results["latency_ms"].items():
        table.add_row(
            str(threads),
            f"{figures['median']:.2f}",
            f"{figures['p90']:.2f}",
            f"{figures['cpu_median']:.2f}",
        )
    console.print(table)
    sdk = results.get("sdk")
    if sdk:
        array, jpeg, cold = sdk["array_224"], sdk["camera_jpeg"], sdk["cold_start_s"]
        for line in (
            f"SDK at {sdk['threads']} thread, CPU time per image:",
            f"  224x224 array: {array['sdk_cpu_ms']:.1f} ms vs bare invoke "
            f"{array['bare_cpu_ms']:.1f} ms (x{array['ratio']:.2f})",
            f"  {jpeg['size']} camera JPEG ({jpeg['file_mb']:.2f} MB): {jpeg['sdk_cpu_ms']:.1f} ms"
            f" vs bare invoke {jpeg['bare_cpu_ms']:.1f} ms (x{jpeg['ratio']:.2f}); peak RSS "
            f"{jpeg['peak_rss_mb']:.0f} MB",
            f"  cold start of `leukedge classify one.jpg`: median {cold['median']:.2f} s "
            f"(CPU {cold['cpu_median']:.2f} s, {cold['runs']} runs)",
        ):
            console.print(line, highlight=False, soft_wrap=True)
    console.print(
        "(--json: every figure and the environment, as JSON; --out FILE writes them)",
        highlight=False,
        soft_wrap=True,
    )
