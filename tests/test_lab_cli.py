"""The CLI a lab uses: ``leukedge classify`` on folders and lists, its CSV/JSONL files under
Ctrl+C and kill, umask, exit codes and group summaries; ``leukedge watch`` with a slowly
written file and a restart; ``leukedge camera`` on a video file.

Runtime only: the embedded model and ``examples/images/`` (copied into temporary folder
trees); no TensorFlow, no ../shared/data.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from leukedge import Classifier, ClassifierOptions

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "images"
FIELD = "WBC-Malignant-Pre-810.jpg"
BENIGN = "WBC-Benign-420.jpg"
CELLS = ("UID_3_4_2_all.bmp", "UID_H10_47_2_hem.bmp")
CLI = [sys.executable, "-m", "leukedge.cli"]


@pytest.fixture(scope="module")
def classifier():
    return Classifier()


def _cli(*args, stdin: str | None = None, umask: int | None = None, cwd=None):
    return subprocess.run(
        [*CLI, *map(str, args)],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        preexec_fn=(lambda: os.umask(umask)) if umask is not None else None,
    )


def _day(root: Path) -> list[Path]:
    """Two slides, nested, with hidden and non-image files and one truncated JPEG; returns
    the images in the order the walk must give them."""
    a, b = root / "slide_A", root / "slide_B"
    (b / "sub").mkdir(parents=True)
    a.mkdir()
    for name in (FIELD, BENIGN):
        shutil.copy(EXAMPLES / name, a / name)
    (a / "cut.jpg").write_bytes((EXAMPLES / FIELD).read_bytes()[:1500])
    for cell in CELLS:
        shutil.copy(EXAMPLES / cell, b / cell)
    shutil.copy(EXAMPLES / FIELD, b / "sub" / "f.png.jpg")
    shutil.copy(EXAMPLES / FIELD, b / ".preview.jpg")
    (root / "notes.txt").write_text("stained 09:10")
    return sorted(
        [a / FIELD, a / BENIGN, a / "cut.jpg", *(b / c for c in CELLS), b / "sub" / "f.png.jpg"]
    )


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_folder_to_csv_and_jsonl_with_groups(tmp_path, classifier):
    images = _day(tmp_path / "day")
    out = tmp_path / "out"
    proc = _cli(
        "classify", tmp_path / "day", "--csv", out / "calls.csv", "--jsonl", out / "calls.jsonl",
        "--group-by", "slide", "--group-csv", out / "slides.csv", umask=0o022,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr  # the truncated JPEG
    records = _jsonl(out / "calls.jsonl")
    assert [r["path"] for r in records] == [str(p) for p in images]
    sha = classifier.model_sha256
    for record in records:
        assert (record["model"], record["model_sha256"]) == ("leukedge_default", sha)
        assert record["model_version"] == classifier.metadata.version
        if record["path"].endswith("cut.jpg"):
            assert (record["status"], record["reason"], record["label"]) == (
                "error", "decode_error", None,
            )  # fmt: skip
            continue
        expected = classifier.classify(record["path"])
        assert (record["status"], record["reason"]) == (expected.status, expected.reason)
        assert record["error"] is None and record["label"] == expected.label
        assert record["probabilities"] == expected.probabilities
        assert record["model_probabilities"] == expected.model_probabilities
    # The default model v3 refers the benign field (int8 p(ALL) about 0.5), calls the
    # malignant one ALL and rejects the two C-NMC cells (segmented cells on black); the
    # truncated JPEG is an error.
    assert [(r["status"], r["label"]) for r in records] == [
        ("refer", None), ("ok", "ALL"), ("error", None),
        ("rejected", None), ("rejected", None), ("ok", "ALL"),
    ]  # fmt: skip
    with open(out / "calls.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["path"] for r in rows] == [r["path"] for r in records]
    for row, record in zip(rows, records, strict=True):
        assert row["status"] == record["status"] and row["model_sha256"] == sha
        # The CSV rounds to the int8 output's resolution (steps of 1/256: 4 decimals); the
        # JSONL keeps the SDK's float.
        if record["probabilities"]:
            assert row["p_ALL"] == f"{record['probabilities']['ALL']:.4f}"
            assert row["score"] == f"{record['score']:.4f}"
        if record["model_probabilities"]:  # rejected ones too: the model's opinion
            assert row["model_p_ALL"] == f"{record['model_probabilities']['ALL']:.4f}"
    for name in ("calls.csv", "calls.jsonl", "slides.csv"):
        assert (out / name).stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in out.iterdir()) == ["calls.csv", "calls.jsonl", "slides.csv"]
    with open(out / "slides.csv", newline="") as handle:
        slides = {r["group"]: r for r in csv.DictReader(handle)}
    assert set(slides) == {"slide_A", "slide_B", "sub"}
    a = slides["slide_A"]
    assert (a["n"], a["n_ok"], a["n_error"], a["n_ALL"]) == ("3", "1", "1", "1")
    # 1 of 1 ok call ALL (the benign field is referred): Wilson's lower bound for p = 1 is
    # n / (n + z²) = 1 / 4.841459, so the interval holds 0.5 and one field is too few for a
    # slide call.
    assert float(a["fraction_ALL"]) == 1.0 and a["call"] == "refer"
    assert (float(a["ci_low"]), float(a["ci_high"])) == pytest.approx((0.206549, 1.0), abs=2e-6)
    p_all = [r["probabilities"]["ALL"] for r in records[:3] if r["probabilities"]]
    assert float(a["mean_p_ALL"]) == pytest.approx(sum(p_all) / 2, abs=1e-5)
    assert "per slide" in proc.stdout and "slide_A" in proc.stdout  # the table
    assert "6 images" in proc.stderr
    assert "ALL 2, HEM 0; ok 2, refer 1, rejected 2, error 1" in proc.stderr
    assert "skipped 1 non-image file (.txt 1), 1 hidden file" in proc.stderr


def test_files_from_stdin_json_lines_no_progress(tmp_path):
    images = _day(tmp_path / "day")
    listing = f"{images[3]}\n\n{images[0]}\n{tmp_path / 'day' / 'slide_B' / 'sub'}\n"
    proc = _cli("classify", "--files-from", "-", "--json", "--progress", stdin=listing)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]  # nothing but JSON
    assert [r["path"] for r in records] == [str(images[3]), str(images[0]), str(images[5])]
    assert "classifying" not in proc.stderr  # never a progress bar with --json


def test_progress_bar_on_request(tmp_path):
    _day(tmp_path / "day")
    proc = _cli("classify", tmp_path / "day" / "slide_B", "--progress")
    assert proc.returncode == 0, proc.stderr
    assert "classifying" in proc.stderr and "3/3" in proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["classify"], "give image files or folders"),
        (["classify", "EMPTY"], "no images to classify"),
        (["classify", "EMPTY", "--group-csv", "g.csv"], "--group-csv needs --group-by"),
        (["classify", "--files-from", "NOLIST"], "cannot read --files-from"),
        (["classify", "EMPTY", "--bogus"], "No such option"),
    ],
)
def test_usage_errors_exit_2(tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    subs = {"EMPTY": tmp_path / "empty", "NOLIST": tmp_path / "nolist.txt"}
    proc = _cli(*[subs.get(a, a) for a in args], cwd=tmp_path)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert not list(tmp_path.glob("*.csv"))


def test_a_dash_is_not_a_file_output(tmp_path):
    """``--csv -`` wrote a file named ``-`` (``--files-from -`` is stdin): refused, exit 2,
    pointing to --json; nothing written, the model's name and version head the table."""
    image = EXAMPLES / BENIGN
    for option in (("--csv",), ("--jsonl",), ("--group-by", "folder", "--group-csv")):
        proc = _cli("classify", image, *option, "-", cwd=tmp_path)
        assert proc.returncode == 2 and "--json" in proc.stderr, proc.stderr
        assert not (tmp_path / "-").exists()
    from leukedge.classifier import default_model_path
    from leukedge.engine.metadata import read_metadata

    meta = read_metadata(default_model_path())
    table = _cli("classify", image, cwd=tmp_path)
    assert f"{meta.name} {meta.version} ({meta.precision})" in table.stdout


def test_outputs_never_overwrite_images_and_repeats_do_not_weigh_twice(tmp_path):
    """``--csv d/*.jpg``: the shell makes the first image the CSV path; leukedge refuses it
    (exit 2) and the image is untouched. A slide given twice (``dup dup/s1``) is classified
    once: its two ALL fields stay a ``refer`` slide, not four fields and a call."""
    d = tmp_path / "d"
    d.mkdir()
    for i in (1, 2, 3):
        shutil.copy(EXAMPLES / FIELD, d / f"field_0{i}.jpg")
    before = (d / "field_01.jpg").read_bytes()
    proc = _cli("classify", "--csv", d / "field_01.jpg", d / "field_02.jpg", d / "field_03.jpg")
    assert proc.returncode == 2 and "image suffix" in proc.stderr, proc.stderr
    assert (d / "field_01.jpg").read_bytes() == before
    proc = _cli("watch", d, "--jsonl", d / "field_01.jpg")
    assert proc.returncode == 2 and "image suffix" in proc.stderr, proc.stderr
    assert (d / "field_01.jpg").read_bytes() == before
    # An output through a symbolic link: written into its target, the link stays.
    target = tmp_path / "nas" / "real.csv"
    target.parent.mkdir()
    target.write_text("old\n")
    (tmp_path / "latest.csv").symlink_to(target)
    proc = _cli("classify", d / "field_02.jpg", "--csv", tmp_path / "latest.csv")
    assert proc.returncode == 2 and "--overwrite" in proc.stderr  # it holds results
    assert target.read_text() == "old\n"
    proc = _cli("classify", d / "field_02.jpg", "--csv", tmp_path / "latest.csv", "--overwrite")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "latest.csv").is_symlink()
    assert target.read_text().startswith("path,")

    s1 = tmp_path / "dup" / "s1"
    s1.mkdir(parents=True)
    for name in ("a.jpg", "b.jpg"):
        shutil.copy(EXAMPLES / FIELD, s1 / name)
    groups = tmp_path / "groups.csv"
    proc = _cli(
        "classify", tmp_path / "dup", s1, "--group-by", "slide", "--group-csv", groups, "--json"
    )
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 2
    assert "2 repeated paths (classified once)" in proc.stderr
    (row,) = list(csv.DictReader(groups.open()))
    assert (row["n"], row["call"]) == ("2", "refer"), row


def test_exit_0_when_every_input_is_classified():
    """Exit 0 when every input got an answer; a rejected or referred input is an answer
    (the default model rejects the two C-NMC cells and refers the benign field), not a
    failure."""
    proc = _cli("classify", EXAMPLES)
    assert proc.returncode == 0, proc.stderr
    assert all(name in proc.stdout for name in (FIELD, BENIGN, *CELLS))
    assert "4 images" in proc.stderr and "ok 1, refer 1, rejected 2" in proc.stderr
    assert "failed" not in proc.stderr


def _many(tmp_path: Path, n: int) -> Path:
    """``n`` distinct files (copies: links to one file would be one image, classified once)."""
    folder = tmp_path / "many"
    folder.mkdir()
    data = {i: (EXAMPLES / (FIELD if i else BENIGN)).read_bytes() for i in (0, 1)}
    for i in range(n):
        (folder / f"f{i:05d}.jpg").write_bytes(data[i % 2])
    return folder


def _start_and_wait_for_rows(tmp_path: Path, folder: Path, rows: int, *extra):
    csv_out, jsonl_out = tmp_path / "r.csv", tmp_path / "r.jsonl"
    proc = subprocess.Popen(
        [*CLI, "classify", str(folder), "--csv", str(csv_out), "--jsonl", str(jsonl_out),
         "--workers", "1", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    before = {path: path.read_bytes() if path.exists() else None for path in (csv_out, jsonl_out)}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        partial = list(tmp_path.glob(".r.jsonl.*.partial"))
        if partial and partial[0].read_text().count("\n") >= rows:
            return proc, csv_out, jsonl_out
        # Fail at once, naming the cause, rather than after the time-out: an output
        # written in place (not atomic) or a run that ended before writing the rows.
        changed = [
            p.name for p, old in before.items() if (p.read_bytes() if p.exists() else None) != old
        ]
        if changed:
            proc.kill()
            pytest.fail(f"{', '.join(changed)} written in place while running: not atomic")
        if proc.poll() is not None:
            pytest.fail(
                f"classify exited {proc.returncode} before {rows} rows: {proc.stderr.read()}"
            )
        time.sleep(0.02)
    proc.kill()
    pytest.fail(f"no {rows} rows in a temporary .r.jsonl.*.partial file after 60 s")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_keeps_finished_rows_and_leaves_no_temp_file(tmp_path, signum):
    folder = _many(tmp_path, 3000)
    groups = tmp_path / "groups.csv"
    review = tmp_path / "review"
    proc, csv_out, jsonl_out = _start_and_wait_for_rows(
        tmp_path, folder, 10, "--group-by", "folder", "--group-csv", groups, "--report", review
    )
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, stderr
    records = _jsonl(jsonl_out)  # every line complete JSON
    assert 10 <= len(records) < 3000
    assert [r["path"] for r in records] == [
        str(folder / f"f{i:05d}.jpg") for i in range(len(records))
    ]
    with open(csv_out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["path"] for r in rows] == [r["path"] for r in records]
    assert all(r["status"] in ("ok", "refer") and r["p_ALL"] for r in rows)
    assert csv_out.read_text().endswith("\n")
    assert not list(tmp_path.glob(".*partial"))
    assert "stopped early" in stderr
    # Nor a review page: its slide calls would be made from part of each slide.
    assert "review page not written" in stderr and not (review / "index.html").exists()
    # A slide's call from part of its images would read as the slide's: none is written.
    assert not groups.exists() and "group summary not written" in stderr


def test_kill_leaves_previous_results_untouched(tmp_path):
    folder = _many(tmp_path, 3000)
    (tmp_path / "r.csv").write_text("yesterday's results\n")
    proc, csv_out, jsonl_out = _start_and_wait_for_rows(tmp_path, folder, 5, "--overwrite")
    proc.kill()
    proc.communicate(timeout=60)
    assert csv_out.read_text() == "yesterday's results\n"  # never half-written
    assert not jsonl_out.exists()
    for partial in tmp_path.glob(".*partial"):  # what a kill leaves: complete lines only
        assert partial.read_text().endswith("\n")


def test_classify_file_loads_no_progress_watch_or_camera_modules():
    code = (
        "import sys\n"
        "from leukedge import Classifier\n"
        f"Classifier().classify({str(EXAMPLES / BENIGN)!r})\n"
        "before = set(sys.modules)\n"  # what classifying itself needs
        "from leukedge.cli import app\n"
        "try:\n"
        f"    app(['classify', '--json', {str(EXAMPLES / BENIGN)!r}])\n"
        "except SystemExit as e:\n"
        "    assert e.code in (0, None), e.code\n"
        "added = set(sys.modules) - before\n"
        "print('LOADED', [m for m in ('cv2', 'watchdog', 'rich.progress') if m in added])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "LOADED []" in proc.stdout


# ---------------------------------------------------------------- watch
def _wait_lines(path: Path, n: int, timeout: float = 30) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().count("\n") >= n:
            return _jsonl(path)
        time.sleep(0.05)
    pytest.fail(f"{path}: fewer than {n} records after {timeout} s")


def _watch(folder: Path, out: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [*CLI, "watch", str(folder), "--jsonl", str(out), "--settle-ms", "300",
         "--give-up-s", "2.5"],
        stdout=subprocess.PIPE, stderr=open(log, "w"), text=True,
    )  # fmt: skip


def test_watch_waits_for_slow_files_survives_bad_ones_and_resumes(tmp_path, classifier):
    inbox, out, log = tmp_path / "inbox", tmp_path / "calls.jsonl", tmp_path / "log"
    inbox.mkdir()
    shutil.copy(EXAMPLES / BENIGN, inbox / "0_before_start.jpg")
    proc = _watch(inbox, out, log)
    try:
        assert [r["path"] for r in _wait_lines(out, 1)] == [str(inbox / "0_before_start.jpg")]
        data = (EXAMPLES / FIELD).read_bytes()
        with open(inbox / "1_slow.jpg", "wb") as handle:  # a camera pausing mid-write
            handle.write(data[: len(data) // 3])
            handle.flush()
            time.sleep(1.0)  # longer than --settle-ms: stable, but does not decode yet
            handle.write(data[len(data) // 3 :])
        (inbox / "2_bad.jpg").write_bytes(b"not an image at all")
        (inbox / "notes.txt").write_text("ignored")
        (inbox / ".3_writing.jpg").write_bytes(data)  # hidden: a temporary name, ignored
        records = _wait_lines(out, 3)
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
        assert proc.returncode == 0
    finally:
        proc.kill()
    slow = records[1]
    assert slow["path"] == str(inbox / "1_slow.jpg") and slow["status"] == "ok"
    assert slow["probabilities"] == classifier.classify(EXAMPLES / FIELD).probabilities
    assert records[2]["path"] == str(inbox / "2_bad.jpg") and records[2]["status"] == "error"

    # While stopped: a new image arrives, and the file got a torn last line (a crash).
    shutil.copy(EXAMPLES / CELLS[0], inbox / "4_while_stopped.bmp")
    with open(out, "a") as handle:
        handle.write('{"path": "torn')
    proc = _watch(inbox, out, log)
    try:
        records = _wait_lines(out, 4)
        time.sleep(0.8)  # nothing else may follow
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
        assert proc.returncode == 0
    finally:
        proc.kill()
    records = _jsonl(out)
    names = [Path(r["path"]).name for r in records]
    assert names == ["0_before_start.jpg", "1_slow.jpg", "2_bad.jpg", "4_while_stopped.bmp"]
    assert "incomplete last line" in log.read_text()


# ---------------------------------------------------------------- camera
def _video(path: Path, frames_per_image: int = 3, fps: float = 30.0) -> int:
    cv2 = pytest.importorskip("cv2")
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (224, 224))
    assert writer.isOpened()
    count = 0
    for name in (FIELD, BENIGN, *CELLS):
        frame = cv2.resize(cv2.imread(str(EXAMPLES / name)), (224, 224))
        for _ in range(frames_per_image):
            writer.write(frame)
            count += 1
    writer.release()
    return count


def test_camera_on_a_video_prints_calls_and_saves_snapshots(tmp_path, classifier):
    video = tmp_path / "stage.avi"
    frames = _video(video)
    snaps = tmp_path / "snaps"
    proc = _cli("camera", "--video", video, "--headless", "--snapshot", snaps)
    assert proc.returncode == 0, proc.stderr
    # A second run into the same folder (its timestamps start again from 0) adds its own
    # snapshots beside the first run's instead of replacing them.
    first_run = sorted(snaps.glob("*.json"))
    time.sleep(1.1)  # runs are named to the second
    again = _cli("camera", "--video", video, "--headless", "--snapshot", snaps)
    assert again.returncode == 0, again.stderr
    runs = {p.name.split("frame_")[0] for p in snaps.glob("*.json")}
    assert len(runs) == 2 and all(p.exists() for p in first_run), sorted(runs)
    for sidecar in set(snaps.glob("*.json")) - set(first_run):
        sidecar.unlink()
        sidecar.with_suffix(".png").unlink()
    lines = [line for line in proc.stdout.splitlines() if " ms " in line]
    summary = proc.stderr.strip().splitlines()[-1]
    assert summary.startswith(f"{frames} frames captured, {len(lines)} classified")
    sidecars = sorted(snaps.glob("*.json"))
    assert len(sidecars) == len(lines) >= 1
    for sidecar in sidecars:
        record = json.loads(sidecar.read_text())
        png = Path(record["path"])
        assert png == sidecar.with_suffix(".png") and png.exists()
        again = classifier.classify(png)  # the saved frame is exactly what was classified
        assert record["probabilities"] == again.probabilities
        assert record["label"] == again.label and record["model_sha256"]


def test_camera_stops_after_n_frames_and_reports_a_missing_camera(tmp_path):
    video = tmp_path / "stage.avi"
    _video(video)
    proc = _cli("camera", "--video", video, "--headless", "--frames", "5")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("5 frames captured")
    broken = tmp_path / "broken.avi"
    broken.write_bytes(b"not a video")
    proc = _cli("camera", "--video", broken, "--headless")
    assert proc.returncode == 1 and "cannot open video" in proc.stderr
    # A camera that is not there: leukedge's one error line, not OpenCV's log lines too.
    proc = _cli("camera", "--device", "97", "--headless", "--frames", "1")
    assert (
        proc.returncode == 1 and proc.stderr.strip() == "error: cannot open camera 97 with OpenCV"
    )
    # A file OpenCV opens but gets no frame from (a text file named .png): exit 1 too.
    text = tmp_path / "notes.png"
    text.write_text("not an image, not a video")
    proc = _cli("camera", "--video", text, "--headless")
    assert proc.returncode == 1, proc.stderr
    assert "cannot open video" in proc.stderr or "no frame could be read" in proc.stderr


def test_overlay_draws_the_call():
    np = pytest.importorskip("numpy")
    from leukedge.lab.camera import draw_overlay, result_text

    record = {"label": "ALL", "probabilities": {"ALL": 0.97, "HEM": 0.03}, "status": "ok"}
    assert result_text(record, "ALL") == "ALL  p(ALL) 0.97  ok"
    refer = {"label": None, "probabilities": {"ALL": 0.55, "HEM": 0.45}, "status": "refer",
             "reason": "uncertain"}  # fmt: skip
    assert result_text(refer, "ALL") == "refer (uncertain)  p(ALL) 0.55"
    frame = np.zeros((240, 320, 3), np.uint8)
    draw_overlay(frame, record, "ALL")
    red = frame[..., 2] > 150
    assert red.any() and not frame[..., 1][red].max() > 100  # ALL is drawn in red


def test_statuses_flow_into_files_groups_and_table(tmp_path, classifier):
    slide = tmp_path / "s1"
    slide.mkdir()
    for name in (FIELD, BENIGN):
        shutil.copy(EXAMPLES / name, slide / name)
    from PIL import Image

    Image.open(EXAMPLES / FIELD).crop((0, 0, 60, 60)).save(slide / "tiny.png")  # too small
    # An operating point of our own whose band holds BENIGN's p(ALL) (about 0.5 for model
    # v3 on any CPU measured; 0.455 on LiteRT's reference kernels): refer.
    band = ("--threshold", "0.3", "--refer-band", "0.2,0.7")
    proc = _cli(
        "classify", slide, *band, "--csv", tmp_path / "c.csv", "--group-by", "slide",
        "--group-csv", tmp_path / "g.csv",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr  # refer and rejected are answers, not failures
    with open(tmp_path / "c.csv", newline="") as handle:
        rows = {Path(r["path"]).name: r for r in csv.DictReader(handle)}
    benign, field, tiny = rows[BENIGN], rows[FIELD], rows["tiny.png"]
    assert (benign["status"], benign["reason"], benign["label"]) == ("refer", "uncertain", "")
    # The CSV shows the SDK's own p(ALL) under the same operating point (4 decimals).
    same = Classifier(ClassifierOptions(decision_threshold=0.3, refer_band=(0.2, 0.7)))
    expected = same.classify(slide / BENIGN).probabilities["ALL"]
    assert benign["p_ALL"] == f"{expected:.4f}" and 0.2 <= expected < 0.7
    assert (field["status"], field["label"]) == ("ok", "ALL")
    assert (tiny["status"], tiny["reason"], tiny["label"], tiny["p_ALL"]) == (
        "rejected", "too_small", "", "",
    )  # fmt: skip
    assert tiny["model_label"] and float(tiny["model_p_ALL"]) > 0  # the model's opinion, apart
    assert (tiny["quality_height"], tiny["quality_width"]) == ("60", "60")
    with open(tmp_path / "g.csv", newline="") as handle:
        (group,) = list(csv.DictReader(handle))
    assert (group["n"], group["n_ok"], group["n_refer"], group["n_rejected"]) == (
        "3",
        "1",
        "1",
        "1",
    )
    assert (group["n_ALL"], float(group["ci_low"])) == ("1", pytest.approx(0.206549, abs=2e-6))
    p_all = [float(benign["p_ALL"]), float(field["p_ALL"])]  # ok and refer; not rejected
    assert float(group["mean_p_ALL"]) == pytest.approx(sum(p_all) / 2, abs=1e-5)
    assert (group["call"], group["call_reason"]) == ("refer", "2 of 3 images not ok (> 0.5)")
    assert "ok 1, refer 1, rejected 1" in proc.stderr
    table = _cli("classify", slide, *band)
    lines = {name: next(line for line in table.stdout.splitlines() if name in line)
             for name in (BENIGN, "tiny.png")}  # fmt: skip
    assert "│ refer " in lines[BENIGN] and "│ uncertain " in lines[BENIGN]
    assert "│ rejected " in lines["tiny.png"] and "│ too_small " in lines["tiny.png"]


def test_group_by_subject_without_subjects_is_refused_or_gets_no_call(tmp_path):
    """Fields named without a C-NMC subject are not one subject: all of them, refused before
    any work (exit 2, nothing written); some of them, a warning with their count and a
    ``(none)`` row without a group call."""
    fields = tmp_path / "fields"
    fields.mkdir()
    for name in (FIELD, BENIGN):
        shutil.copy(EXAMPLES / name, fields / name)
    calls = tmp_path / "calls.csv"
    refused = _cli("classify", fields, "--group-by", "subject", "--csv", calls)
    assert refused.returncode == 2 and refused.stdout == "", refused.stderr
    assert "none of the 2 images has a group" in refused.stderr
    assert "--group-by slide" in refused.stderr and not calls.exists()
    mixed = tmp_path / "mixed"
    shutil.copytree(fields, mixed)
    for cell in CELLS:
        shutil.copy(EXAMPLES / cell, mixed / cell)
    groups = tmp_path / "subjects.csv"
    proc = _cli("classify", mixed, "--group-by", "subject", "--group-csv", groups)
    assert proc.returncode == 0, proc.stderr
    assert (
        "warning: 2 of 4 images have no C-NMC subject in their file name (UID_<subject>_...): "
        "they are summarised as '(none)' with no group call"
    ) in proc.stderr
    with open(groups, newline="") as handle:
        rows = {row["group"]: row for row in csv.DictReader(handle)}
    assert set(rows) == {"(none)", "3", "H10"}
    assert rows["(none)"]["n"] == "2" and rows["(none)"]["call"] == ""
    assert rows["(none)"]["call_reason"].startswith("no group call")


def test_camera_classifies_the_centre_square_of_a_wide_frame(tmp_path, classifier):
    """One framing policy for every live frame (README, "Camera"): the centre square
    (:func:`leukedge.engine.preprocess.crop_centre_square`), in ``leukedge camera`` as in the Pi
    example, never the whole frame squashed to a square. A 4:3-ish frame with magenta
    margins: the classified (and saved) square is the field without the margins."""
    cv2 = pytest.importorskip("cv2")
    import numpy as np

    import leukedge.lab.camera
    from leukedge.engine.preprocess import centre_square, crop_centre_square

    wide = np.zeros((224, 320, 3), np.uint8)
    assert centre_square(wide) == (48, 0, 224) and centre_square(wide[:, :200]) == (0, 12, 200)
    assert crop_centre_square(wide).base is wide  # a view, no copy
    assert leukedge.lab.camera.crop_centre_square is crop_centre_square
    field = cv2.imread(str(EXAMPLES / FIELD))
    wide[:] = (255, 0, 255)
    wide[:, 48:-48] = field
    video = tmp_path / "wide.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (320, 224))
    for _ in range(3):
        writer.write(wide)
    writer.release()
    snaps = tmp_path / "snaps"
    proc = _cli("camera", "--video", video, "--headless", "--snapshot", snaps)
    assert proc.returncode == 0, proc.stderr
    pngs = sorted(snaps.glob("*.png"))
    assert pngs
    for png in pngs:
        saved = cv2.imread(str(png))
        assert saved.shape == (224, 224, 3)
        # The field (within MJPG's loss), no magenta margin.
        assert np.abs(saved.astype(int) - field).mean() < 8
