"""Runtime correctness: threads, pixel formats, pixel cap, bit depth, multi-page files,
warnings, the interpreter fallback, install hints and the SDK's error and constructor surface.

Embedded model and ``examples/images/`` only: no TensorFlow, no ``../shared/data``.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import threading
import typing
import warnings
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageFile, PngImagePlugin

import leukedge
from leukedge.classifier import (
    Classifier,
    ClassifierOptions,
    ResultCallback,
    RunningMode,
    default_model_path,
)
from leukedge.engine.interpreter import (
    ModelLoadError,
    RuntimeNotFoundError,
    TFLiteEngine,
    interpreter_class,
)
from leukedge.engine.metadata import MetadataError
from leukedge.engine.preprocess import (
    DRAFT_SAFETY_FACTOR,
    ImageDecodeError,
    decode_size,
    load_rgb,
)
from leukedge.errors import LeukedgeError, LeukedgeWarning

IMAGES = Path(__file__).resolve().parents[1] / "examples" / "images"
# A benign field that the embedded model v3 refers (int8 p(ALL) about 0.5; v2 called it
# ALL 0.944); colour errors change its probabilities.
BENIGN = IMAGES / "WBC-Benign-420.jpg"
MALIGNANT = IMAGES / "WBC-Malignant-Pre-810.jpg"
CELLS = [IMAGES / "UID_3_4_2_all.bmp", IMAGES / "UID_H10_47_2_hem.bmp"]
PNG_SIGNATURE_AND_IHDR = 8 + 8 + 13 + 4


@pytest.fixture(scope="module")
def classifier() -> Classifier:
    return Classifier()


@pytest.fixture(scope="module")
def benign_rgb() -> np.ndarray:
    return load_rgb(BENIGN)


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "leukedge.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


# ----------------------------------------------------------------------------- threads
@pytest.mark.parametrize("options", [{}, {"max_interpreters": 1}], ids=["pool", "lock"])
def test_one_classifier_from_four_threads_gives_single_threaded_results(options):
    clf = Classifier(ClassifierOptions(**options))
    inputs = [BENIGN, MALIGNANT, load_rgb(CELLS[0]), load_rgb(CELLS[1])]  # files and arrays
    expected = [clf.classify(x).model_probabilities for x in inputs]
    failures, wrong, done = [], [], []
    start = threading.Barrier(4)

    def worker(k: int) -> None:
        start.wait()
        for i in range(200):
            j = (i + k) % len(inputs)
            try:
                got = clf.classify(inputs[j]).model_probabilities
            except Exception as exc:  # noqa: BLE001 - collected and asserted below
                failures.append(repr(exc))
                continue
            if got != expected[j]:
                wrong.append((j, got))
            done.append(1)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == [] and wrong == [] and len(done) == 800
    assert 1 <= clf._pool.created <= clf._pool.size
    if options:
        assert clf._pool.created == 1


def test_engine_shared_between_threads_is_serialised(benign_rgb):
    engine = TFLiteEngine(default_model_path())
    x = np.asarray(Image.fromarray(benign_rgb).resize((224, 224), Image.Resampling.BILINEAR))
    y = np.zeros_like(x)
    want = {0: engine.run(x), 1: engine.run(y)}
    bad = []

    def worker(k: int) -> None:
        for i in range(60):
            j = (i + k) % 2
            try:
                if not np.array_equal(engine.run(x if j == 0 else y), want[j]):
                    bad.append(j)
            except RuntimeError as exc:
                bad.append(repr(exc))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert bad == []


# ----------------------------------------------------------------------------- pixel formats
def test_bgrx_bytes_from_picamera2_give_the_rgb_result(classifier, benign_rgb):
    rgb_result = classifier.classify(benign_rgb)
    h, w, _ = benign_rgb.shape
    # Picamera2 "XRGB8888": every pixel is [B, G, R, 255] in memory.
    packed = np.dstack([benign_rgb[..., 2], benign_rgb[..., 1], benign_rgb[..., 0]])
    packed = np.dstack([packed, np.full((h, w), 255, np.uint8)]).tobytes()
    bgrx = np.frombuffer(packed, dtype=np.uint8).reshape(h, w, 4)
    assert (
        classifier.classify(bgrx, pixel_format="BGRX").model_probabilities
        == rgb_result.model_probabilities
    )
    # The same frame read as RGBX (the old silent behaviour) is a different, wrong image.
    assert (
        classifier.classify(bgrx, pixel_format="RGBX").model_probabilities
        != rgb_result.model_probabilities
    )
    bgr = np.ascontiguousarray(benign_rgb[..., ::-1])
    assert (
        classifier.classify(bgr, pixel_format="BGR").model_probabilities
        == rgb_result.model_probabilities
    )
    rgba = np.dstack([benign_rgb, np.zeros((h, w), np.uint8)])
    assert (
        classifier.classify(rgba, pixel_format="RGBA").model_probabilities
        == rgb_result.model_probabilities
    )
    bgra = np.ascontiguousarray(bgrx)
    assert (
        classifier.classify(bgra, pixel_format="BGRA").model_probabilities
        == rgb_result.model_probabilities
    )
    assert classifier.classify(benign_rgb, pixel_format="RGB") == rgb_result


def test_pixel_format_misuse_is_refused(classifier, benign_rgb):
    four = np.zeros((8, 8, 4), np.uint8)
    with pytest.raises(ValueError, match="'RGBA', 'BGRA', 'RGBX', 'BGRX'"):
        classifier.classify(four)  # undeclared 4 channels: never guessed
    with pytest.raises(ValueError, match="'BGRA' has 4 channels but the array"):
        classifier.classify(benign_rgb, pixel_format="BGRA")
    with pytest.raises(ValueError, match="'RGB' has 3 channels"):
        classifier.classify(four, pixel_format="RGB")
    with pytest.raises(ValueError, match="unknown pixel_format 'YUV'"):
        classifier.classify(benign_rgb, pixel_format="YUV")
    with pytest.raises(ValueError, match="numpy array"):
        classifier.classify(BENIGN, pixel_format="RGB")
    grey = benign_rgb[..., 1].copy()
    assert load_rgb(grey).shape == (224, 224, 3)  # 2-D uint8 stays accepted as grey
    with pytest.raises(ValueError, match="grey"):
        load_rgb(grey, pixel_format="BGR")


def test_video_and_live_stream_take_pixel_format(benign_rgb):
    expected = Classifier().classify(benign_rgb).model_probabilities
    bgr = np.ascontiguousarray(benign_rgb[..., ::-1])
    video = Classifier(ClassifierOptions(running_mode=RunningMode.VIDEO))
    assert video.classify_for_video(bgr, 1, pixel_format="BGR").model_probabilities == expected
    with pytest.raises(ValueError, match="pixel_format"):
        video.classify_for_video(np.zeros((8, 8, 4), np.uint8), 2)
    got = []
    options = ClassifierOptions(
        running_mode=RunningMode.LIVE_STREAM,
        result_callback=lambda result, frame, ts, error: got.append((result, error)),
    )
    with Classifier(options) as live:
        with pytest.raises(ValueError, match="pixel_format"):  # raised here, not in a thread
            live.classify_async(np.zeros((8, 8, 4), np.uint8), 1)
        assert live.classify_async(bgr, 2, pixel_format="BGR")
    assert got[0][1] is None and got[0][0].model_probabilities == expected


# ----------------------------------------------------------------------------- pixel cap
def _huge_png(path: Path, side: int = 10_000) -> Path:
    """A valid 1-bit PNG of side × side pixels: a few kB on disk, 100 MP when decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    rows = bytes(side * (1 + (side + 7) // 8))  # filter byte 0 + packed bits, all black
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(rows, 9))
        + chunk(b"IEND", b"")
    )
    return path


def test_huge_png_is_refused_from_its_header(tmp_path, classifier, monkeypatch):
    """Refused from the header, before any pixel is decoded: decoding is made to fail the
    test (a cap checked after decoding gives the same message, but a 100 MP PNG then peaks
    at 1.24 GB instead of 94 MB; timing the refusal does not tell the two apart on every
    CPU)."""
    huge = _huge_png(tmp_path / "huge.png")
    assert huge.stat().st_size < 100_000

    def no_decoding(image, *args, **kwargs):
        raise AssertionError(f"{image.format} {image.size} decoded before the pixel cap")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    monkeypatch.setattr(Image.Image, "load", no_decoding)
    with pytest.raises(ImageDecodeError) as info, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # Pillow's own note
        classifier.classify(huge)
    assert info.value.reason == "too_large"
    message = str(info.value)
    assert "huge.png" in message and "10000x10000" in message and "50 MP" in message
    assert info.value.source == str(huge)
    assert Image.MAX_IMAGE_PIXELS == 1024 * 1024 * 1024 // 4 // 3  # Pillow's global untouched


def test_max_pixels_applies_to_files_arrays_and_pil_images(benign_rgb):
    small = Classifier(ClassifierOptions(max_pixels=224 * 224 - 1))
    for image in (BENIGN, benign_rgb, Image.fromarray(benign_rgb)):
        with pytest.raises(ImageDecodeError, match="224x224 pixels"):
            small.classify(image)
    at_cap = Classifier(ClassifierOptions(max_pixels=224 * 224)).classify(BENIGN)
    reference = Classifier().classify(benign_rgb)
    assert at_cap.status in ("ok", "refer")  # an answer on the field, not a refusal
    assert (at_cap.status, at_cap.label) == (reference.status, reference.label)
    assert at_cap.probabilities == reference.probabilities


def test_max_pixels_is_the_files_size_not_the_reduced_jpeg_decode(tmp_path):
    """A JPEG above the cap is refused by its header's size, although its reduced-size
    decode (1/8 here) would fit under the cap."""
    big = tmp_path / "big.jpg"
    Image.open(BENIGN).resize((3584, 3584)).save(big, quality=80)  # 12.8 MP
    capped = Classifier(ClassifierOptions(max_pixels=10_000_000))
    with pytest.raises(ImageDecodeError, match="3584x3584 pixels") as caught:
        capped.classify(big)
    assert caught.value.reason == "too_large"
    assert Classifier(ClassifierOptions(max_pixels=13_000_000)).classify(big).status == "ok"


def test_cli_refuses_the_huge_file_and_classifies_the_rest(tmp_path):
    huge = _huge_png(tmp_path / "huge.png")
    proc = _cli("classify", "--json", str(huge), str(BENIGN))
    assert proc.returncode == 1, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert rows[0]["error"].startswith(f"{huge}: 10000x10000 pixels")
    assert "50 MP" in rows[0]["error"]
    assert "DecompressionBomb" not in proc.stderr  # leukedge's cap speaks, not Pillow's
    reference = Classifier().classify(BENIGN)
    assert rows[1]["error"] is None and rows[1]["status"] in ("ok", "refer")
    assert (rows[1]["status"], rows[1]["model_label"]) == (reference.status, reference.model_label)
    assert rows[1]["probabilities"] == reference.probabilities


def test_the_cap_decides_above_pillows_own_limit(tmp_path):
    """Above Pillow's decompression-bomb limit (179 MP) the CLI's ``--max-pixels`` still
    decides, with leukedge's message; the SDK, which leaves Pillow's global alone, reports
    Pillow's refusal as ``too_large`` too."""
    huge = _huge_png(tmp_path / "huge.png", side=14_200)  # 201.6 MP
    proc = _cli("classify", "--json", "--max-pixels", "150000000", str(huge))
    row = json.loads(proc.stdout)
    assert row["error"].startswith(f"{huge}: 14200x14200 pixels") and "150 MP" in row["error"]
    assert row["reason"] == "too_large" and "DecompressionBomb" not in proc.stderr
    with pytest.raises(ImageDecodeError) as info:
        Classifier(ClassifierOptions(max_pixels=None)).classify(huge)
    assert info.value.reason == "too_large" and "huge.png" in str(info.value)
    assert Image.MAX_IMAGE_PIXELS == 1024 * 1024 * 1024 // 4 // 3  # the SDK left it alone


def test_large_jpeg_is_decoded_at_reduced_size_with_the_same_call(tmp_path, classifier):
    assert decode_size((224, 224)) == (DRAFT_SAFETY_FACTOR * 224, DRAFT_SAFETY_FACTOR * 224)
    for source in (BENIGN, MALIGNANT):
        big = tmp_path / f"big_{source.stem}.jpg"
        Image.open(source).resize((1792, 1344), Image.Resampling.BICUBIC).save(big, quality=95)
        drafted = load_rgb(big, min_size=decode_size((224, 224)))
        # 1792x1344 at 1/2 keeps >= 448 on both axes (1/4 would give 336 rows): 896x672.
        assert drafted.shape == (672, 896, 3)
        full = load_rgb(big)
        assert full.shape == (1344, 1792, 3)
        assert classifier.classify(big).model_label == classifier.classify(full).model_label
    # EXIF orientation 6 (stored rotated): the draft rule works on the upright axes.
    rotated = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.open(BENIGN).resize((1792, 896)).save(rotated, exif=exif.tobytes())
    assert load_rgb(rotated, min_size=(448, 448)).shape == (896, 448, 3)


# ----------------------------------------------------------------------------- bit depth
def _insert_sbit(png: bytes, bits: bytes) -> bytes:
    chunk = struct.pack(">I", len(bits)) + b"sBIT" + bits
    chunk += struct.pack(">I", zlib.crc32(b"sBIT" + bits))
    return png[:PNG_SIGNATURE_AND_IHDR] + chunk + png[PNG_SIGNATURE_AND_IHDR:]


def _twelve_bit(rgb: np.ndarray) -> np.ndarray:
    return np.round(rgb.astype(np.float64) * 4095 / 255).astype(np.uint16)


def test_declared_12_bit_colour_png_is_scaled_by_4095(tmp_path, classifier, benign_rgb):
    x12 = _twelve_bit(benign_rgb)
    ok, encoded = cv2.imencode(".png", x12[..., ::-1])  # 16-bit RGB PNG
    assert ok
    declared = tmp_path / "declared12.png"
    declared.write_bytes(_insert_sbit(encoded.tobytes(), bytes([12, 12, 12])))
    with warnings.catch_warnings():
        warnings.simplefilter("error", LeukedgeWarning)
        assert np.array_equal(load_rgb(declared), benign_rgb)
    assert (
        classifier.classify(declared).model_probabilities
        == classifier.classify(BENIGN).model_probabilities
    )


def test_undeclared_12_bit_png_is_scaled_as_16_bit_with_a_warning(tmp_path, benign_rgb):
    undeclared = tmp_path / "undeclared12.png"
    cv2.imwrite(str(undeclared), _twelve_bit(benign_rgb)[..., ::-1])
    with pytest.warns(LeukedgeWarning, match=r"undeclared12\.png: 16-bit image .* 12 bits"):
        rgb = load_rgb(undeclared)
    expected = np.round(_twelve_bit(benign_rgb) * (255 / 65535)).astype(np.uint8)
    assert np.array_equal(rgb, expected) and rgb.max() <= 16  # 16x darker, and said so


def test_declared_12_bit_grey_png_and_tiff(tmp_path, benign_rgb):
    grey = benign_rgb[..., 1]
    x12 = _twelve_bit(grey)
    info = PngImagePlugin.PngInfo()
    info.add(b"sBIT", bytes([12]))
    Image.fromarray(x12).save(tmp_path / "g12.png", pnginfo=info)
    Image.fromarray(x12).save(tmp_path / "g12.tif", tiffinfo={281: 4095})  # MaxSampleValue
    with warnings.catch_warnings():
        warnings.simplefilter("error", LeukedgeWarning)
        for name in ("g12.png", "g12.tif"):
            assert np.array_equal(load_rgb(tmp_path / name)[..., 0], grey), name
        # Real 16-bit data (full range) needs no declaration and gets no warning.
        full = (grey.astype(np.uint16) * 257).astype(np.uint16)
        Image.fromarray(full).save(tmp_path / "g16.png")
        assert np.array_equal(load_rgb(tmp_path / "g16.png")[..., 0], grey)


def test_undeclared_16_bit_colour_tiff_warns(tmp_path, benign_rgb):
    tif = tmp_path / "rgb12.tif"
    cv2.imwrite(str(tif), _twelve_bit(benign_rgb)[..., ::-1])
    with pytest.warns(LeukedgeWarning, match=r"rgb12\.tif: .*12 bits"):
        rgb = load_rgb(tif)
    assert rgb.shape == (224, 224, 3) and rgb.max() <= 16


# ----------------------------------------------------------------------------- multi-page
def test_multi_page_tiff_and_animated_gif_say_which_frame(tmp_path, benign_rgb):
    other = np.zeros_like(benign_rgb)
    tif = tmp_path / "pages.tif"
    Image.fromarray(benign_rgb).save(
        tif, save_all=True, append_images=[Image.fromarray(other), Image.fromarray(other)]
    )
    with pytest.warns(LeukedgeWarning, match=r"pages\.tif: 3 frames .*frame 0"):
        rgb = load_rgb(tif)
    assert np.array_equal(rgb, benign_rgb)
    gif = tmp_path / "anim.gif"
    Image.fromarray(benign_rgb).save(
        gif, save_all=True, append_images=[Image.fromarray(other)], duration=100, loop=0
    )
    with pytest.warns(LeukedgeWarning, match=r"anim\.gif: 2 frames .*frame 0"):
        rgb = load_rgb(gif)
    with Image.open(gif) as first:
        assert np.array_equal(rgb, np.asarray(first.convert("RGB")))
    assert rgb.mean() > 50  # frame 0 (the field), not the black frame


# ----------------------------------------------------------------------------- warnings
def test_warning_format_is_decided_by_category_not_path():
    code = (
        "import warnings\n"
        "from leukedge import cli\n"
        "def emit():\n"
        '    warnings.warn_explicit("a library\'s own note", UserWarning,\n'
        "                           '/opt/site-packages/leukedge_vendor/plugin.py', 7)\n"
        "    from leukedge.errors import LeukedgeWarning\n"
        "    warnings.warn_explicit('x.tif: 3 frames', LeukedgeWarning, '/anywhere/else.py', 9)\n"
        "cli.app = emit\n"
        "cli.main()\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    # A third-party warning from a path that merely contains "leukedge": Python's format.
    assert (
        "/opt/site-packages/leukedge_vendor/plugin.py:7: UserWarning: a library's own note"
        in proc.stderr
    )
    assert "warning: a library's own note" not in proc.stderr
    # leukedge's own, wherever it is raised from: one line, no category, no file:line.
    assert "warning: x.tif: 3 frames\n" in proc.stderr and "LeukedgeWarning" not in proc.stderr


def test_cli_prints_leukedge_warning_as_one_line_naming_the_file(tmp_path, benign_rgb):
    tif = tmp_path / "pages.tif"
    Image.fromarray(benign_rgb).save(
        tif, save_all=True, append_images=[Image.fromarray(benign_rgb)]
    )
    proc = subprocess.run(
        [sys.executable, "-c", "from leukedge.cli import main; main()", "classify", str(tif)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "frames" in line]
    assert lines == [
        f"warning: {tif}: 2 frames (TIFF with several pages or frames); classified frame 0 only"
    ]


# ----------------------------------------------------------------------------- runtimes
def _broken_tflite_runtime(folder: Path) -> None:
    package = folder / "tflite_runtime"
    package.mkdir()
    (package / "__init__.py").write_text(
        "raise SystemError('<built-in function ...> returned a result with an exception set')\n"
    )
    (package / "interpreter.py").write_text("")


NUMPY_2 = pytest.mark.skipif(
    int(np.__version__.split(".")[0]) < 2,
    reason="under NumPy 1.x a tflite-runtime built for NumPy 1.x loads: nothing to explain",
)


@NUMPY_2
def test_tflite_runtime_built_for_numpy_1_is_explained(tmp_path, monkeypatch):
    _broken_tflite_runtime(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("ai_edge_litert", "ai_edge_litert.interpreter", "tensorflow", "tensorflow.lite"):
        monkeypatch.setitem(sys.modules, name, None)  # None in sys.modules: not importable
    for name in ("tflite_runtime", "tflite_runtime.interpreter"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    with pytest.raises(RuntimeNotFoundError) as info:
        interpreter_class()
    message = str(info.value)
    assert "tflite_runtime is installed but failed to import (SystemError" in message
    assert "NumPy 1.x" in message and f"NumPy {np.__version__}" in message
    assert "pip install ai-edge-litert" in message
    assert isinstance(info.value, LeukedgeError) and isinstance(info.value, ImportError)


SITECUSTOMIZE_NO_LITERT = """
import sys
for name in ("ai_edge_litert", "ai_edge_litert.interpreter", "tensorflow", "tensorflow.lite"):
    sys.modules[name] = None
"""

SITECUSTOMIZE_RUNTIME_ONLY = """
import importlib.abc, sys

class _NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "keras"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _NotInstalled())
"""


def _env_with(folder: Path) -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), *sys.path])}


@NUMPY_2
def test_cli_exits_2_with_the_explanation_when_only_tflite_runtime_is_there(tmp_path):
    _broken_tflite_runtime(tmp_path)
    (tmp_path / "sitecustomize.py").write_text(SITECUSTOMIZE_NO_LITERT)
    proc = _cli("classify", str(BENIGN), env=_env_with(tmp_path))
    assert proc.returncode == 2, proc.stderr
    assert "NumPy 1.x" in proc.stderr and "pip install ai-edge-litert" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "command",
    [
        ["train", "--data", str(IMAGES), "--out", "RUN"],
        ["train", "evaluate", "RUN", "--split", "test"],
        ["train", "crossval", "--data", str(IMAGES), "--out", "CV"],
        ["convert", "MODEL"],
    ],
)
def test_train_and_convert_in_a_runtime_only_install_say_what_to_install(tmp_path, command):
    (tmp_path / "sitecustomize.py").write_text(SITECUSTOMIZE_RUNTIME_ONLY)
    (tmp_path / "model.keras").write_bytes(b"PK\x03\x04")
    (tmp_path / "run").mkdir()
    paths = {
        "RUN": str(tmp_path / "run"),
        "MODEL": str(tmp_path / "model.keras"),
        "CV": str(tmp_path / "cv"),
    }
    proc = _cli(*[paths.get(a, a) for a in command], env=_env_with(tmp_path))
    assert proc.returncode == 2, proc.stderr
    assert not (tmp_path / "cv").exists()  # refused before anything is written
    assert f"error: leukedge {command[0]} needs the 'train' extra" in proc.stderr
    assert 'pip install ".[train]"' in proc.stderr and "leukedge[train]" not in proc.stderr
    assert "Traceback" not in proc.stderr


# ----------------------------------------------------------------------------- SDK surface
def test_one_exception_base_and_old_except_clauses_still_work():
    for error, builtin in [
        (ImageDecodeError, ValueError),
        (ModelLoadError, RuntimeError),
        (RuntimeNotFoundError, ImportError),
        (MetadataError, ValueError),
    ]:
        assert issubclass(error, LeukedgeError) and issubclass(error, builtin)
        assert getattr(leukedge, error.__name__) is error
    assert leukedge.LeukedgeError is LeukedgeError and issubclass(LeukedgeWarning, UserWarning)
    exc = ImageDecodeError("not a recognised image format", Path("a/b.png"))
    assert (exc.source, exc.problem, str(exc)) == (
        "a/b.png",
        "not a recognised image format",
        "a/b.png: not a recognised image format",
    )


def test_errors_carry_the_path_for_the_cli(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ImageDecodeError) as info:
        load_rgb(text)
    assert info.value.source == str(text) and info.value.problem == "not a recognised image format"
    with pytest.raises(FileNotFoundError) as missing:
        load_rgb(tmp_path / "missing.png")
    assert missing.value.filename == str(tmp_path / "missing.png")
    proc = _cli("classify", "--json", str(tmp_path / "missing.png"), str(text))
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["error"] for r in rows] == [
        f"{tmp_path / 'missing.png'}: no such file",
        f"{text}: not a recognised image format",
    ]


def test_model_content_and_constructor_names(classifier):
    content = default_model_path().read_bytes()
    from_bytes = Classifier(ClassifierOptions(model_content=content))
    assert (
        from_bytes.classify(BENIGN).model_probabilities
        == classifier.classify(BENIGN).model_probabilities
    )
    assert from_bytes.model_path is None and from_bytes.metadata.name == "leukedge_default"
    with pytest.raises(ValueError, match="not both"):
        Classifier(ClassifierOptions(model_path=default_model_path(), model_content=content))
    with pytest.raises(ModelLoadError, match="<model bytes>"):
        Classifier(ClassifierOptions(model_content=b"not a model"))
    assert not hasattr(Classifier, "from_model_path")
    by_path = Classifier.create_from_model_path(default_model_path(), num_threads=1)
    assert (
        by_path.classify(BENIGN).model_probabilities
        == classifier.classify(BENIGN).model_probabilities
    )
    hints = typing.get_type_hints(ClassifierOptions)
    assert hints["result_callback"] == ResultCallback | None
    assert hints["model_content"] == bytes | None
