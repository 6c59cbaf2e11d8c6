"""What reduced-size JPEG decoding costs in accuracy and saves in time, at camera sizes.

leukedge decodes a large JPEG at libjpeg's 1/2, 1/4 or 1/8 scale while it stays at least
``DRAFT_SAFETY_FACTOR`` × the model's input (:func:`leukedge.engine.preprocess.decode_size`). This
script measures that rule against full decoding on the Taleqani **validation** blocks (the
test blocks are not read): each 224×224 field is upscaled (bicubic) to camera sizes, saved as
a JPEG, and classified by the model twice, from the full decode and from the reduced one,
both resized whole to the model's input by :func:`leukedge.engine.preprocess.resize_rgb` (the
training resize). Reported per camera size and safety factor: the decoded size, label
agreement with the full decode, mean and max |Δp| (probability of each class), accuracy of
each against the labels, and the median CPU time of decode + resize.

Upscaled fields carry no detail above 224 px, so they are the kind case for DCT scaling;
``--noise SIGMA`` adds Gaussian sensor-like noise (in 0–255 units) at full resolution, which
gives camera-like JPEG sizes and the high frequencies that DCT scaling and the resize filter
treat differently. Rerun::

    python tools/measure_draft.py --data ../shared/data/taleqani --out runs/draft
    python tools/measure_draft.py --data ../shared/data/taleqani --noise 4 --out runs/draft-noise

Writes ``OUT/draft.json`` and ``OUT/draft.md``; JPEGs go to a temporary folder that is
removed at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from leukedge.classifier import default_model_path
from leukedge.engine.interpreter import TFLiteEngine
from leukedge.engine.preprocess import DRAFT_SAFETY_FACTOR, decode_size, load_rgb, resize_rgb
from leukedge.evaluation.data import LABELS, load_taleqani, split_by_blocks


def parse_size(text: str) -> tuple[int, int]:
    """``"2592x1944"`` → ``(2592, 1944)`` (width, height)."""
    width, height = (int(v) for v in text.lower().split("x"))
    return width, height


def measure(
    data: Path,
    sizes: list[tuple[int, int]],
    factors: list[int],
    model: Path,
    quality: int,
    noise: float,
    every: int,
    seed: int = 0,
) -> dict:
    """Run the measurement; returns the JSON-ready report (see the module docstring)."""
    engine = TFLiteEngine(model, num_threads=1)
    samples = split_by_blocks(load_taleqani(data))["val"][::every]
    rng = np.random.default_rng(seed)
    rows = {}
    with tempfile.TemporaryDirectory(prefix="leukedge_draft_") as tmp:
        for width, height in sizes:
            per = {f: {"probs": [], "ms": [], "decoded": set()} for f in ["full", *factors]}
            truth, file_bytes = [], []
            for sample in samples:
                field = Image.open(sample.path).convert("RGB")
                big = np.asarray(field.resize((width, height), Image.Resampling.BICUBIC))
                if noise:
                    big = np.clip(big + rng.normal(0, noise, big.shape), 0, 255).astype(np.uint8)
                path = Path(tmp) / f"{sample.path.stem}.jpg"
                Image.fromarray(big).save(path, quality=quality)
                file_bytes.append(path.stat().st_size)
                truth.append(LABELS.index(sample.label))
                for factor in per:
                    min_size = None if factor == "full" else decode_size(engine.input_size, factor)
                    start = time.thread_time()
                    rgb = load_rgb(path, min_size=min_size)
                    resized = resize_rgb(rgb, engine.input_size)
                    per[factor]["ms"].append(1000 * (time.thread_time() - start))
                    per[factor]["decoded"].add(f"{rgb.shape[1]}x{rgb.shape[0]}")
                    per[factor]["probs"].append(engine.run(resized))
                path.unlink()
            truth = np.array(truth)
            full = np.array(per["full"]["probs"])
            size_rows = {}
            for factor, got in per.items():
                probs = np.array(got["probs"])
                diff = np.abs(probs - full)
                size_rows[str(factor)] = {
                    "decoded": sorted(got["decoded"]),
                    "accuracy": float(np.mean(probs.argmax(1) == truth)),
                    "agreement_with_full": float(np.mean(probs.argmax(1) == full.argmax(1))),
                    "mean_abs_dp": float(diff.mean()),
                    "max_abs_dp": float(diff.max()),
                    "decode_resize_ms_median": statistics.median(got["ms"]),
                }
            rows[f"{width}x{height}"] = {
                "jpeg_mb_median": statistics.median(file_bytes) / 1e6,
                "by_factor": size_rows,
            }
            print(format_size(f"{width}x{height}", rows[f"{width}x{height}"]), flush=True)
    return {
        "what": "reduced-size JPEG decoding vs full decoding, Taleqani validation blocks",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "model": str(model),
        "images": len(samples),
        "every": every,
        "jpeg_quality": quality,
        "noise_sigma": noise,
        "current_factor": DRAFT_SAFETY_FACTOR,
        "cpu": platform.processor() or platform.machine(),
        "load_average": os.getloadavg(),
        "sizes": rows,
    }


def format_size(name: str, row: dict) -> str:
    """One camera size as Markdown table rows."""
    lines = []
    for factor, f in row["by_factor"].items():
        label = "full decode" if factor == "full" else f"factor {factor}"
        lines.append(
            f"| {name} ({row['jpeg_mb_median']:.2f} MB) | {label} | {', '.join(f['decoded'])} | "
            f"{100 * f['agreement_with_full']:.1f} % | {f['mean_abs_dp']:.4f} | "
            f"{f['max_abs_dp']:.4f} | {f['accuracy']:.4f} | {f['decode_resize_ms_median']:.1f} |"
        )
    return "\n".join(lines)


def to_markdown(report: dict) -> str:
    """The report as a Markdown table with its settings."""
    head = (
        f"Draft decoding vs full decoding: {report['images']} Taleqani validation fields "
        f"(every {report['every']}), upscaled bicubic, JPEG quality {report['jpeg_quality']}, "
        f"noise σ {report['noise_sigma']}; model `{Path(report['model']).name}`; "
        f"{report['date']}; load average {', '.join(f'{v:.2f}' for v in report['load_average'])}."
        "\n\n| camera JPEG (median size) | decode | decoded to | agreement with full | "
        "mean \\|Δp\\| | max \\|Δp\\| | accuracy | decode + resize, median CPU ms |\n"
        "|---|---|---|---|---|---|---|---|"
    )
    return "\n".join([head, *(format_size(n, r) for n, r in report["sizes"].items())]) + "\n"


def main() -> None:
    """Command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="Taleqani dataset folder")
    parser.add_argument("--out", type=Path, required=True, help="folder for draft.json/.md")
    parser.add_argument("--model", type=Path, default=default_model_path())
    parser.add_argument(
        "--sizes", nargs="+", type=parse_size, default=[(2592, 1944), (1920, 1080), (4056, 3040)]
    )
    parser.add_argument("--factors", nargs="+", type=int, default=[1, 2, 4])
    parser.add_argument("--quality", type=int, default=92)
    parser.add_argument("--noise", type=float, default=0.0, help="Gaussian σ, 0–255 units")
    parser.add_argument("--every", type=int, default=1, help="use every n-th validation field")
    args = parser.parse_args()
    report = measure(
        args.data, args.sizes, args.factors, args.model, args.quality, args.noise, args.every
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "draft.json").write_text(json.dumps(report, indent=2))
    (args.out / "draft.md").write_text(to_markdown(report))
    print(to_markdown(report))


if __name__ == "__main__":
    main()
