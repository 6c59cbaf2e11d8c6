"""int8 invoke latency of several ``.tflite`` models side by side, in one run on one CPU.

Issue 18 asks that model v3's int8 invoke be measured against v1's and v2's "side by side
in one run on the same CPU", and that its in-graph preprocessing be ≤ 10 % of the invoke.
This script:

- loads every model with the SDK's engine (LiteRT, XNNPACK, **1 thread**, as
  ``leukedge bench`` does), feeds each the same 224×224 field, and times ``invoke`` by the
  calling thread's CPU time, **interleaved** (v1, v2, v3, v1, …: load and clock changes hit
  all alike; :func:`leukedge.bench.measure.paired_cpu_ratio`), median over ``--rounds``;
- times every operator alone (:func:`leukedge.bench.op_profile.profile_ops`) and sums the ones
  of the in-graph input normalisation (the ``input_blur`` / ``input_standardize`` layers
  and the blur's ``MIRROR_PAD``): their share of the summed operator times is the
  preprocessing share.

Run from the repository root (no TensorFlow; v1 is in git history):

    git show 3710aed:sdk/leukedge/models/leukedge_default_int8.tflite > runs/latency/v1_int8.tflite
    git show 9f5a5b7:sdk/leukedge/models/leukedge_default_int8.tflite > runs/latency/v2_int8.tflite
    nice python tools/latency_side_by_side.py v1=runs/latency/v1_int8.tflite \\
        v2=runs/latency/v2_int8.tflite v3=sdk/leukedge/models/leukedge_default_int8.tflite \\
        --out runs/latency/side_by_side.json

Prints a Markdown table and writes the figures (with the CPU and package versions) as JSON.
A benchmark, not a test: the figures belong to the CPU and load of the run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from leukedge.bench.measure import environment, paired_cpu_ratio
from leukedge.bench.op_profile import profile_ops
from leukedge.engine.interpreter import TFLiteEngine
from leukedge.engine.preprocess import load_and_resize

NORM_MARKERS = ("input_blur", "input_standardize", "MIRROR_PAD")
"""An operator belongs to the in-graph input normalisation when its output tensor's name
(or its op) carries one of these."""

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "images" / "WBC-Malignant-Pre-810.jpg"


def main(
    models: Annotated[list[str], typer.Argument(help="NAME=PATH of each .tflite")],
    rounds: Annotated[int, typer.Option(min=10, help="interleaved timed invokes per model")] = 400,
    profile_runs: Annotated[int, typer.Option(min=3, help="timed runs per operator")] = 30,
    out: Annotated[Path | None, typer.Option(help="write the figures here (JSON)")] = None,
) -> None:
    """Time the models' int8 invokes side by side and print the table."""
    named = {}
    for item in models:
        name, sep, path = item.partition("=")
        if not sep or not Path(path).is_file():
            raise typer.BadParameter(f"{item!r}: give NAME=PATH of an existing .tflite")
        named[name] = Path(path)
    engines = {name: TFLiteEngine(path.read_bytes(), num_threads=1) for name, path in named.items()}
    image = load_and_resize(EXAMPLE, (224, 224))
    calls = {}
    for name, engine in engines.items():
        engine.run(image)  # sets the input; the timed call is the invoke alone
        calls[name] = engine._interpreter.invoke  # the bare invoke, no SDK step
    invoke_ms = paired_cpu_ratio(calls, rounds)
    rows = {}
    for name, path in named.items():
        timings = profile_ops(path.read_bytes(), image, threads=1, runs=profile_runs)
        total = sum(t.ms_default for t in timings if np.isfinite(t.ms_default))
        norm = sum(
            t.ms_default
            for t in timings
            if np.isfinite(t.ms_default) and any(m in t.output or m == t.op for m in NORM_MARKERS)
        )
        rows[name] = {
            "file": str(path),
            "size_mb": round(path.stat().st_size / 1e6, 2),
            "invoke_cpu_ms": round(invoke_ms[name], 3),
            "ops_sum_ms": round(total, 3),
            "input_norm_ms": round(norm, 3),
            "input_norm_share": round(norm / total, 3) if total else None,
        }
    print(
        "| model | file MB | int8 invoke, 1 thread, CPU ms (median, interleaved) | "
        "input normalisation, ms (share of the summed operators) |"
    )
    print("|---|---|---|---|")
    for name, r in rows.items():
        print(
            f"| {name} | {r['size_mb']} | {r['invoke_cpu_ms']:.2f} | "
            f"{r['input_norm_ms']:.2f} ({100 * (r['input_norm_share'] or 0):.0f} %) |"
        )
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(
            json.dumps({"environment": environment(), "rounds": rounds, "models": rows}, indent=2)
        )
        print(f"wrote {out}")


if __name__ == "__main__":
    typer.run(main)
