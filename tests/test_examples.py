"""The example programs in examples/ run, on the embedded model and examples/images/ (no
camera, no TensorFlow, no ../shared/data), with the commands their READMEs show (a video
file instead of a camera). Kept short: the examples are demonstrations."""

from __future__ import annotations

import configparser
import csv
import dataclasses
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from conftest import load_script

from leukedge.classifier import Classifier
from leukedge.engine.preprocess import load_rgb

EXAMPLES = ("classify_folder.py", "microscope_integration.py", "raspberry_pi_camera.py")
FIELD = "WBC-Malignant-Pre-810.jpg"
BENIGN = "WBC-Benign-420.jpg"


def _example(example_images, name):
    """Import ``examples/<name>`` as a module (the examples are scripts, not a package)."""
    return load_script(example_images.parent / name, "example_")


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


def test_microscope_integration_smooths_the_simulated_camera(example_images, monkeypatch, capsys):
    """The majority vote over the last frames follows the slide from one answer to the
    other, and a new slide starts a new vote. The simulated camera shows a C-NMC cell first
    (a field model rejects it, noise and drift or not: every frame is "no call") and then
    the malignant field (ALL, p about 1.00 on every frame): none of the first slide's
    frames may vote on the second. (Model v3 calls the benign example's noisy frames ALL
    as often as not, README "Model card": not a slide to test the vote's reset on.)"""
    example = _example(example_images, "microscope_integration.py")
    cell = example_images / "UID_3_4_2_all.bmp"
    monkeypatch.setattr(example, "example_images", lambda kind: [cell, example_images / FIELD])
    argv = ["--frames-per-image", "4", "--window", "5", "--min-frames", "3"]
    assert example.main(argv) == 0
    out = capsys.readouterr().out
    assert "Decision support only" in out
    moved = [line for line in out.splitlines() if line.startswith("--- slide moved")]
    assert [line.rsplit(" ", 1)[1] for line in moved] == [cell.name, FIELD]
    calls = [line for line in out.splitlines() if line.startswith("t=")]
    assert len(calls) == 8 and calls[0].endswith("no call")  # 1 frame < --min-frames 3
    assert [c.split("| ")[1] for c in calls] == [
        "last 1: ALL 0, HEM 0, no call 1 -> no call",
        "last 2: ALL 0, HEM 0, no call 2 -> no call",
        "last 3: ALL 0, HEM 0, no call 3 -> no call",
        "last 4: ALL 0, HEM 0, no call 4 -> no call",
        "last 1: ALL 1, HEM 0, no call 0 -> no call",  # the malignant field's first frame
        "last 2: ALL 2, HEM 0, no call 0 -> no call",
        "last 3: ALL 3, HEM 0, no call 0 -> ALL",
        "last 4: ALL 4, HEM 0, no call 0 -> ALL",
    ]
    lines = out.splitlines()
    assert lines.index(moved[1]) == lines.index(calls[4]) - 1
    # The smoother itself: BGR frames are turned to RGB; a repeated millisecond is skipped.
    smoothed = example.SmoothedClassifier(window=3, min_frames=1)
    rgb = load_rgb(example_images / FIELD)
    first = smoothed.on_frame(np.ascontiguousarray(rgb[..., ::-1]), 1_000)
    assert first.latest.probabilities == Classifier().classify(rgb).probabilities
    assert first.label == "ALL" and smoothed.on_frame(rgb, 1_400, "RGB") is None


class _FakeCamera:
    """Stands in for a camera: the example field in the middle of a wider BGR frame."""

    name = "fake"
    pixel_format = "BGR"
    ended = False

    def __init__(self, rgb):
        self.frame = np.zeros((rgb.shape[0], rgb.shape[1] + 96, 3), dtype=np.uint8)
        self.frame[:, 48:-48] = rgb[..., ::-1]

    def read(self):
        return self.frame.copy(), None  # no timestamp of its own, like an OpenCV camera

    def close(self):
        pass


def test_raspberry_pi_camera_headless_loop(example_images, classifier, monkeypatch, capsys):
    example = _example(example_images, "raspberry_pi_camera.py")
    # The benign field, which the embedded model v3 refers (p(ALL) about 0.5); a swapped
    # channel makes it out of domain, so any change to the frame shows.
    rgb = load_rgb(example_images / BENIGN)
    camera = _FakeCamera(rgb)
    assert example.centre_square(camera.frame) == (48, 0, rgb.shape[0])
    expected = classifier.classify(rgb)
    monkeypatch.setattr(example, "open_camera", lambda *args: camera)
    assert example.main(["--headless", "--frames", "4", "--every-n-frames", "2"]) == 0
    results = [line for line in capsys.readouterr().out.splitlines() if " ms  " in line]
    assert results and all(line.endswith(example.describe(expected)) for line in results)
    assert example.describe(expected).startswith("refer: uncertain")
    swapped = classifier.classify(np.ascontiguousarray(rgb[..., ::-1]))
    assert example.describe(swapped) != example.describe(expected)
    # The overlay draws on the frame; no camera is exit 1, an unloadable model exit 2.
    latest = example.LatestResult()
    latest.set(expected, None)
    frame, _ = camera.read()
    example.draw_overlay(frame, latest, example.centre_square(frame))
    assert not np.array_equal(frame, camera.frame)

    def no_camera(*args):
        raise example.NoCameraError("no camera found (test)")

    monkeypatch.setattr(example, "open_camera", no_camera)
    assert example.main(["--headless"]) == 1
    assert example.main(["--model", str(example_images / "missing.tflite")]) == 2


# ------------------------------------------------------------------ the READMEs' commands
# The programs run with the commands their READMEs show: a video file instead of a camera,
# the example images instead of a slide (classify_folder.py: tested above).
REPO = Path(__file__).resolve().parents[1]
EXAMPLES_DIR = REPO / "examples"
READMES = [EXAMPLES_DIR / "README.md", EXAMPLES_DIR / "raspberry_pi" / "README.md"]
BENIGN_FILE = EXAMPLES_DIR / "images" / BENIGN
FIELD_FILE = EXAMPLES_DIR / "images" / FIELD
CAMERA = "examples/raspberry_pi_camera.py"
NOT_HERE = {"examples/classify_folder.py"}  # the lab CLI's tests cover it
RESULT_LINE = re.compile(r"^\s*(\d+) ms  (.*)$")


def _module(path: Path):
    return load_script(path, "_example_")


def readme_commands(readme: Path) -> list[tuple[str, list[str]]]:
    """``(command line, argv)`` for every ``python3 examples/...`` line in a bash block."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", readme.read_text(), re.S):
        for line in block.splitlines():
            argv = shlex.split(line, comments=True)
            if len(argv) >= 2 and argv[0] == "python3" and argv[1].startswith("examples/"):
                out.append((line.split(" #")[0].strip(), argv))
    return out


@pytest.fixture(scope="module")
def camera_example():
    return _module(EXAMPLES_DIR / "raspberry_pi_camera.py")


def _no_display_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


# ------------------------------------------------------------------ the README commands
def _check_video(argv, proc, classifier, camera_example, ran):
    """Every printed call is the call on the file the frame came from (lossless video)."""
    assert proc.returncode == 0, proc.stderr
    video = Path(argv[argv.index("--video") + 1])
    shown = ran["videos"][video.name]  # (images, frames per image, fps)
    images, per_image, fps = shown
    calls: dict[int, list[str]] = {}
    for line in proc.stdout.splitlines():
        match = RESULT_LINE.match(line)
        if match:
            frame = round(int(match.group(1)) * fps / 1000)
            calls.setdefault(frame // per_image, []).append(match.group(2))
    assert sorted(calls) == list(range(len(images))), proc.stdout
    for index, image in enumerate(images):
        expected = camera_example.describe(classifier.classify(image))
        assert len(calls[index]) >= 2 and set(calls[index]) == {expected}, (image, calls)
    if "--headless" not in argv:  # no display in the test: said so, then headless
        assert "no preview window" in proc.stderr


def _check_microscope(argv, proc):
    assert proc.returncode == 0, proc.stderr
    window = int(argv[argv.index("--window") + 1]) if "--window" in argv else 15
    min_frames = int(argv[argv.index("--min-frames") + 1]) if "--min-frames" in argv else 5
    moved = [ln.rsplit(" ", 1)[1] for ln in proc.stdout.splitlines() if ln.startswith("---")]
    assert moved == [BENIGN, FIELD]
    calls = [ln for ln in proc.stdout.splitlines() if ln.startswith("t=")]
    assert len(calls) == 24  # 12 simulated frames per image
    frames = [int(re.search(r"last (\d+):", ln).group(1)) for ln in calls]
    # The window starts again on each slide: the old slide's frames never vote.
    assert frames == [min(i % 12 + 1, window) for i in range(24)]
    for first in (0, 12):
        assert all(ln.endswith("-> no call") for ln in calls[first : first + min_frames - 1])
    assert calls[-1].endswith("-> ALL")  # the malignant field wins the window at the end


def _check_api(argv, proc, classifier):
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(ln) for ln in proc.stdout.splitlines()]
    assert len(lines) == len(argv) - 2
    for line in lines:
        expected = classifier.classify(EXAMPLES_DIR.parent / line["path"])
        assert (line["label"], line["probabilities"]) == (
            expected.label,
            expected.probabilities,
        )


@pytest.mark.slow  # about 10 s each: the videos play at their frame rate
@pytest.mark.parametrize("readme", READMES, ids=lambda p: str(p.relative_to(REPO)))
def test_readme_commands_run(readme, tmp_path, classifier, camera_example):
    """Each README's commands, run in its order from a folder where ``examples`` is the
    repository's; camera commands (no ``--video``) are parsed, not run."""
    (tmp_path / "examples").symlink_to(EXAMPLES_DIR)
    ran: dict = {"videos": {}, "programs": set()}
    commands = readme_commands(readme)
    assert commands, f"{readme} shows no python3 examples/... command"
    for line, argv in commands:
        program = argv[1]
        if program in NOT_HERE:
            continue
        if program == CAMERA and "--video" not in argv:
            camera_example.parse_args(argv[2:])  # a typo in an option fails here
            continue
        command = shlex.quote(sys.executable) + line[len("python3") :]
        proc = subprocess.run(
            ["bash", "-c", command],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=180,
            env=_no_display_env(),
        )
        ran["programs"].add(program)
        if program.endswith("make_test_video.py"):
            assert proc.returncode == 0, proc.stderr
            images = [tmp_path / a for a in argv[2:] if a.startswith("examples/images/")]
            images = sorted(images) if any("*" in a for a in argv) else images
            out = argv[argv.index("--out") + 1]
            fps = float(argv[argv.index("--fps") + 1]) if "--fps" in argv else 10.0
            seconds = float(argv[argv.index("--seconds") + 1]) if "--seconds" in argv else 1.5
            per_image = round(fps * seconds)
            assert f"{per_image * len(images)} frames" in proc.stdout
            assert (tmp_path / out).is_file()
            ran["videos"][Path(out).name] = (images, per_image, fps)
        elif program == CAMERA:
            _check_video(argv, proc, classifier, camera_example, ran)
        elif program.endswith("microscope_integration.py"):
            _check_microscope(argv, proc)
        elif program.endswith("api_classify.py"):
            _check_api(argv, proc, classifier)
        elif program.endswith("compare_runs.py"):
            assert proc.returncode == 0 and "OK: same labels" in proc.stdout, proc.stdout
        else:
            pytest.fail(f"{program}: a README command this test does not check")
    assert ran["programs"], f"{readme}: nothing ran"


def test_every_example_program_runs_from_some_readme():
    programs = {argv[1] for readme in READMES for _, argv in readme_commands(readme)}
    shown = {
        str(p.relative_to(REPO))
        for p in [*EXAMPLES_DIR.glob("*.py"), *EXAMPLES_DIR.glob("raspberry_pi/*.py")]
    }
    assert shown - NOT_HERE <= programs, f"not in any README: {shown - NOT_HERE - programs}"
    video_runs = [
        argv for readme in READMES for _, argv in readme_commands(readme) if "--video" in argv
    ]
    assert video_runs, "no README command runs the camera demo on a video file"


# ------------------------------------------------------------------ the camera demo, unit
class _FakePicamera2:
    """Picamera2 as far as the demo uses it, delivering one RGB picture in the memory order
    the Picamera2 manual gives for each format (named after the 32-bit word, so reversed)."""

    rgb: np.ndarray = np.zeros((1, 1, 3), np.uint8)
    ORDER = {  # memory order of the bytes, first byte first
        "XRGB8888": ("B", "G", "R", "X"),
        "XBGR8888": ("R", "G", "B", "X"),
        "RGB888": ("B", "G", "R"),
        "BGR888": ("R", "G", "B"),
    }

    def __init__(self, index):
        self.format = None

    @staticmethod
    def global_camera_info():
        return [{"Model": "fake"}]

    def create_preview_configuration(self, main):
        return main

    def configure(self, config):
        self.format = config["format"]

    def start(self):
        pass

    def capture_array(self):
        planes = {"R": 0, "G": 1, "B": 2}
        channels = [
            self.rgb[..., planes[c]] if c in planes else np.full(self.rgb.shape[:2], 255)
            for c in self.ORDER[self.format]
        ]
        return np.stack(channels, axis=-1).astype(np.uint8)

    def stop(self):
        pass

    def close(self):
        pass


@pytest.mark.parametrize("fmt", ["XRGB8888", "XBGR8888", "RGB888", "BGR888"])
def test_picamera2_formats_reach_the_model_as_rgb(
    fmt, camera_example, classifier, monkeypatch, capsys
):
    # Model v3 refers this benign field; a swapped channel changes the line (out of domain).
    # What matters is the same line for every format.
    from leukedge.engine import preprocess

    # The one framing policy of live frames, shared with `leukedge camera`.
    assert camera_example.crop_centre_square is preprocess.crop_centre_square
    rgb = load_rgb(BENIGN_FILE)
    wide = np.zeros((rgb.shape[0], rgb.shape[1] + 96, 3), np.uint8)
    wide[:, 48:-48] = rgb  # the field in the centre square of a wider frame
    monkeypatch.setattr(_FakePicamera2, "rgb", wide)
    monkeypatch.setitem(sys.modules, "picamera2", types.SimpleNamespace(Picamera2=_FakePicamera2))
    argv = ["--headless", "--frames", "3", "--every-n-frames", "1", "--picamera2-format", fmt]
    assert camera_example.main(argv) == 0
    out = capsys.readouterr().out
    assert (
        f"camera: Picamera2 index 0, pixel format {camera_example.PICAMERA2_PIXEL_FORMATS[fmt]}"
        in out
    )
    calls = {m.group(2) for m in map(RESULT_LINE.match, out.splitlines()) if m}
    assert calls == {camera_example.describe(classifier.classify(rgb))}
    swapped = classifier.classify(np.ascontiguousarray(rgb[..., ::-1]))
    assert calls != {camera_example.describe(swapped)}


def test_result_without_a_call_is_shown_with_its_status(camera_example, classifier):
    ok = classifier.classify(FIELD_FILE)
    assert camera_example.describe(ok) == "ALL 1.00  (ALL 1.00, HEM 0.00)"
    refused = dataclasses.replace(
        ok, status="rejected", reason="out_of_focus", label=None, score=None, probabilities=None
    )
    assert camera_example.describe(refused) == (
        "rejected: out_of_focus  (model, not a call: ALL 1.00, HEM 0.00)"
    )
    line = json.loads(camera_example.as_json(refused, 40, None))
    assert (line["label"], line["status"], line["timestamp_ms"]) == (None, "rejected", 40)
    assert line["model_probabilities"] == ok.model_probabilities and line["error"] is None
    failed = json.loads(camera_example.as_json(None, 80, RuntimeError("decoder")))
    assert (failed["status"], failed["error"], failed["timestamp_ms"]) == ("error", "decoder", 80)
    latest = camera_example.LatestResult()
    latest.set(refused, None)
    frame = np.zeros((120, 160, 3), np.uint8)
    camera_example.draw_overlay(frame, latest, camera_example.centre_square(frame))
    assert frame.any()  # drawn, no exception on a result without a label


def test_camera_demo_exit_codes(tmp_path):
    run = [sys.executable, str(EXAMPLES_DIR / "raspberry_pi_camera.py"), "--headless"]
    missing = subprocess.run(
        [*run, "--video", str(tmp_path / "none.avi")], capture_output=True, text=True, timeout=60
    )
    assert missing.returncode == 1 and "none.avi not found" in missing.stderr
    (tmp_path / "junk.avi").write_bytes(b"not a video")
    junk = subprocess.run(
        [*run, "--video", str(tmp_path / "junk.avi")], capture_output=True, text=True, timeout=60
    )
    assert junk.returncode == 1 and "cannot open" in junk.stderr
    model = subprocess.run(
        [*run, "--model", str(tmp_path / "none.tflite")], capture_output=True, text=True, timeout=60
    )
    assert model.returncode == 2 and "cannot load model" in model.stderr


# ------------------------------------------------------------------ the systemd unit
UNIT = EXAMPLES_DIR / "raspberry_pi" / "leukedge-camera.service"


def _unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read_string(UNIT.read_text())
    return parser


def test_systemd_unit_starts_the_demo_with_options_it_accepts(camera_example):
    unit = _unit()
    assert set(unit.sections()) == {"Unit", "Service", "Install"}
    assert unit["Unit"]["Description"] and unit["Install"]["WantedBy"] == "default.target"
    service = unit["Service"]
    assert service["Restart"] == "on-failure" and service["WorkingDirectory"] == "%h/leukedge"
    argv = shlex.split(service["ExecStart"])
    assert argv[0] == "%h/leukedge/.venv/bin/python" and argv[1] == CAMERA
    assert (REPO / argv[1]).is_file()  # WorkingDirectory is the repository
    args = camera_example.parse_args(argv[2:])
    assert args.headless and args.video is None  # at boot: no display, a real camera


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_systemd_unit_verifies(tmp_path):
    """``systemd-analyze --user verify`` with %h pointing at a home that holds the venv's
    python: no error and no warning (verify exits 0 even on an unknown key)."""
    home = tmp_path / "home"
    (home / "leukedge" / ".venv" / "bin").mkdir(parents=True)
    (home / "leukedge" / ".venv" / "bin" / "python").symlink_to(sys.executable)
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text())
    proc = subprocess.run(
        ["systemd-analyze", "--user", "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "HOME": str(home), "XDG_RUNTIME_DIR": str(runtime)},
    )
    if "Failed to initialize manager" in proc.stderr:
        pytest.skip(f"systemd-analyze cannot run here: {proc.stderr.strip()}")
    assert proc.returncode == 0 and proc.stderr.strip() == "", proc.stderr


def test_microscope_integration_hands_the_sdk_frames_in_their_own_order(classifier):
    example = _module(EXAMPLES_DIR / "microscope_integration.py")
    smoothed = example.SmoothedClassifier(window=3, min_frames=1)
    # ALL 1.00; a swapped channel makes it out of domain (no probabilities: a refusal).
    rgb = load_rgb(FIELD_FILE)
    expected = classifier.classify(rgb).probabilities
    bgrx = np.concatenate([rgb[..., ::-1], np.full(rgb.shape[:2] + (1,), 255, np.uint8)], -1)
    frames = [(rgb[..., ::-1], "BGR"), (rgb, "RGB"), (bgrx, "BGRX")]
    for i, (frame, fmt) in enumerate(frames):
        call = smoothed.on_frame(np.ascontiguousarray(frame), 1_000 * (i + 1), fmt)
        assert call.latest.probabilities == expected, fmt
    assert call.label == "ALL" and call.votes == {"ALL": 3, "HEM": 0, "no call": 0}
    assert smoothed.on_frame(rgb, 3_400, "RGB") is None  # same millisecond: skipped
    with pytest.raises(ValueError, match="pixel_format"):
        smoothed.on_frame(bgrx, 5_000, "BGR")  # 4 channels declared as 3


def test_pi_guide_says_how_to_bring_the_repository_to_the_pi():
    """The Pi guide's install is commands a newcomer can run as written: no placeholder
    (such as ``git clone <this repository>``: the project has no public address); the
    repository folder is copied from the lab PC (rsync, scp) or cloned from it over SSH,
    then installed from its folder."""
    text = (EXAMPLES_DIR / "raspberry_pi" / "README.md").read_text()
    start = text.index("## Install")
    install = text[start : text.index("\n## ", start + 1)]
    code = "\n".join(re.findall(r"```bash\n(.*?)```", install, re.S))
    assert not re.search(r"<[^>\n]+>", code), "a placeholder in the Pi guide's commands"
    assert "rsync -a" in code and "scp -r" in code and "git clone ssh://" in code
    assert "cd ~/leukedge" in code and "python3 -m pip install ." in code
