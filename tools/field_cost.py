"""Cost of a cell model on a field: ``Classifier.classify_field`` on BCCD fields.

The cell model is the tiny one ``tests/test_cell_on_field.py`` writes without TensorFlow
(mean colour → one Dense layer → softmax, with quality thresholds from its own crops), so
the figures are the SDK's own cost (locating, masks, crops, one invoke per cell), not a real
cell model's. The red-cell size of BCCD at its own resolution is given (77 px, measured by
``tools/locate_study.py``), so the locator does not estimate it.

Run from the repository root (no TensorFlow; about a minute):

    nice python tools/field_cost.py --data ../shared/data/bccd/JPEGImages --fields 40

Prints the median and 90th percentile of the CPU time per field, with and without the
cells' masks (GrabCut), and the cells found per field.
"""

from __future__ import annotations

import importlib.util
import statistics
import sys
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from leukedge import Classifier, ClassifierOptions
from leukedge.cells.field import FieldOptions
from leukedge.cells.locate import LocateOptions
from leukedge.engine.preprocess import load_rgb

REPO = Path(__file__).resolve().parents[1]


def _test_model() -> bytes:
    """The cell model of ``tests/test_cell_on_field.py`` (its ``model_bytes`` fixture)."""
    sys.path.insert(0, str(REPO / "tests"))
    spec = importlib.util.spec_from_file_location(
        "cell_tests", REPO / "tests" / "test_cell_on_field.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from leukedge.cells.locate import cell_crop, locate_cells
    from leukedge.checks.quality import derive_thresholds, image_statistics

    field, _ = module.drawn_field(module.MIXED, seed=7)  # as the fixture makes it
    crops = [cell_crop(field, c, module.SIDE) for c in locate_cells(field)]
    stats = [image_statistics(c) for c in crops]
    return module.cell_model(quality=derive_thresholds(stats, module.SIDE, source="crops"))


def main(
    data: Annotated[Path, typer.Option(help="a folder of field images")] = Path(
        "../shared/data/bccd/JPEGImages"
    ),
    fields: Annotated[int, typer.Option(min=1, help="fields timed (the first, sorted)")] = 40,
    red_cell_px: Annotated[float, typer.Option(help="red-cell diameter of the fields")] = 77.0,
) -> None:
    """Time ``classify_field`` with and without masks."""
    classifier = Classifier(ClassifierOptions(model_content=_test_model(), num_threads=1))
    paths = sorted(p for p in data.iterdir() if p.suffix.lower() in (".jpg", ".png"))[:fields]
    images = [load_rgb(p) for p in paths]
    for masks in (True, False):
        options = FieldOptions(locate=LocateOptions(red_cell_diameter_px=red_cell_px, masks=masks))
        times, cells = [], []
        for rgb in images:
            start = time.process_time()
            result = classifier.classify_field(rgb, options)
            times.append(1000 * (time.process_time() - start))
            cells.append(len(result.cells))
        print(
            f"masks {'on ' if masks else 'off'}: {len(images)} fields, CPU ms per field median "
            f"{statistics.median(times):.1f}, p90 {float(np.percentile(times, 90)):.1f}; cells "
            f"per field {np.mean(cells):.2f}"
        )


if __name__ == "__main__":
    typer.run(main)
