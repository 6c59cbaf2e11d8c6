"""Where int8 would hurt a linear head: its Dense kernel, or the pooled embedding it reads?

The figures behind the README's "Why the head stays float" (model v3). On every fifth
Taleqani field (the cached clean ``std`` front of ``leukedge train crossval``), the shipped
head's p(ALL) is computed in float and with one part rounded as the int8 converter would:

- the Dense kernel per output channel, symmetric int8 (scale = max |w| / 127);
- the pooled embedding as uint8 (scale = its maximum / 255);
- the 7×7 feature map as uint8, then averaged in float (what the converter now does).

Run from the repository root after ``leukedge train final`` (needs the train extra, for
the ``.keras``):

    nice python tools/head_quantization.py --run runs/v3-final

Prints max |Δp| and the calls flipped at p = 0.5 for each, and the kernel's |w| quantiles.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import typer


def _p_all(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    logits = x @ kernel + bias
    return 1.0 / (1.0 + np.exp(-(logits[:, 0] - logits[:, 1])))


def main(
    run: Annotated[Path, typer.Option(help="the train final folder")] = Path("runs/v3-final"),
    data: Annotated[Path, typer.Option()] = Path("../shared/data/taleqani"),
    cache: Annotated[Path, typer.Option()] = Path("runs/feature-cache"),
    every: Annotated[int, typer.Option(min=1, help="every n-th field")] = 5,
) -> None:
    """Print the three roundings' effect on the head's p(ALL)."""
    from leukedge.evaluation.data import load_dataset
    from leukedge.modeling.saving import load_keras_model
    from leukedge.training.features import FeatureCache, FrontConfig, View

    samples = load_dataset(data)[::every]
    maps = FeatureCache(cache, FrontConfig(norm="std", keep="map")).features(samples, View("clean"))
    maps = maps.astype(np.float32)
    pooled = maps.mean(axis=(1, 2))
    kernel, bias = load_keras_model(run / "model.keras").get_layer("predictions").get_weights()
    reference = _p_all(pooled, kernel, bias)
    scale = np.abs(kernel).max(axis=0) / 127
    rounded = {
        "kernel, int8 per channel": _p_all(pooled, np.round(kernel / scale) * scale, bias),
        "pooled embedding, uint8": _p_all(
            np.round(pooled / (pooled.max() / 255)) * (pooled.max() / 255), kernel, bias
        ),
        "feature map, uint8, float mean": _p_all(
            (np.round(maps / (maps.max() / 255)) * (maps.max() / 255)).mean(axis=(1, 2)),
            kernel,
            bias,
        ),
    }
    print(f"{len(samples)} fields; head p(ALL) in float against:")
    for name, p in rounded.items():
        flips = np.mean((p > 0.5) != (reference > 0.5))
        print(
            f"  {name}: max |dp| {np.abs(p - reference).max():.4f}, "
            f"calls flipped {100 * flips:.1f} %"
        )
    quantiles = np.quantile(np.abs(kernel[:, 0]), [0.5, 0.9, 0.99, 1.0])
    print("kernel |w| median, 90 %, 99 %, max: " + ", ".join(f"{q:.2f}" for q in quantiles))


if __name__ == "__main__":
    typer.run(main)
