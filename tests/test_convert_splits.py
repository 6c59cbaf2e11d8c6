"""Which split each step of ``leukedge convert`` reads, without TensorFlow: the
representative dataset (int8 calibration) and the quality thresholds come from the run's
**train** split only; the gate and the thresholds of the fitted checks from val; the test
split is never read (``converters/convert.py``'s promise).

The run's ``split.csv`` here names real train images, and val and test images that do not
exist: reading one of them raises ``FileNotFoundError``, and every image a step decodes is
recorded, so a step that draws from the wrong split fails by name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from leukedge.converters import convert as convert_module
from leukedge.converters import trust as trust_module
from leukedge.converters.convert import ConvertConfig, Converter
from leukedge.evaluation.data import Sample, write_split


@pytest.fixture
def run_split(tmp_path: Path) -> tuple[Path, dict[str, list[Sample]]]:
    """``split.csv`` with 4 + 4 real train images (distinct colours) and absent val/test."""
    rng = np.random.default_rng(0)
    splits: dict[str, list[Sample]] = {"train": [], "val": [], "test": []}
    for label in ("ALL", "HEM"):
        for i in range(4):
            path = tmp_path / "train" / f"{label}_{i}.png"
            path.parent.mkdir(exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(path)
            splits["train"].append(Sample(path, label, f"s{label}{i}", "train"))
        for split in ("val", "test"):
            absent = tmp_path / split / f"{label}_0.png"  # never created
            splits[split].append(Sample(absent, label, f"{split}{label}", split))
    write_split(tmp_path / "split.csv", splits)
    return tmp_path / "split.csv", splits


def _converter(split_csv: Path, **settings) -> Converter:
    """A converter past :meth:`Converter.load` (no model needed for these steps)."""
    converter = Converter(ConvertConfig(model=str(split_csv.parent / "model.keras"), **settings))
    converter.split_file = str(split_csv)
    converter.size = (16, 16)
    return converter


def _recording(monkeypatch, module, name: str) -> list[Path]:
    """Replace ``module.name`` (an image loader) by one that records each path it opens."""
    opened: list[Path] = []
    real = getattr(module, name)

    def record(path, *args, **kwargs):
        opened.append(Path(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(module, name, record)
    return opened


def test_calibration_images_come_from_the_train_split_only(run_split, monkeypatch):
    split_csv, splits = run_split
    opened = _recording(monkeypatch, convert_module, "load_and_resize")
    converter = _converter(split_csv, precisions=["int8"], representative_size=4, check=False)
    images = converter.calibration_images()
    assert images.shape == (4, 16, 16, 3) and images.dtype == np.uint8  # 2 per class
    train = {s.path for s in splits["train"]}
    assert len(opened) == 4 and set(opened) <= train, opened


def test_quality_thresholds_come_from_the_train_split_only(run_split, monkeypatch):
    split_csv, splits = run_split
    opened = _recording(monkeypatch, trust_module, "load_rgb")
    converter = _converter(split_csv, precisions=["int8"], check=False)
    converter.trust_sets()
    assert [s.path for s in converter.trust_train] == [s.path for s in splits["train"]]
    assert [s.path for s in converter.trust_val] == [s.path for s in splits["val"]]
    assert sorted(opened) == sorted(s.path for s in splits["train"])
    assert converter.quality is not None and "n=8" in converter.quality.source


def test_a_final_runs_views_and_out_of_fold_outputs_are_read(run_split):
    """A run written by ``leukedge train final``: its ``train_views`` / ``val_views`` join
    the out-of-domain fit and threshold, and the operating point is fitted on its
    ``oof.csv`` (out-of-fold outputs), not on this file's val outputs; a run without them
    is read as before, and a broken ``oof.csv`` is an error naming it."""
    split_csv, splits = run_split
    views = {
        "train_views": [Sample(s.path, s.label, s.subject, "v") for s in splits["train"]],
        "val_views": [Sample(s.path, s.label, s.subject, "v") for s in splits["val"]],
    }
    write_split(split_csv, {**splits, **views})
    converter = _converter(split_csv, precisions=["int8"], check=False)
    converter.run_dir, converter.labels = split_csv.parent, ["ALL", "HEM"]
    converter.trust_sets()
    assert len(converter.view_train) == 8 and len(converter.view_val) == 2
    assert converter.oof is None  # no oof.csv: the val outputs, as before
    (split_csv.parent / "oof.csv").write_text(
        "name,label,fold,p_all\na.jpg,ALL,0,0.9\nb.jpg,HEM,1,0.2\n"
    )
    converter.trust_sets()
    assert converter.oof == [("a.jpg", "ALL", 0.9), ("b.jpg", "HEM", 0.2)]
    (split_csv.parent / "oof.csv").write_text("name,p\na.jpg,0.9\n")
    with pytest.raises(ValueError, match="oof.csv: needs name, label and p_all"):
        converter.trust_sets()
