"""The example programs in examples/ run, on the embedded model and examples/images/ (no
camera, no TensorFlow, no ../shared/data). Kept short: the examples are demonstrations."""

from __future__ import annotations

import csv
import importlib.util
import shutil
import subprocess
import sys

import numpy as np
import pytest

from leukedge.classifier import Classifier
from leukedge.preprocess import load_rgb

EXAMPLES = ("classify_folder.py", "microscope_integration.py", "raspberry_pi_camera.py")
FIELD = "WBC-Malignant-Pre-810.jpg"
BENIGN = "WBC-Benign-420.jpg"


def _example(example_images, name):
    """Import ``examples/<name>`` as a module (the examples are scripts, not a package)."""
    path = example_images.parent / name
    spec = importlib.util.spec_from_file_location(f"example_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _run(example_images, name, *args):
    return subprocess.run(
        [sys.executable, str(example_images.parent / name), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def classifier():
    return Classifier()


@pytest.mark.parametrize("name", EXAMPLES)
def test_every_example_has_help(example_images, name):
    proc = _run(example_images, name, "--help")
    assert proc.returncode == 0 and "usage:" in proc.stdout, proc.stderr


def test_classify_folder_writes_one_row_per_image(example_images, classifier, tmp_path):
    folder = tmp_path / "slides"
    shutil.copytree(example_images, folder / "nested")  # searched recursively
    (folder / "cut.jpg").write_bytes((example_images / FIELD).read_bytes()[:1500])
    (folder / "notes.txt").write_text("not an image, skipped")
    out = tmp_path / "predictions.csv"
    proc = _run(example_images, "classify_folder.py", folder, "--out", out, "--threads", 1)
    assert proc.returncode == 1, proc.stderr  # one file failed
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["path", "status", "reason", "label", "p_ALL", "p_HEM", "error"]
    images = sorted([folder / "cut.jpg", *(folder / "nested").glob("*.[jb][pm][gp]")])
    assert [r["path"] for r in rows] == [str(p) for p in images] and len(rows) == 5
    assert (rows[0]["status"], rows[0]["reason"], rows[0]["label"]) == ("error", "decode_error", "")
    assert rows[0]["error"].startswith(rows[0]["path"] + ": ")
    statuses = {"ok": 0, "refer": 0, "rejected": 0}
    calls = {"ALL": 0, "HEM": 0}
    for row in rows[1:]:
        expected = classifier.classify(row["path"])
        assert (row["status"], row["reason"]) == (expected.status, expected.reason or "")
        assert row["label"] == (expected.label or "") and row["error"] == ""
        # the p_ columns are what the model said, also when it makes no call
        assert row["p_ALL"] == f"{expected.model_probabilities['ALL']:.6f}"
        assert row["p_HEM"] == f"{expected.model_probabilities['HEM']:.6f}"
        statuses[expected.status] += 1
        if expected.status == "ok":
            calls[expected.label] += 1
    assert (
        f"5 images (calls: ALL {calls['ALL']}, HEM {calls['HEM']}; refer {statuses['refer']}, "
        f"rejected {statuses['rejected']}, failed 1)"
    ) in proc.stdout
    assert not list(tmp_path.glob(".predictions.csv.*"))  # no temporary file left
    missing = _run(example_images, "classify_folder.py", tmp_path / "nowhere")
    assert missing.returncode == 2 and "not a folder" in missing.stderr


def test_microscope_integration_smooths_the_simulated_camera(example_images, capsys):
    example = _example(example_images, "microscope_integration.py")
    assert example.main(["--frames-per-image", "4", "--window", "5", "--min-frames", "3"]) == 0
    out = capsys.readouterr().out
    assert "Decision support only" in out
    moved = [line for line in out.splitlines() if line.startswith("--- slide moved")]
    assert [line.rsplit(" ", 1)[1] for line in moved] == [BENIGN, FIELD]
    calls = [line for line in out.splitlines() if line.startswith("t=")]
    assert len(calls) == 8 and calls[0].endswith("no call")  # 1 frame < --min-frames 3
    assert calls[-1].endswith("-> ALL")  # the malignant field, 4 of the last 5 frames
    # The smoother itself: BGR frames are turned to RGB; a repeated millisecond is skipped.
    smoothed = example.SmoothedClassifier(window=3, min_frames=1)
    rgb = load_rgb(example_images / FIELD)
    first = smoothed.on_frame(np.ascontiguousarray(rgb[..., ::-1]), 1_000)
    assert first.latest.probabilities == Classifier().classify(rgb).probabilities
    assert first.label == "ALL" and smoothed.on_frame(rgb, 1_400, "RGB") is None


class _FakeCamera:
    """Stands in for a camera: the example field in the middle of a wider BGR frame."""

    name = "fake"

    def __init__(self, rgb):
        self.frame = np.zeros((rgb.shape[0], rgb.shape[1] + 96, 3), dtype=np.uint8)
        self.frame[:, 48:-48] = rgb[..., ::-1]

    def read_bgr(self):
        return self.frame.copy()

    def close(self):
        pass


def test_raspberry_pi_camera_headless_loop(example_images, classifier, monkeypatch, capsys):
    example = _example(example_images, "raspberry_pi_camera.py")
    rgb = load_rgb(example_images / BENIGN)  # a close call (p 0.57): any change shows
    camera = _FakeCamera(rgb)
    assert example.centre_square(camera.frame) == (48, 0, rgb.shape[0])
    expected = classifier.classify(rgb)
    monkeypatch.setattr(example, "open_camera", lambda *args: camera)
    assert example.main(["--headless", "--frames", "4", "--every-n-frames", "2"]) == 0
    results = [line for line in capsys.readouterr().out.splitlines() if " ms  " in line]
    assert results and all(line.endswith(example.describe(expected)) for line in results)
    assert example.describe(expected) == "HEM 0.57  (ALL 0.43, HEM 0.57)"
    # The overlay draws on the frame; no camera is exit 1, an unloadable model exit 2.
    latest = example.LatestResult()
    latest.set(expected, None)
    frame = camera.read_bgr()
    example.draw_overlay(frame, latest, example.centre_square(frame))
    assert not np.array_equal(frame, camera.frame)

    def no_camera(*args):
        raise example.NoCameraError("no camera found (test)")

    monkeypatch.setattr(example, "open_camera", no_camera)
    assert example.main(["--headless"]) == 1
    assert example.main(["--model", str(example_images / "missing.tflite")]) == 2
