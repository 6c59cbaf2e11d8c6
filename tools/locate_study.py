"""How well :mod:`leukedge.cells.locate` finds white cells: BCCD boxes and ``wbc-normal`` masks.

Writes to ``--out``:

- ``locate.json``: recall and precision at IoU ≥ 0.5 against BCCD's WBC boxes (all fields,
  and the even- and odd-numbered fields apart: the defaults were chosen on the even ones),
  the time per field (median and 90th percentile, one thread), and the Dice of the cell
  mask against ``wbc-normal``'s masks (nucleus + cytoplasm) per dataset;
- ``bccd_errors.png``: a contact sheet of every BCCD field with a miss (green box, no match)
  or a false find (red box), so that BCCD's unlabelled cells can be counted by eye;
- ``bccd_matches.csv``: one row per field: boxes, matches, misses, false finds.

Usage (about a minute on one core)::

    python3 tools/locate_study.py --data ../shared/data --out runs/locate-study
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np

from leukedge.cells.locate import LocateError, LocateOptions, locate_cells, red_cell_diameter

IOU = 0.5


def wbc_boxes(xml_path: Path) -> list[tuple[int, int, int, int]]:
    """BCCD's WBC boxes of one field as ``(x0, y0, x1, y1)``."""
    boxes = []
    for obj in ET.parse(xml_path).findall("object"):
        if obj.findtext("name", "").strip() == "WBC":
            b = obj.find("bndbox")
            boxes.append(tuple(int(float(b.findtext(k))) for k in ("xmin", "ymin", "xmax", "ymax")))
    return boxes


def iou(a, b) -> float:
    """Intersection over union of two ``(x0, y0, x1, y1)`` boxes."""
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def match(truth, found) -> tuple[int, list[int], list[int]]:
    """Greedy one-to-one matching at IoU ≥ 0.5, best pairs first.

    Returns:
        (matched count, indices of missed truth boxes, indices of false finds).
    """
    pairs = sorted(
        ((iou(t, f), i, j) for i, t in enumerate(truth) for j, f in enumerate(found)), reverse=True
    )
    used_t, used_f = set(), set()
    for value, i, j in pairs:
        if value < IOU:
            break
        if i not in used_t and j not in used_f:
            used_t.add(i)
            used_f.add(j)
    missed = [i for i in range(len(truth)) if i not in used_t]
    false = [j for j in range(len(found)) if j not in used_f]
    return len(used_t), missed, false


def bccd(data: Path, out: Path) -> dict:
    """Recall and precision against BCCD's WBC boxes, two ways of knowing the scale:

    - ``per_field``: each field's red-cell size estimated on the field itself (what
      :func:`locate_cells` does by default);
    - ``one_scale``: one red-cell size for the whole set, the median of the per-field
      estimates (a lab that measures its microscope's scale once, then passes
      ``LocateOptions(red_cell_diameter_px=...)``).

    Times are CPU seconds of one thread: locating alone (scale given), the scale estimate,
    and a cell's GrabCut mask.
    """
    root = data / "bccd"
    fields = []
    for xml_path in sorted((root / "Annotations").glob("*.xml")):
        bgr = cv2.imread(str(root / "JPEGImages" / (xml_path.stem + ".jpg")))
        if bgr is None:
            continue
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        t0 = time.process_time()
        try:
            scale = red_cell_diameter(rgb, LocateOptions())
        except LocateError:
            scale = None
        fields.append((xml_path, bgr, rgb, wbc_boxes(xml_path), scale, time.process_time() - t0))
    known = [f[4] for f in fields if f[4] is not None]
    median_scale = float(np.median(known))
    result = {
        "fields": len(fields),
        "red_cell_diameter_px": {
            "median": median_scale,
            "p5": float(np.percentile(known, 5)),
            "p95": float(np.percentile(known, 95)),
            "not_measured": [f[0].stem for f in fields if f[4] is None],
        },
    }
    for mode in ("per_field", "one_scale"):
        totals = {"all": [0, 0, 0], "even": [0, 0, 0], "odd": [0, 0, 0]}
        rows, sheet, times = [], [], []
        for xml_path, bgr, rgb, truth, scale, _ in fields:
            scale = median_scale if mode == "one_scale" else scale
            found = []
            if scale is not None:
                options = LocateOptions(red_cell_diameter_px=scale, masks=False)
                t0 = time.process_time()
                found = [c.box for c in locate_cells(rgb, options)]
                times.append(time.process_time() - t0)
            hit, missed, false = match(truth, found)
            number = int(re.findall(r"\d+", xml_path.stem)[-1])
            for key in ("all", "even" if number % 2 == 0 else "odd"):
                totals[key][0] += hit
                totals[key][1] += len(missed)
                totals[key][2] += len(false)
            rows.append(
                {
                    "file": xml_path.stem + ".jpg",
                    "red_cell_diameter_px": "" if scale is None else round(scale, 1),
                    "truth": json.dumps(truth),
                    "found": json.dumps(found),
                    "matched": hit,
                    "missed": len(missed),
                    "false_finds": len(false),
                }
            )
            if missed or false:
                view = bgr.copy()
                for i in missed:
                    cv2.rectangle(view, truth[i][:2], truth[i][2:], (0, 200, 0), 4)
                for j in false:
                    cv2.rectangle(view, found[j][:2], found[j][2:], (0, 0, 255), 4)
                view = cv2.resize(view, (320, 240), interpolation=cv2.INTER_AREA)
                cv2.putText(view, xml_path.stem[-5:], (4, 18), 0, 0.6, (0, 0, 0), 2)
                sheet.append(view)
        _write_rows(out / f"bccd_{mode}.csv", rows)
        if sheet:
            while len(sheet) % 6:
                sheet.append(np.full_like(sheet[0], 255))
            grid = np.vstack([np.hstack(sheet[i : i + 6]) for i in range(0, len(sheet), 6)])
            cv2.imwrite(str(out / f"bccd_errors_{mode}.png"), grid)
        result[mode] = {key: _rates(*values) for key, values in totals.items()}
        result[mode]["locate_ms"] = _ms(times)
    result["scale_estimate_ms"] = _ms([f[5] for f in fields])
    mask_times = []
    for _, _, rgb, _, _, _ in fields[::8]:
        t0 = time.process_time()
        cells = locate_cells(rgb, LocateOptions(red_cell_diameter_px=median_scale))
        mask_times.append((time.process_time() - t0) / max(1, len(cells)))
    result["locate_with_masks_ms_per_cell"] = _ms(mask_times)
    return result


def _rates(hit: int, miss: int, false: int) -> dict:
    return {
        "recall": hit / max(1, hit + miss),
        "precision": hit / max(1, hit + false),
        "matched": hit,
        "missed": miss,
        "false_finds": false,
    }


def _ms(seconds: list[float]) -> dict:
    ms = 1000 * np.asarray(seconds)
    return {"median": float(np.median(ms)), "p90": float(np.percentile(ms, 90))}


def _write_rows(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def wbc_normal(data: Path) -> dict:
    """Dice of the located cell's mask against the ``wbc-normal`` mask (value > 0: nucleus
    and cytoplasm), per dataset. The crops hold one cell and few whole red cells, so the
    red-cell size is not estimated but taken as 0.3 of the crop's side (both datasets are at
    about that scale: a red cell is ~36 px in Dataset_1's 120 px crops, ~90 px in
    Dataset_2's 300 px ones)."""
    root = data / "wbc-normal"
    dice: dict[str, list[float]] = {}
    for image in sorted(root.glob("*/Dataset_*/*.bmp")):
        dataset = image.parent.name
        truth = cv2.imread(
            str(root / "masks" / dataset / (image.stem + ".png")), cv2.IMREAD_GRAYSCALE
        )
        if truth is None:
            continue
        rgb = cv2.cvtColor(cv2.imread(str(image)), cv2.COLOR_BGR2RGB)
        h, w = rgb.shape[:2]
        cells = locate_cells(rgb, LocateOptions(red_cell_diameter_px=0.3 * min(h, w)))
        predicted = np.zeros((h, w), bool)
        if cells:  # the crop's cell: the one nearest the centre
            cell = min(
                cells,
                key=lambda c: np.hypot(
                    (c.box[0] + c.box[2] - w) / 2, (c.box[1] + c.box[3] - h) / 2
                ),
            )
            x0, y0, x1, y1 = cell.mask_box
            predicted[y0:y1, x0:x1] = cell.mask
        t = truth > 0
        dice.setdefault(dataset, []).append(2 * (predicted & t).sum() / (predicted.sum() + t.sum()))
    everything = [d for values in dice.values() for d in values]
    return {
        name: {
            "images": len(values),
            "mean": float(np.mean(values)),
            "median": float(np.median(values)),
            "p10": float(np.percentile(values, 10)),
        }
        for name, values in {**dice, "all": everything}.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    cv2.setNumThreads(1)
    report = {"bccd": bccd(args.data, args.out)}
    report["wbc_normal_dice"] = wbc_normal(args.data)
    (args.out / "locate.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
