"""``leukedge bench``: latency per thread count, the SDK's own costs (``--sdk``), a
per-operator profile (``--profile-ops``) and the engines side by side (``--compare``). The
measurements and their report are :mod:`leukedge.bench`; this module holds the options."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from leukedge.cli.common import AllowFailedGateOption, usage_error


def bench(
    model: Annotated[
        Path | None, typer.Argument(help="A .tflite model; default: the embedded model.")
    ] = None,
    threads: Annotated[
        list[int], typer.Option("--threads", help="Thread counts to measure (repeatable).")
    ] = [1, 2],  # noqa: B006
    runs: Annotated[int, typer.Option(min=1, help="Timed runs per setting.")] = 50,
    sdk: Annotated[
        bool,
        typer.Option(
            "--sdk",
            help="Also measure the SDK at 1 thread: classify() on a 224x224 array and on a "
            "2592x1944 camera JPEG against a bare invoke, peak RSS, and the cold start of "
            "`leukedge classify one.jpg`.",
        ),
    ] = False,
    profile_ops: Annotated[
        bool,
        typer.Option(
            "--profile-ops",
            help="Per-operator latency of MODEL, with and without XNNPACK, and which "
            "operators XNNPACK leaves to LiteRT's builtin kernels.",
        ),
    ] = False,
    compare: Annotated[
        Path | None,
        typer.Option(
            "--compare",
            help="A trained .keras: compare Keras, LiteRT, ONNX Runtime and OpenVINO on it "
            "(speed, memory and validation accuracy); needs the 'train' extra, and the "
            "'compare' extra for ONNX Runtime and OpenVINO.",
        ),
    ] = None,
    split_file: Annotated[
        Path | None,
        typer.Option(help="--compare: the run's split.csv (default: beside the .keras)."),
    ] = None,
    engine: Annotated[
        list[str] | None,
        typer.Option("--engine", help="--compare: engines to run (repeatable; default all)."),
    ] = None,
    max_val: Annotated[
        int | None, typer.Option(min=1, help="--compare: at most this many validation images.")
    ] = None,
    calibration_size: Annotated[
        int, typer.Option(min=1, help="--compare: int8 calibration images (train split).")
    ] = 200,
    reuse_models: Annotated[
        bool,
        typer.Option(help="--compare: reuse model files of an earlier run of the same .keras."),
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Write the results here: a JSON file, or with --compare a folder "
            "(default bench-compare/)."
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the figures as JSON instead of a table.")
    ] = False,
    allow_failed_gate: AllowFailedGateOption = False,
) -> None:
    """Latency of a .tflite per thread count (median and p90, ms): a benchmark, not a test.

    --sdk adds the SDK's own costs, --profile-ops a per-operator profile, and
    --compare RUN/model.keras the side-by-side comparison of engines.
    """
    if any(n < 1 for n in threads):
        typer.echo(f"error: --threads must be >= 1, got {threads}", err=True)
        raise typer.Exit(2)
    _check_bench_out(out, folder=compare is not None)
    if compare is not None:
        _bench_compare(
            compare, split_file, engine, threads, runs, max_val, calibration_size, reuse_models, out
        )
        return
    import numpy as np

    from leukedge.classifier import default_model_path
    from leukedge.engine.interpreter import TFLiteEngine
    from leukedge.engine.metadata import check_gate, read_metadata
    from leukedge.errors import LeukedgeError

    path = model or default_model_path()
    try:
        engines = {n: TFLiteEngine(path, num_threads=n) for n in threads}
        first = next(iter(engines.values()))
        allowed = check_gate(read_metadata(first.model_content), first.origin, allow_failed_gate)
    except (LeukedgeError, OSError, ValueError, RuntimeError) as exc:
        typer.echo(f"error: cannot load model: {exc}", err=True)
        raise typer.Exit(2) from exc
    if allowed is not None:
        typer.echo(f"warning: {allowed}", err=True)
    rng = np.random.default_rng(0)
    if profile_ops:
        _bench_profile_ops(engines[min(threads)], rng, out)
        return
    from leukedge.bench.measure import environment, time_calls

    results = {"path": str(path), "size_bytes": path.stat().st_size, "latency_ms": {}}
    for n, engine in engines.items():
        image = rng.integers(0, 256, (*engine.input_size, 3), dtype=np.uint8)
        stats = time_calls(lambda engine=engine, image=image: engine.run(image), runs)
        results["latency_ms"][n] = {
            "median": stats["p50_ms"],
            "p90": stats["p90_ms"],
            "cpu_median": stats["cpu_p50_ms"],
        }
    if sdk:
        from leukedge.bench.measure import example_image, sdk_measurements

        with example_image() as image:
            results["sdk"] = sdk_measurements(model, image, allow_failed_gate=allow_failed_gate)
    results["environment"] = environment()
    text = json.dumps(results, indent=2)
    if out is not None:
        out.write_text(text)
    if as_json:
        typer.echo(text)
    else:
        from leukedge.bench.measure import print_report

        print_report(results)


def _check_bench_out(out: Path | None, folder: bool) -> None:
    """``--out`` (a file, or with ``--compare`` a folder) checked before measuring."""
    from leukedge.lab.inputs import check_output_folder, check_output_paths

    try:
        if folder:
            check_output_folder("--out", out)
        else:
            check_output_paths({"--out": out})
    except ValueError as exc:
        usage_error(str(exc))


def _bench_profile_ops(engine, rng, out: Path | None) -> None:
    import numpy as np

    from leukedge.bench.op_profile import as_dicts, profile_ops, table_lines

    image = rng.integers(0, 256, (*engine.input_size, 3), dtype=np.uint8)
    timings = profile_ops(engine.model_content, image, threads=engine.num_threads or 1)
    for line in table_lines(timings):
        typer.echo(line)
    if out is not None:
        out.write_text(json.dumps({"operators": as_dicts(timings)}, indent=1))


def _bench_compare(
    keras_model, split_file, engines, threads, runs, max_val, calibration_size, reuse, out
) -> None:
    from leukedge.cli_kit.groups import attach_log_handler

    try:
        from leukedge.converters.compare import CompareConfig, run_compare
    except ModuleNotFoundError as exc:  # pragma: no cover - depends on the install
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    attach_log_handler()  # run_compare reports its progress through logging
    config = CompareConfig(
        model=str(keras_model),
        out=str(out or "bench-compare"),
        split_file=str(split_file) if split_file else None,
        engines=engines or None,
        threads=threads,
        runs=runs,
        max_val=max_val,
        calibration_size=calibration_size,
        reuse_models=reuse,
    )
    try:
        run_compare(config)
    except ModuleNotFoundError as exc:
        if exc.name in ("tensorflow", "keras", "sklearn", "matplotlib"):
            from leukedge.errors import install_hint

            typer.echo(
                f"error: leukedge bench --compare needs the 'train' extra ({exc.name} is not "
                f"installed): {install_hint('train')}",
                err=True,
            )
            raise typer.Exit(2) from exc
        raise
    except (FileNotFoundError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"wrote {config.out}/compare.md, compare.json, latency_vs_accuracy.png")
