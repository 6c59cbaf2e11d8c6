"""Red-cell size (magnification) on the real data, and the reasons outside sets are refused.

For every image of the Taleqani fields (by class), BCCD fields, wbc-normal crops and C-NMC
cells (and the Taleqani fields re-saved as JPEG at quality 75): decode, resize to the
model's input as the runtime does, and measure the red-cell diameter
(:func:`leukedge.checks.scale.estimate_red_cell_diameter`) and the black surround
(:func:`leukedge.checks.scale.black_background`). The red-cell range is fitted on the Taleqani
fields (:func:`leukedge.checks.scale.fit_diameter_range`: by default all of them, as the shipped
model trains on all; ``--fit-on train`` for the train block), and written with the
segmented-cell threshold into a **copy** of the model
(:func:`leukedge.engine.metadata.add_scale_checks`, no TensorFlow); each set is then
classified with the original and with the copy and the refusal reasons are counted. A
forward check fits the range on the earlier 80 % of each class's file numbers and counts
``scale`` on the later 20 %.

Run from the repository root (no TensorFlow; about 10 minutes on one shared core):

    nice .venv/bin/python tools/scale_study.py --data ../shared/data --out runs/scale-study

Writes ``scale_study.md`` (the tables), ``scale_study.json`` and
``model_with_scale.tflite`` (the copy) under ``--out``.
"""

from __future__ import annotations

import io
import json
import time
from collections import Counter
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from PIL import Image

from leukedge.checks.quality import image_statistics
from leukedge.checks.scale import (
    DEFAULT_RANGE_MARGIN,
    DEFAULT_RANGE_QUANTILE,
    estimate_red_cell_diameter,
    fit_diameter_range,
)
from leukedge.classifier import Classifier, default_model_path
from leukedge.engine.metadata import add_scale_checks, read_metadata
from leukedge.engine.preprocess import load_rgb, resize_rgb
from leukedge.evaluation.data import file_number, load_taleqani, split_by_blocks

IMAGE_SUFFIXES = {".bmp", ".jpg", ".jpeg", ".png"}
SEGMENTED_MARGIN = 0.5
"""``black_background_max`` = Taleqani's 99.9 % quantile + this × (1 − it), as
:func:`leukedge.checks.quality.derive_thresholds` does with its default margin."""


def _images(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and "masks" not in p.parts
    )


def _jpeg(path: Path, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    Image.open(path).convert("RGB").save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    return Image.open(buffer)


def _percentiles(values: list[float | None]) -> dict[str, float | int]:
    found = np.array([v for v in values if v is not None], dtype=np.float64)
    out: dict[str, float | int] = {"n": len(values), "none": len(values) - found.size}
    if found.size:
        for q in (1, 5, 50, 95, 99):
            out[f"p{q}"] = round(float(np.percentile(found, q)), 1)
    return out


def main(
    data: Annotated[Path, typer.Option(help="the shared data folder")] = Path("../shared/data"),
    out: Annotated[Path, typer.Option(help="output folder (created)")] = Path("runs/scale-study"),
    model: Annotated[Path, typer.Option(help="model to copy")] = default_model_path(),
    fit_on: Annotated[str, typer.Option(help="'all' Taleqani fields or the 'train' block")] = "all",
    quantile: Annotated[float, typer.Option()] = DEFAULT_RANGE_QUANTILE,
    margin: Annotated[float, typer.Option()] = DEFAULT_RANGE_MARGIN,
    jpeg_quality: Annotated[int, typer.Option()] = 75,
) -> None:
    """Measure, fit, write the model copy, classify and write the tables."""
    out.mkdir(parents=True, exist_ok=True)
    metadata = read_metadata(model.read_bytes())
    size = (metadata.input.height, metadata.input.width)
    taleqani = load_taleqani(data / "taleqani")
    sets: dict[str, list] = {}
    for cls in ("Benign", "Early", "Pre", "Pro"):
        sets[f"taleqani/{cls}"] = [s.path for s in taleqani if s.group == cls]
    sets["bccd"] = _images(data / "bccd" / "JPEGImages")
    sets["wbc-normal"] = _images(data / "wbc-normal")
    sets["cnmc"] = _images(data / "cnmc")
    sets[f"taleqani JPEG {jpeg_quality}"] = [("jpeg", s.path) for s in taleqani]

    def load(item):
        return _jpeg(item[1], jpeg_quality) if isinstance(item, tuple) else item

    stats: dict[str, list] = {}
    started = time.perf_counter()
    for name, items in sets.items():
        stats[name] = []
        for item in items:
            rgb = load_rgb(load(item))
            stats[name].append(image_statistics(resize_rgb(rgb, size), rgb.shape[:2]))
        typer.echo(f"{name}: {len(items)} images measured", err=True)
    measure_s = time.perf_counter() - started

    by_path = {
        str(p): s
        for n in sets
        if n.startswith("taleqani/")
        for p, s in zip(sets[n], stats[n], strict=True)
    }
    fit_paths = (
        [s.path for s in split_by_blocks(taleqani)["train"]] if fit_on == "train" else by_path
    )
    fit_stats = [by_path[str(p)] for p in fit_paths]
    diameter_range = fit_diameter_range(
        [s.red_cell_diameter for s in fit_stats], quantile=quantile, margin=margin
    )
    black = float(np.quantile([s.black_background_fraction for s in fit_stats], 0.999))
    black_max = black + SEGMENTED_MARGIN * (1.0 - black)
    copy = out / "model_with_scale.tflite"
    copy.write_bytes(
        add_scale_checks(
            model.read_bytes(),
            diameter_range,
            black_max,
            source=f"tools/scale_study.py, Taleqani {fit_on}, n={len(fit_stats)}",
        )
    )

    # Forward: the range from the earlier 80 % of each class's file numbers, scored on the rest.
    forward_hits = forward_n = 0
    for cls in ("Benign", "Early", "Pre", "Pro"):
        paths = sorted(sets[f"taleqani/{cls}"], key=file_number)
        cut = int(0.8 * len(paths))
        earlier = [by_path[str(p)].red_cell_diameter for p in paths[:cut]]
        later = [by_path[str(p)].red_cell_diameter for p in paths[cut:]]
        low, high = fit_diameter_range(earlier, quantile=quantile, margin=margin)
        forward_hits += sum(d is not None and not low <= d <= high for d in later)
        forward_n += len(later)

    reasons: dict[str, dict[str, dict[str, int]]] = {}
    per_image: dict[str, dict[str, list[str]]] = {}
    for label, path in (("original", model), ("with range", copy)):
        classifier = Classifier.create_from_model_path(path)
        for name, items in sets.items():
            got = [classifier.classify(load(item)) for item in items]
            per_image.setdefault(name, {})[label] = [r.reason or r.status for r in got]
            counts = Counter(per_image[name][label])
            reasons.setdefault(name, {})[label] = dict(counts.most_common())
        typer.echo(f"classified with the {label} model", err=True)
    # Fields that got a call or a referral before and are refused as `scale` now.
    newly_scale = {
        name: sum(
            before in ("ok", "uncertain") and after == "scale"
            for before, after in zip(v["original"], v["with range"], strict=True)
        )
        for name, v in per_image.items()
    }

    # Cost of the estimate alone, median of 30 runs, on one field at 224² and at 640×480.
    def cost_ms(rgb: np.ndarray) -> float:
        times = []
        for _ in range(30):
            start = time.perf_counter()
            estimate_red_cell_diameter(rgb)
            times.append(time.perf_counter() - start)
        return round(1000 * float(np.median(times)), 2)

    bccd_field = load_rgb(sets["bccd"][0])
    cost = {
        "224x224": cost_ms(resize_rgb(load_rgb(sets["taleqani/Benign"][0]), (224, 224))),
        f"{bccd_field.shape[1]}x{bccd_field.shape[0]}": cost_ms(bccd_field),
    }

    figures = {
        "model": str(model),
        "input_size": list(size),
        "fit_on": fit_on,
        "quantile": quantile,
        "margin": margin,
        "red_cell_diameter_range": diameter_range,
        "black_background_max": black_max,
        "measure_ms_per_image": round(1000 * measure_s / sum(map(len, sets.values())), 2),
        "estimate_ms": cost,
        "newly_scale": newly_scale,
        "forward_taleqani_scale": [forward_hits, forward_n],
        "diameter": {n: _percentiles([s.red_cell_diameter for s in v]) for n, v in stats.items()},
        "black_background_fraction": {
            n: _percentiles([s.black_background_fraction for s in v]) for n, v in stats.items()
        },
        "reasons": reasons,
    }
    (out / "scale_study.json").write_text(json.dumps(figures, indent=2) + "\n")
    low, high = diameter_range
    lines = [
        f"Red-cell diameter in pixels of the model's {size[1]}×{size[0]} input; range fitted "
        f"on Taleqani {fit_on} (n={len(fit_stats)}): {low:.1f}–{high:.1f} px "
        f"({100 * quantile:g} / {100 - 100 * quantile:g} % quantiles ÷/× {1 + margin:g}); "
        f"segmented cell above {black_max:.2f} black surround.",
        "",
        "| set | n | no estimate | p1 | p5 | median | p95 | p99 | reasons, embedded model "
        "| reasons, with the range | newly `scale` |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, d in figures["diameter"].items():
        cells = [d.get(k, "—") for k in ("p1", "p5", "p50", "p95", "p99")]

        def fmt(counts: dict[str, int], n: int = d["n"]) -> str:
            return ", ".join(f"{k} {100 * v / n:.1f} %" for k, v in counts.items())

        lines.append(
            f"| {name} | {d['n']} | {d['none']} | "
            + " | ".join(map(str, cells))
            + f" | {fmt(reasons[name]['original'])} | {fmt(reasons[name]['with range'])} "
            + f"| {newly_scale[name]} ({100 * newly_scale[name] / d['n']:.1f} %) |"
        )
    lines += [
        "",
        f"Forward (range from the earlier 80 % of each Taleqani class, scored on the later "
        f'20 %): {forward_hits} of {forward_n} fields `scale`. "Newly `scale`": fields '
        "that the embedded model called (`ok`) or referred and the copy refuses as `scale`.",
        "",
        "Cost of `estimate_red_cell_diameter` alone (median of 30, one core, this machine): "
        + ", ".join(f"{k}: {v} ms" for k, v in cost.items())
        + f"; all statistics with decoding, per image of the study: "
        f"{figures['measure_ms_per_image']} ms.",
    ]
    (out / "scale_study.md").write_text("\n".join(lines) + "\n")
    typer.echo("\n".join(lines))


if __name__ == "__main__":
    typer.run(main)
