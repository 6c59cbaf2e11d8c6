"""Nothing lost in silence, and memory bounded for the whole run (issue 19).

- Every output (``classify --csv/--jsonl/--group-csv``, ``watch --jsonl``, ``camera
  --snapshot``) is checked before any image is read: one that cannot be written, or that
  would replace earlier results without ``--overwrite``, exits 2 naming the path.
- A write that fails mid-run (a full disk) ends the run with an error and a non-zero exit,
  never a traceback or exit 0.
- Decodes are held in one pixel budget shared by the worker threads (``max_pixels``), so
  the pixels decoded at once never exceed it, whatever the number of workers.

The tests run as root in CI, where permission bits do not stop writes: a file in the way
(``notes.txt/out.csv``) is refused for everyone, and a folder the process may not write is
simulated by :func:`os.access` answering no (the check asks exactly that); a real read-only
folder is tested where the tests do not run as root. Runtime only: the embedded model and
``examples/images/``.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from leukedge import Classifier, ClassifierOptions
from leukedge.engine.preprocess import PixelBudget, decode_size, load_resized, load_rgb, resize_rgb
from leukedge.lab.batch import classify_paths
from leukedge.lab.inputs import check_output_folder, check_output_paths

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "images"
FIELD = "WBC-Malignant-Pre-810.jpg"
BENIGN = "WBC-Benign-420.jpg"
CLI = [sys.executable, "-m", "leukedge.cli"]


def _cli(*args, cwd=None):
    return subprocess.run(
        [*CLI, *map(str, args)], capture_output=True, text=True, timeout=120, cwd=cwd
    )


def _slide(root: Path, n: int = 3) -> Path:
    slide = root / "slide_1"
    slide.mkdir(parents=True)
    for i in range(n):
        shutil.copy(EXAMPLES / (FIELD if i % 2 else BENIGN), slide / f"f{i}.jpg")
    return slide


# ---------------------------------------------------------------- checked before any work
def test_outputs_that_cannot_be_written_are_refused_before_any_image_is_read(tmp_path):
    """A file in the way of an output's folder: the group CSV crashed with a traceback after
    every image was classified; watch crashed; camera saved no snapshot and exited 0."""
    slide = _slide(tmp_path)
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    blocked = tmp_path / "notes.txt"
    runs = {
        "--group-csv": ("classify", slide, "--group-by", "slide", "--group-csv",
                        blocked / "g.csv"),
        "--csv": ("classify", slide, "--csv", blocked / "sub" / "c.csv"),
        "--jsonl": ("watch", slide, "--jsonl", blocked / "calls.jsonl"),
        "--snapshot": ("camera", "--video", tmp_path / "no_video.avi", "--headless",
                       "--snapshot", blocked / "snaps"),
    }  # fmt: skip
    (tmp_path / "no_video.avi").write_bytes(b"not a video: opening it would exit 1")
    for option, args in runs.items():
        proc = _cli(*args)
        assert proc.returncode == 2, (option, proc.stderr)
        (line,) = proc.stderr.strip().splitlines()  # one line, no traceback, no engine
        assert line.startswith(f"error: {option} ") and "is not a folder" in line, line
        assert str(blocked) in line and proc.stdout == ""
    assert not list(tmp_path.rglob("*.csv")) and not list(tmp_path.rglob(".*partial"))
    proc = _cli("bench", "--runs", "1", "--threads", "1", "--out", blocked / "b.json")
    assert proc.returncode == 2 and "error: --out " in proc.stderr, proc.stderr
    assert "is not a folder" in proc.stderr and proc.stdout == ""  # nothing measured


def test_a_folder_without_write_permission_is_refused_by_name(tmp_path, monkeypatch):
    """What ``os.access`` says decides (permissions, ACLs, read-only mounts; root too on a
    read-only mount): simulated here, since permission bits do not stop root."""
    out = tmp_path / "results"
    out.mkdir()
    (out / "old.jsonl").write_text('{"path": "a.jpg"}\n')
    import leukedge.lab.inputs

    def access(path, mode, **kwargs):
        return Path(path) != out  # the folder says no, everything else yes

    monkeypatch.setattr(leukedge.lab.inputs.os, "access", access)
    cases = [
        (lambda: check_output_paths({"--csv": out / "c.csv"}), "--csv"),
        (lambda: check_output_paths({"--group-csv": out / "new" / "g.csv"}), "--group-csv"),
        (lambda: check_output_folder("--snapshot", out / "snaps"), "--snapshot"),
        (lambda: check_output_folder("--snapshot", out), "--snapshot"),
    ]
    for check, option in cases:
        with pytest.raises(ValueError, match=f"^{option} .*cannot create files in {out}"):
            check()
    # watch appends in place: the file itself must be writable, not its folder.
    check_output_paths({"--jsonl": out / "old.jsonl"}, existing="append")
    monkeypatch.setattr(leukedge.lab.inputs.os, "access", lambda path, mode, **kw: False)
    with pytest.raises(ValueError, match="cannot write to the file"):
        check_output_paths({"--jsonl": out / "old.jsonl"}, existing="append")
    monkeypatch.undo()
    check_output_paths({"--csv": out / "c.csv"})
    check_output_folder("--snapshot", out / "snaps")
    assert not (out / "snaps").exists()  # checking creates nothing


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores chmod")
def test_a_read_only_folder_is_refused_for_a_normal_user(tmp_path):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    try:
        with pytest.raises(ValueError, match="permission denied"):
            check_output_paths({"--group-csv": out / "g.csv"})
        with pytest.raises(ValueError, match="permission denied"):
            check_output_folder("--snapshot", out / "snaps")
    finally:
        out.chmod(0o755)


def test_existing_results_are_replaced_only_with_overwrite(tmp_path):
    slide = _slide(tmp_path, 1)
    old = {name: f"yesterday's {name}\n" for name in ("c.csv", "r.jsonl", "g.csv")}
    for name, text in old.items():
        (tmp_path / name).write_text(text)
    args = ("classify", slide, "--group-by", "slide")
    for option, name in (("--csv", "c.csv"), ("--jsonl", "r.jsonl"), ("--group-csv", "g.csv")):
        proc = _cli(*args, option, tmp_path / name)
        assert proc.returncode == 2, proc.stderr
        assert f"error: {option} {tmp_path / name}: exists" in proc.stderr
        assert "--overwrite" in proc.stderr and proc.stdout == ""
        assert (tmp_path / name).read_text() == old[name]
    (tmp_path / "empty.csv").touch()  # an empty file holds no results: replaced
    proc = _cli(*args, "--csv", tmp_path / "empty.csv")
    assert proc.returncode == 0 and (tmp_path / "empty.csv").read_text().startswith("path,")
    proc = _cli(*args, "--overwrite", "--csv", tmp_path / "c.csv", "--group-csv",
                tmp_path / "g.csv")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "c.csv").read_text().startswith("path,")
    assert (tmp_path / "g.csv").read_text().startswith("group,")


# ---------------------------------------------------------------- failures mid-run
def _disk_full_after(monkeypatch, target, calls: int, name: str = "write"):
    """``target.<name>`` raises ENOSPC from its ``calls``-th call on."""
    original = getattr(target, name)
    count = {"n": 0}

    def failing(*args, **kwargs):
        count["n"] += 1
        if count["n"] >= calls:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return original(*args, **kwargs)

    monkeypatch.setattr(target, name, failing)


class _FullDisk:
    """A file whose ``calls``-th ``write`` and those after fail with ENOSPC."""

    def __init__(self, file, calls: int):
        self.file, self.left = file, calls

    def write(self, data):
        self.left -= 1
        if self.left <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self.file.write(data)

    def __getattr__(self, name):
        return getattr(self.file, name)


def _full_disk(monkeypatch, calls: int) -> None:
    """Every :class:`~leukedge.lab.outputs.AtomicTextFile` opened from now on is on a disk that
    is full from its ``calls``-th write."""
    from leukedge.lab.outputs import AtomicTextFile

    opened = AtomicTextFile.__init__

    def open_on_a_full_disk(self, *args, **kwargs):
        opened(self, *args, **kwargs)
        self._file = _FullDisk(self._file, calls)

    monkeypatch.setattr(AtomicTextFile, "__init__", open_on_a_full_disk)


def test_a_full_disk_mid_run_stops_classify_with_an_error(tmp_path, monkeypatch):
    from leukedge.cli import app

    slide = _slide(tmp_path, 4)
    csv_out = tmp_path / "c.csv"
    _full_disk(monkeypatch, 3)  # the header and one row fit
    result = CliRunner().invoke(app, ["classify", str(slide), "--csv", str(csv_out)])
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)  # no traceback
    assert f"error: cannot write {csv_out}: No space left on device" in result.output
    with open(csv_out, newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 1  # what was written is kept


def test_a_group_summary_that_cannot_be_written_is_an_error(tmp_path, monkeypatch):
    from leukedge.cli import app

    slide = _slide(tmp_path, 2)
    groups = tmp_path / "g.csv"
    _full_disk(monkeypatch, 1)
    result = CliRunner().invoke(
        app, ["classify", str(slide), "--group-by", "slide", "--group-csv", str(groups)]
    )
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert f"error: cannot write {groups}: No space left on device" in result.output
    assert "not saved" in result.output and not groups.exists()


def test_a_full_disk_stops_watch_with_the_file_named(tmp_path, monkeypatch):
    import leukedge.lab.watch
    from leukedge.lab.stopping import StopRequest
    from leukedge.lab.watch import Watcher, WatchOptions

    inbox = _slide(tmp_path, 2)
    out = tmp_path / "calls.jsonl"
    _disk_full_after(monkeypatch, leukedge.lab.watch.os, 2, "fsync")  # the first record fits
    watcher = Watcher(Classifier(), WatchOptions(inbox, out, settle_ms=0, poll_s=0.02))
    stop = StopRequest()
    guard = threading.Timer(60, stop.request)  # a broken check must not hang the suite
    guard.start()
    try:
        with pytest.raises(OSError) as raised:
            watcher.run(stop)
    finally:
        guard.cancel()
    assert not stop, "watch went on after a record could not be written"
    assert raised.value.filename == str(out) and raised.value.errno == errno.ENOSPC
    assert watcher.count == 1 and len(out.read_text().splitlines()) >= 1


def test_a_snapshot_that_cannot_be_saved_stops_camera_with_exit_1(tmp_path, monkeypatch):
    cv2 = pytest.importorskip("cv2")
    import leukedge.lab.camera
    from leukedge.cli import app

    video = tmp_path / "stage.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (224, 224))
    frame = cv2.resize(cv2.imread(str(EXAMPLES / FIELD)), (224, 224))
    for _ in range(60):
        writer.write(frame)
    writer.release()
    _disk_full_after(monkeypatch, leukedge.lab.camera, 2, "save_snapshot")
    snaps = tmp_path / "snaps"
    result = CliRunner().invoke(
        app, ["camera", "--video", str(video), "--headless", "--snapshot", str(snaps)]
    )
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert "error: snapshot not saved" in result.output and "No space left" in result.output
    assert "1 snapshots saved before" in result.output
    captured = int(result.output.split(" frames captured")[0].split()[-1])
    assert captured < 60  # stopped, not played to the end


@pytest.mark.skipif(os.name != "posix", reason="RLIMIT_FSIZE is POSIX")
def test_a_real_write_failure_keeps_whole_records_and_exits_1(tmp_path):
    """A file-size limit (``ulimit -f``) makes real writes fail mid-run, for root too:
    classify and watch stop with exit 1 naming the file, and the files hold every complete
    record before the failure and no partial line (the CSV is still renamed into place)."""
    import resource

    slide = _slide(tmp_path, 4)

    def limited(*args):
        return subprocess.run(
            [*CLI, *map(str, args)], capture_output=True, text=True, timeout=90, cwd=tmp_path,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (1500, 1500)),
        )  # fmt: skip

    proc = limited("classify", slide, "--csv", "c.csv")
    assert proc.returncode == 1, proc.stderr
    assert f"error: cannot write {tmp_path / 'c.csv'}: File too large" in proc.stderr
    text = (tmp_path / "c.csv").read_text()
    rows = list(csv.DictReader(text.splitlines()))
    assert text.endswith("\n") and 1 <= len(rows) < 4 and all(r["model_sha256"] for r in rows)
    assert not list(tmp_path.glob(".*partial"))
    proc = limited("watch", slide, "--jsonl", "calls.jsonl", "--settle-ms", "0")
    assert proc.returncode == 1, proc.stderr
    assert "error: cannot write calls.jsonl: File too large" in proc.stderr
    lines = (tmp_path / "calls.jsonl").read_text().splitlines(keepends=True)
    assert 1 <= len(lines) < 4 and all(json.loads(line)["path"] for line in lines)
    assert lines[-1].endswith("\n")


# ---------------------------------------------------------------- memory: the pixel budget
def test_pixel_budget_never_holds_more_than_its_limit():
    """Claims from many threads never hold more than the limit together; a claim larger
    than the limit runs alone; nothing deadlocks and everything is given back."""
    budget = PixelBudget(1000)
    held, violations, lock = [0], [], threading.Lock()
    sizes = [100, 300, 700, 1000, 50, 2500, 400, 600] * 4  # 2500: larger than the budget

    def work(pixels: int) -> None:
        with budget.claim() as reserve:
            reserve(pixels)
            with lock:
                held[0] += pixels
                if held[0] > budget.limit and held[0] != pixels:
                    violations.append((pixels, held[0]))
            time.sleep(0.002)
            with lock:
                held[0] -= pixels

    threads = [threading.Thread(target=work, args=(s,)) for s in sizes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)  # no deadlock
    assert violations == []
    assert budget.in_use == 0 and budget.peak == 2500  # the oversized claim, alone


def test_workers_never_decode_more_pixels_at_once_than_max_pixels(tmp_path, monkeypatch):
    """A fake decoder records the pixels being decoded at once by 4 workers: never more
    than ``max_pixels``, while images that fit together still decode in parallel."""
    import leukedge.engine.preprocess

    folder = tmp_path / "big"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):  # 0.24 MP each
        Image.fromarray(rng.integers(0, 256, (400, 600, 3), np.uint8)).save(folder / f"{i}.png")
    paths = sorted(folder.iterdir())
    real = leukedge.engine.preprocess._decode_resized
    state = {"now": 0, "peak": 0, "most_at_once": 0, "at_once": 0}
    lock = threading.Lock()

    def recording_decode(pil, path, size):
        pixels = pil.width * pil.height
        with lock:
            state["now"] += pixels
            state["at_once"] += 1
            state["peak"] = max(state["peak"], state["now"])
            state["most_at_once"] = max(state["most_at_once"], state["at_once"])
        time.sleep(0.1)  # a slow decode: others would start meanwhile
        try:
            return real(pil, path, size)
        finally:
            with lock:
                state["now"] -= pixels
                state["at_once"] -= 1

    monkeypatch.setattr(leukedge.engine.preprocess, "_decode_resized", recording_decode)
    classifier = Classifier(ClassifierOptions(max_pixels=500_000))  # two at a time
    outcomes = list(classify_paths(classifier, paths, workers=4))
    assert all(o.error is None for o in outcomes)
    assert state["peak"] <= 500_000, state
    assert state["most_at_once"] == 2, state  # bounded, not serialised
    assert classifier.pixel_budget.peak <= 500_000


def test_cli_max_pixels_is_wired(tmp_path):
    proc = _cli("classify", EXAMPLES / BENIGN, "--json", "--max-pixels", "50000")
    assert proc.returncode == 1, proc.stderr
    record = json.loads(proc.stdout)
    assert (record["status"], record["reason"]) == ("error", "too_large")
    assert "0.05 MP limit (max_pixels=50000)" in record["message"]


def test_resizing_without_a_full_size_array_gives_the_same_pixels(tmp_path):
    """``load_resized`` (the classifier's path) equals ``load_rgb`` then ``resize_rgb``
    for every 8-bit kind of file, rotated and reduced JPEGs included."""
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (300, 500, 3), np.uint8)
    image = Image.fromarray(rgb)
    image.save(tmp_path / "rgb.png")
    image.convert("RGBA").save(tmp_path / "rgba.png")
    image.convert("L").save(tmp_path / "grey.png")
    image.convert("P").save(tmp_path / "palette.png")
    exif = image.getexif()
    exif[0x0112] = 6  # stored rotated
    image.save(tmp_path / "rotated.jpg", exif=exif, quality=90)
    Image.fromarray(np.tile(rgb, (4, 4, 1))).save(tmp_path / "large.jpg", quality=90)
    files = [*sorted(tmp_path.iterdir()), EXAMPLES / FIELD, EXAMPLES / "UID_3_4_2_all.bmp"]
    size = (224, 224)
    for path in files:
        full = load_rgb(path, min_size=decode_size(size))
        resized, decoded = load_resized(path, size, min_size=decode_size(size))
        assert np.array_equal(resized, resize_rgb(full, size)), path.name
        assert decoded == full.shape[:2], path.name


def _peak_traced(fn) -> int:
    """Peak bytes Python and NumPy allocate during ``fn()`` (``tracemalloc``; Pillow's own
    image memory is not traced, its ``tobytes`` copies are)."""
    import tracemalloc

    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_large_images_are_decoded_without_full_size_copies(tmp_path):
    """Memory, not time: an 8-bit file reaches the model's size without a full-size array;
    16-bit samples are scaled in bands, without a full-size float copy."""
    from leukedge.engine.preprocess import _pil_to_rgb, _scale_16bit

    height, width = 1500, 2000
    rng = np.random.default_rng(2)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), np.uint8)).save(tmp_path / "f.png")
    full_rgb = height * width * 3  # bytes of the full-size uint8 array
    peak = _peak_traced(lambda: load_resized(tmp_path / "f.png", (224, 224)))
    assert peak < full_rgb / 2, peak
    samples = rng.integers(0, 4096, (height, width, 3), np.uint16)
    peak = _peak_traced(lambda: _scale_16bit(samples, 4095, "x"))
    assert peak < full_rgb * 4 / 2, peak  # well under one float32 copy of the image
    floats = Image.fromarray(rng.random((height, width), dtype=np.float32), mode="F")
    peak = _peak_traced(lambda: _pil_to_rgb(floats, "x", None))
    # Measured 15 bytes per pixel (Pillow's float32 bytes, joined from chunks: 8; grey and
    # RGB results: 4; bands); with full-size float64 copies 24.
    assert peak < height * width * 20, peak


def test_the_command_allocates_large_images_in_blocks_the_system_gets_back(monkeypatch):
    """Pillow blocks above glibc's largest mmap threshold (32 MiB): a freed decode goes
    back to the system instead of staying in a worker thread's arena. Set by the command
    (process-wide), unless the user set ``PILLOW_BLOCK_SIZE``; the SDK leaves it alone."""
    from leukedge.cli import app
    from leukedge.engine.preprocess import LARGE_DECODE_BLOCK_BYTES

    before = Image.core.get_block_size()
    try:
        Image.core.set_block_size(1 << 24)
        monkeypatch.setenv("PILLOW_BLOCK_SIZE", "16m")
        CliRunner().invoke(app, ["classify", str(EXAMPLES / BENIGN), "--json"])
        assert Image.core.get_block_size() == 1 << 24  # the user's choice stands
        monkeypatch.delenv("PILLOW_BLOCK_SIZE")
        Classifier().classify(EXAMPLES / BENIGN)
        assert Image.core.get_block_size() == 1 << 24  # not the SDK's business
        result = CliRunner().invoke(app, ["classify", str(EXAMPLES / BENIGN), "--json"])
        assert result.exit_code == 0, result.output
        assert Image.core.get_block_size() == LARGE_DECODE_BLOCK_BYTES > 32 << 20
    finally:
        Image.core.set_block_size(before)
