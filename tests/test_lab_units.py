"""The lab workflow's parts, one at a time: folder walking, ordered parallel classification,
records, atomic CSV/JSONL writers, group statistics (Wilson interval by hand) and group keys.

Runtime only: the embedded model and ``examples/images/``; no TensorFlow, no ../shared/data.
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import shutil
import threading
import time
from pathlib import Path

import pytest

from leukedge import Classifier
from leukedge.engine.preprocess import ImageDecodeError, load_rgb
from leukedge.lab.batch import classify_paths, default_workers, ordered_map
from leukedge.lab.groups import (
    NO_CALL,
    NO_GROUP,
    UNMAPPED,
    GroupMap,
    GroupRule,
    group_key,
    summarise,
    summarise_all,
    summary_columns,
    ungrouped,
    wilson_interval,
)
from leukedge.lab.inputs import (
    check_is_a_record_file,
    check_output_paths,
    collect_inputs,
    read_path_list,
    walk_images,
)
from leukedge.lab.outputs import AtomicTextFile, CsvWriter, JsonLinesWriter, csv_columns
from leukedge.lab.records import (
    ModelInfo,
    error_record,
    probability_decimals,
    result_record,
    status_of,
)
from leukedge.lab.report import record_line
from leukedge.lab.subjects import parse_subject

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "images"
FIELD = "WBC-Malignant-Pre-810.jpg"
BENIGN = "WBC-Benign-420.jpg"
CELLS = ("UID_3_4_2_all.bmp", "UID_H10_47_2_hem.bmp")


@pytest.fixture(scope="module")
def classifier():
    return Classifier()


def slide_tree(root: Path) -> dict[str, list[Path]]:
    """A technician's day: two slides, a nested folder, hidden files, a text file and a
    truncated JPEG. Returns the images a walk must find (sorted) and what it must skip."""
    a, b = root / "slide_A", root / "slide_B"
    (b / "sub").mkdir(parents=True)
    (root / ".thumbs").mkdir()
    a.mkdir()
    shutil.copy(EXAMPLES / FIELD, a / FIELD)
    shutil.copy(EXAMPLES / BENIGN, a / BENIGN)
    (a / "cut.jpg").write_bytes((EXAMPLES / FIELD).read_bytes()[:1500])
    for cell in CELLS:
        shutil.copy(EXAMPLES / cell, b / cell)
    shutil.copy(EXAMPLES / BENIGN, b / "sub" / "field.JPG")  # upper-case suffix counts
    shutil.copy(EXAMPLES / BENIGN, b / ".hidden.jpg")
    shutil.copy(EXAMPLES / BENIGN, root / ".thumbs" / "t.jpg")
    (root / "notes.txt").write_text("slide A stained 09:10")
    (b / "calls.csv").write_text("path,label\n")
    images = sorted(
        [a / FIELD, a / BENIGN, a / "cut.jpg", *(b / c for c in CELLS), b / "sub" / "field.JPG"]
    )
    return {"images": images}


# ---------------------------------------------------------------- inputs
def test_walk_finds_nested_images_sorted_and_counts_what_it_skips(tmp_path):
    expected = slide_tree(tmp_path)["images"]
    inputs = collect_inputs([tmp_path])
    assert inputs.paths == expected
    skipped = inputs.skipped
    assert skipped.hidden_files == 1 and skipped.hidden_folders == 1
    assert dict(skipped.other_suffixes) == {".txt": 1, ".csv": 1}
    assert skipped.describe() == (
        "2 non-image files (.csv 1, .txt 1), 1 hidden file, 1 hidden folder"
    )


def test_named_files_are_kept_in_order_whatever_they_are(tmp_path):
    tree = slide_tree(tmp_path)
    notes, missing = tmp_path / "notes.txt", tmp_path / "nowhere.jpg"
    inputs = collect_inputs([notes, tmp_path / "slide_B", missing])
    slide_b = [p for p in tree["images"] if "slide_B" in str(p)]
    assert inputs.paths == [notes, *slide_b, missing]


def test_files_from_list_and_blank_lines(tmp_path):
    tree = slide_tree(tmp_path)
    listing = tmp_path / "list.txt"
    listing.write_text(f"{tree['images'][1]}\n\n{tmp_path / 'slide_B' / 'sub'}\r\n")
    inputs = collect_inputs([tree["images"][0]], files_from=listing)
    assert inputs.paths == [
        tree["images"][0],
        tree["images"][1],
        *walk_images(tmp_path / "slide_B" / "sub"),
    ]
    assert list(read_path_list(io.StringIO(" spaced name.jpg \n\n"))) == [" spaced name.jpg "]


def test_a_file_reached_twice_is_classified_once_and_counted(tmp_path):
    """Overlapping folders, a repeated name, a link to a file and a --files-from repeat: each
    real file once, at its first place (a duplicate would weigh twice in a slide's call)."""
    day = tmp_path / "day"
    tree = slide_tree(day)
    first = tree["images"][0]
    (tmp_path / "link.jpg").symlink_to(first)
    listing = tmp_path / "list.txt"
    listing.write_text(f"{first}\n")
    inputs = collect_inputs([day, day / "slide_A", first, tmp_path / "link.jpg"], listing)
    assert inputs.paths == walk_images(day)
    assert inputs.skipped.repeated == len(walk_images(day / "slide_A")) + 3
    assert f"{inputs.skipped.repeated} repeated paths (classified once)" in (
        inputs.skipped.describe()
    )


def test_hard_links_are_one_file_and_non_regular_inputs_are_errors(tmp_path):
    a = tmp_path / "s1" / "a.jpg"
    a.parent.mkdir()
    shutil.copy(EXAMPLES / "WBC-Malignant-Pre-810.jpg", a)
    os.link(a, tmp_path / "s1" / "b.jpg")
    inputs = collect_inputs([tmp_path / "s1"])
    assert [p.name for p in inputs.paths] == ["a.jpg"] and inputs.skipped.repeated == 1
    pipe = tmp_path / "pipe.jpg"
    os.mkfifo(pipe)  # reading it would block for ever

    def writer():  # so that a reader that did open it would not hang this test
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                fd = os.open(pipe, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # no reader (yet)
                time.sleep(0.05)
                continue
            os.write(fd, b"not an image")
            os.close(fd)
            return

    threading.Thread(target=writer, daemon=True).start()
    with pytest.raises(ImageDecodeError, match="not a regular file"):
        load_rgb(pipe)


def test_a_record_file_is_appended_to_only_if_it_holds_records(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("line1\nline 2 no newline")
    with pytest.raises(ValueError, match="not a leukedge JSON Lines file"):
        check_is_a_record_file(notes)
    assert notes.read_text() == "line1\nline 2 no newline"
    records = tmp_path / "calls.jsonl"
    records.write_text('{"path": "a.jpg", "status": "ok"}\n')
    check_is_a_record_file(records)
    check_is_a_record_file(tmp_path / "new.jsonl")


def test_linked_slide_folders_are_walked_once_without_looping(tmp_path):
    tree = slide_tree(tmp_path / "day")
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "slide_A").symlink_to(tmp_path / "day" / "slide_A", target_is_directory=True)
    (linked / "loop").symlink_to(linked, target_is_directory=True)  # a link back up
    found = walk_images(linked)
    slide_a = [p for p in tree["images"] if "slide_A" in str(p)]
    assert [p.name for p in found] == [p.name for p in slide_a]
    # A real slide folder and two links to it: the real name wins, whatever the directory
    # order, and the links' images count as repeats.
    day = tmp_path / "day"
    for alias in ("a_link", "zz_link"):
        (day / alias).symlink_to(day / "slide_A", target_is_directory=True)
    inputs = collect_inputs([day])
    assert inputs.paths == walk_images(day) == tree["images"]
    assert inputs.skipped.repeated == 2 * len(slide_a)


@pytest.mark.parametrize(
    ("outputs", "message"),
    [
        ({"--csv": "d/field_01.jpg"}, "image suffix"),
        ({"--jsonl": "in.dat"}, "is also an input"),
        ({"--csv": "d"}, "is a folder"),
        ({"--csv": "r.out", "--jsonl": "r.out"}, "the same file as --csv"),
        ({"--csv": "hard.dat"}, "is also an input"),
        ({"--csv": "fifo.csv"}, "not a regular file"),
        ({"--csv": "to_image.csv"}, "image suffix"),
    ],
)
def test_output_paths_that_would_destroy_inputs_are_refused(tmp_path, outputs, message):
    (tmp_path / "d").mkdir()
    (tmp_path / "in.dat").write_bytes(b"x")
    os.link(tmp_path / "in.dat", tmp_path / "hard.dat")  # the same file under another name
    os.mkfifo(tmp_path / "fifo.csv")
    (tmp_path / "keep.jpg").write_bytes(b"an image")
    (tmp_path / "to_image.csv").symlink_to(tmp_path / "keep.jpg")  # not an input of this run
    paths = {k: tmp_path / v for k, v in outputs.items()}
    with pytest.raises(ValueError, match=message):
        check_output_paths(paths, [tmp_path / "in.dat"])
    check_output_paths({"--csv": tmp_path / "r.csv", "--jsonl": None}, [tmp_path / "in.dat"])


def test_subject_parser_lives_in_the_runtime():
    assert parse_subject("slides/UID_h3_4_1_hem.bmp") == "H3"
    assert parse_subject("UID_011_1_1_all.bmp") == "11"
    assert parse_subject("WBC-Benign-420.jpg") is None


# ---------------------------------------------------------------- ordered parallel map
def test_ordered_map_keeps_input_order_with_shuffled_work_times():
    rng = random.Random(0)
    delays = [rng.uniform(0, 0.02) for _ in range(60)]
    running, peak, lock = [0], [0], threading.Lock()

    def work(i: int) -> int:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(delays[i])
        with lock:
            running[0] -= 1
        return i * i

    out = [(i, f.result()) for i, f in ordered_map(work, range(60), workers=4, max_pending=8)]
    assert out == [(i, i * i) for i in range(60)]
    assert 2 <= peak[0] <= 4  # parallel, never more than the workers


def test_ordered_map_reads_input_lazily_and_stops_when_closed():
    submitted = []

    def items():
        for i in range(1000):
            submitted.append(i)
            yield i

    gen = ordered_map(lambda i: i, items(), workers=2, max_pending=5)
    first = [next(gen)[0] for _ in range(3)]
    gen.close()
    assert first == [0, 1, 2]
    assert len(submitted) <= 3 + 5  # bounded look-ahead: memory stays flat


def test_ordered_map_keeps_exceptions_per_item():
    def work(i: int) -> int:
        if i == 2:
            raise ValueError("bad item")
        return i

    outcomes = list(ordered_map(work, range(4), workers=2))
    assert [i for i, _ in outcomes] == [0, 1, 2, 3]
    assert isinstance(outcomes[2][1].exception(), ValueError)
    assert outcomes[3][1].result() == 3


def test_classify_paths_equals_one_by_one_in_order(classifier, tmp_path):
    paths = [EXAMPLES / name for name in (FIELD, BENIGN, *CELLS)] * 3
    paths.insert(5, tmp_path / "missing.jpg")
    outcomes = list(classify_paths(classifier, paths, workers=3))
    assert [o.path for o in outcomes] == paths
    assert isinstance(outcomes[5].error, FileNotFoundError) and outcomes[5].result is None
    for outcome in outcomes[:5] + outcomes[6:]:
        alone = classifier.classify(outcome.path)
        assert outcome.error is None
        assert outcome.result.probabilities == alone.probabilities
        assert outcome.result.label == alone.label


def test_default_workers_is_one_more_than_interpreters():
    assert default_workers(2) == 3 and default_workers(1) == 2


# ---------------------------------------------------------------- records and writers
def test_records_carry_the_model_and_its_sha256(classifier, tmp_path):
    model = ModelInfo.of(classifier)
    import hashlib

    assert model.sha256 == hashlib.sha256(classifier.model_path.read_bytes()).hexdigest()
    result = classifier.classify(EXAMPLES / FIELD)
    ok = result_record(EXAMPLES / FIELD, result, model)
    assert ok["path"] == str(EXAMPLES / FIELD) and ok["label"] == result.label
    assert ok["probabilities"] == result.probabilities
    assert (ok["model"], ok["model_sha256"]) == (classifier.metadata.name, model.sha256)
    assert status_of(ok) == "ok" and ok["reason"] is None and ok["error"] is None
    cut = tmp_path / "cut.jpg"
    cut.write_bytes((EXAMPLES / FIELD).read_bytes()[:1500])
    try:
        classifier.classify(cut)
    except Exception as exc:  # noqa: BLE001
        bad = error_record(cut, exc, model)
    assert bad["status"] == "error" and bad["reason"] == "decode_error"
    assert bad["error"].startswith(f"{cut}: ") and bad["label"] is None
    missing = error_record("gone.jpg", FileNotFoundError(2, "No such file", "gone.jpg"), model)
    assert missing["reason"] == "not_found" and missing["error"] == "gone.jpg: No such file"


def _model(labels=("ALL", "HEM")) -> ModelInfo:
    return ModelInfo("m", "1.0", "ab" * 32, tuple(labels), labels[0])


def test_csv_rows_hold_every_record_in_columns(tmp_path):
    quality = {
        "height": 224,
        "width": 224,
        "grey_mean": 150.5,
        "grey_std": 30.25,
        "saturated_fraction": 0.0,
        "laplacian_variance": 80.0,
        "colourfulness": 40.0,
    }
    records = [
        {"path": "a.jpg", "status": "ok", "reason": None, "message": "ALL: p(ALL) 0.750",
         "label": "ALL", "probabilities": {"ALL": 0.75, "HEM": 0.25}, "score": 0.75,
         "model_label": "ALL", "model_probabilities": {"ALL": 0.75, "HEM": 0.25},
         "ood_distance": 12.5, "quality": quality, "failed_checks": [], "model": "m",
         "model_version": "1.0", "model_sha256": "ab" * 32, "error": None, "source": "a.jpg"},
        {"path": "r.jpg", "status": "rejected", "reason": "out_of_focus", "message": "blurred",
         "label": None, "probabilities": None, "score": None, "model_label": "HEM",
         "model_probabilities": {"ALL": 0.1, "HEM": 0.9}, "ood_distance": None,
         "quality": quality, "failed_checks": ["out_of_focus", "out_of_domain"], "model": "m",
         "model_version": "1.0", "model_sha256": "ab" * 32, "error": None},
        {"path": "b, with comma.jpg", "label": None, "probabilities": None, "score": None,
         "status": "error", "reason": "decode_error", "model": "m", "model_version": "1.0",
         "model_sha256": "ab" * 32, "error": "b.jpg: truncated", "quality": None},
    ]  # fmt: skip
    target = tmp_path / "out" / "calls.csv"
    writer = CsvWriter(target, _model())
    for record in records:
        writer.write(record)
    writer.close()
    with open(target, newline="") as handle:
        rows = list(csv.DictReader(handle))
    stats = ["height", "width", "grey_mean", "grey_std", "saturated_fraction",
             "laplacian_variance", "colourfulness", "red_cell_diameter", "red_cell_count",
             "black_background_fraction", "black_background_objects"]  # fmt: skip
    assert list(rows[0]) == csv_columns(["ALL", "HEM"]) == [
        "path", "status", "label", "reason", "p_ALL", "p_HEM", "score", "message",
        "model_label", "model_p_ALL", "model_p_HEM", "ood_distance",
        *[f"quality_{k}" for k in stats], "failed_checks", "error", "model", "model_version",
        "model_sha256", "weights_sha256",
    ]  # fmt: skip
    ok, rejected, bad = rows
    # Probabilities at the model's resolution (a float model: 6 decimals), the rest in full.
    assert ok["p_ALL"] == "0.750000" and ok["score"] == "0.750000"
    assert ok["label"] == "ALL" and ok["error"] == ""
    assert (ok["ood_distance"], ok["quality_grey_std"], ok["failed_checks"]) == (
        "12.5",
        "30.25",
        "",
    )
    assert (rejected["label"], rejected["p_ALL"], rejected["model_p_HEM"]) == ("", "", "0.900000")
    assert rejected["failed_checks"] == "out_of_focus;out_of_domain"
    assert bad["path"] == "b, with comma.jpg" and bad["p_ALL"] == "" and bad["quality_width"] == ""
    assert (bad["status"], bad["reason"]) == ("error", "decode_error")
    assert not list(target.parent.glob(".*.partial"))


def test_atomic_file_respects_umask_and_keeps_target_until_commit(tmp_path):
    target = tmp_path / "r.jsonl"
    target.write_text("previous run\n")
    old = os.umask(0o027)
    try:
        writer = JsonLinesWriter(target)
        writer.write({"path": "a.jpg"})
        assert target.read_text() == "previous run\n"  # untouched while writing
        partial = writer.file.temp_path
        assert partial.parent == tmp_path and partial.read_text() == '{"path": "a.jpg"}\n'
        writer.close()
    finally:
        os.umask(old)
    assert target.read_text() == '{"path": "a.jpg"}\n' and not partial.exists()
    assert target.stat().st_mode & 0o777 == 0o640  # 0o666 minus the umask, not mkstemp's 0o600
    discarded = AtomicTextFile(tmp_path / "never.csv")
    discarded.write("x\n")
    discarded.discard()
    assert not (tmp_path / "never.csv").exists() and not list(tmp_path.glob(".*.partial"))


def test_atomic_file_commits_what_was_written_when_interrupted(tmp_path):
    target = tmp_path / "r.jsonl"
    with pytest.raises(KeyboardInterrupt), AtomicTextFile(target) as out:
        out.write('{"n": 1}\n')
        raise KeyboardInterrupt
    assert [json.loads(line) for line in target.read_text().splitlines()] == [{"n": 1}]


# ---------------------------------------------------------------- group statistics
@pytest.mark.parametrize(
    ("k", "n", "low", "high"),
    [
        # By hand: p̂ = k/n, z = 1.95996; centre (p̂ + z²/2n)/(1 + z²/n),
        # half-width z/(1 + z²/n)·√(p̂(1−p̂)/n + z²/4n²).
        (8, 10, 0.490162, 0.943318),  # Brown, Cai & DasGupta 2001 list 0.490, 0.943
        (0, 10, 0.0, 0.277533),
        (4, 4, 0.510109, 1.0),
        (3, 3, 0.438503, 1.0),
        (50, 100, 0.403832, 0.596168),
    ],
)
def test_wilson_interval_by_hand(k, n, low, high):
    got = wilson_interval(k, n)
    assert got == pytest.approx((low, high), abs=2e-6)


def test_wilson_interval_edges():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def _rec(path, status="ok", label=None, p_all=None):
    probs = None if p_all is None else {"ALL": p_all, "HEM": 1 - p_all}
    return {"path": path, "status": status, "label": label, "probabilities": probs,
            "error": "x" if status == "error" else None}  # fmt: skip


def test_group_summary_by_hand():
    records = [
        _rec("s/1.jpg", "ok", "ALL", 0.9),
        _rec("s/2.jpg", "ok", "ALL", 0.8),
        _rec("s/3.jpg", "ok", "ALL", 0.7),
        _rec("s/4.jpg", "ok", "ALL", 0.6),
        _rec("s/5.jpg", "ok", "HEM", 0.2),
        _rec("s/6.jpg", "refer", None, 0.5),
        _rec("s/7.jpg", "rejected", None, None),
        _rec("s/8.jpg", "error"),
    ]
    s = summarise("s", records, ["ALL", "HEM"])
    assert s.n == 8 and s.counts == {"ok": 5, "refer": 1, "rejected": 1, "error": 1}
    assert s.positive == 4 and s.fraction == pytest.approx(0.8)
    assert (s.ci_low, s.ci_high) == pytest.approx((0.375535, 0.963776), abs=2e-6)  # 4 of 5
    assert s.mean_probability == pytest.approx((0.9 + 0.8 + 0.7 + 0.6 + 0.2 + 0.5) / 6)
    assert s.call == "refer" and "0.5" in s.call_reason  # 0.376 < ½: not sure of a majority
    row = s.as_row()
    assert list(row) == summary_columns("ALL")
    assert (row["n_ALL"], row["ci_low"], row["call"]) == (4, "0.375535", "refer")


def test_group_call_rule():
    all_five = [_rec(f"{i}.jpg", "ok", "ALL", 0.9) for i in range(5)]
    hem_five = [_rec(f"{i}.jpg", "ok", "HEM", 0.1) for i in range(5)]
    assert summarise("a", all_five, ["ALL", "HEM"]).call == "ALL"  # [0.566, 1]
    assert summarise("h", hem_five, ["ALL", "HEM"]).call == "HEM"  # [0, 0.434]
    assert summarise("3", all_five[:3], ["ALL", "HEM"]).call == "refer"  # [0.439, 1]
    assert summarise("4", all_five[:4], ["ALL", "HEM"]).call == "ALL"  # [0.510, 1]
    unusable = all_five + [_rec(f"r{i}.jpg", "rejected") for i in range(6)]
    s = summarise("u", unusable, ["ALL", "HEM"])
    assert s.call == "refer" and s.call_reason.startswith("6 of 11 images not ok")
    assert summarise("u", unusable, ["ALL", "HEM"], rule=GroupRule(max_unusable=0.6)).call == "ALL"
    assert summarise("e", [_rec("x.jpg", "error")], ["ALL", "HEM"]).call == "refer"


def test_group_keys_and_map(tmp_path):
    path = "2026-05-01/slide_12/UID_H6_7_1_hem.bmp"
    assert group_key(path, "slide") == "slide_12"
    assert group_key(path, "folder") == "2026-05-01/slide_12"
    assert group_key(path, "subject") == "H6"
    assert group_key("f.jpg", "subject") == NO_GROUP
    (tmp_path / "day").mkdir()
    mapping_csv = tmp_path / "map.csv"
    mapping_csv.write_text("Path,Slide\nday/a.jpg,S1\nb.jpg,S2\n")
    mapping = GroupMap(mapping_csv)
    assert group_key(tmp_path / "day" / "a.jpg", "slide", mapping) == "S1"
    assert group_key(tmp_path / "elsewhere" / "b.jpg", "slide", mapping) == "S2"  # by name
    assert group_key(tmp_path / "day" / "c.jpg", "slide", mapping) == UNMAPPED
    bad = tmp_path / "bad.csv"
    bad.write_text("file,label\n")
    with pytest.raises(ValueError, match="path"):
        GroupMap(bad)


def test_images_without_a_group_get_no_group_call(tmp_path):
    """Four unanimous ALL fields would make a subject's call (see above); without subjects
    in their names they are not one subject: no call, with the reason, for ``(none)`` and
    ``(unmapped)`` alike. ``ungrouped`` finds them from the paths, before any work."""
    fields = [_rec(f"day/WBC-{i}.jpg", "ok", "ALL", 0.9) for i in range(6)]
    cells = [_rec(f"day/UID_3_{i}_1_all.bmp", "ok", "ALL", 0.9) for i in range(6)]
    summaries = summarise_all(fields + cells, "subject", ["ALL", "HEM"])
    calls = {s.group: (s.call, s.n) for s in summaries}
    assert calls == {"3": ("ALL", 6), NO_GROUP: (NO_CALL, 6)}
    none = next(s for s in summaries if s.group == NO_GROUP)
    assert none.call_reason.startswith("no group call") and none.as_row()["call"] == ""
    assert none.fraction == 1.0  # the statistics are still reported
    paths = [r["path"] for r in fields + cells]
    assert ungrouped(paths, "subject") == paths[:6] and ungrouped(paths, "slide") == []
    mapping_csv = tmp_path / "map.csv"
    mapping_csv.write_text("path,slide\nWBC-0.jpg,S1\n")
    mapping = GroupMap(mapping_csv)
    assert len(ungrouped(paths, "slide", mapping)) == 11
    unmapped = summarise_all(fields, "slide", ["ALL", "HEM"], mapping=mapping)
    assert [(s.group, s.call) for s in unmapped] == [(UNMAPPED, NO_CALL), ("S1", "refer")]


def test_summarise_all_groups_by_slide():
    records = [_rec("A/1.jpg", "ok", "ALL", 0.9), _rec("B/1.jpg", "ok", "HEM", 0.1),
               _rec("A/2.jpg", "error")]  # fmt: skip
    summaries = summarise_all(records, "slide", ["ALL", "HEM"])
    assert [(s.group, s.n, s.positive) for s in summaries] == [("A", 2, 1), ("B", 1, 0)]


def test_probability_decimals_follow_the_output_resolution(tmp_path):
    """An 8-bit output moves in steps of 1/256 = 0.0039: 4 decimals in CSV files (not 16);
    a float32 output gets 6. The CSV writer uses the model's decimals."""
    assert probability_decimals("uint8", 1 / 256) == 4
    assert probability_decimals("int8", 1 / 256) == 4
    assert probability_decimals("uint8", 1 / 65536) == 6
    assert probability_decimals("float32", 0.0) == 6
    target = tmp_path / "calls.csv"
    writer = CsvWriter(target, ModelInfo("m", "1", "ab" * 32, ("ALL", "HEM"), "ALL", 4))
    p = {"ALL": 0.9439080447634222, "HEM": 0.05609195523657782}
    record = {
        "path": "a.jpg",
        "status": "ok",
        "label": "ALL",
        "probabilities": p,
        "score": p["ALL"],
        "model_probabilities": p,
        "ood_distance": 1158.4084591599528,
    }
    writer.write(record)
    writer.close()
    with open(target, newline="") as handle:
        (row,) = csv.DictReader(handle)
    assert (row["p_ALL"], row["p_HEM"], row["score"]) == ("0.9439", "0.0561", "0.9439")
    assert (row["model_p_ALL"], row["ood_distance"]) == ("0.9439", "1158.4084591599528")


def test_watch_line_names_the_status_once():
    """``leukedge watch``'s line: the call and p(ALL) for ok; the status once with its reason
    otherwise (never "rejected  rejected (blank)"); the error for a failed file."""
    ok = {"path": "a.jpg", "status": "ok", "label": "ALL", "probabilities": {"ALL": 0.972}}
    assert record_line(ok, "ALL") == "a.jpg  ALL  p(ALL) 0.972"
    refer = {"path": "b.jpg", "status": "refer", "reason": "uncertain", "label": None,
             "probabilities": {"ALL": 0.5}}  # fmt: skip
    assert record_line(refer, "ALL") == "b.jpg  refer (uncertain)  p(ALL) 0.500"
    blank = {"path": "c.png", "status": "rejected", "reason": "blank", "label": None,
             "probabilities": None, "model_probabilities": {"ALL": 0.3}}  # fmt: skip
    assert record_line(blank, "ALL") == "c.png  rejected (blank)"
    bad = {"path": "d.jpg", "status": "error", "error": "d.jpg: truncated"}
    assert record_line(bad, "ALL") == "d.jpg  error  d.jpg: truncated"


def test_quiet_opencv_log_works_with_and_without_cv2_utils_logging(monkeypatch):
    """`leukedge camera` sets OpenCV's log level: through cv2.utils.logging (ERROR) where the
    wheel has it, else cv2.setLogLevel(1) (FATAL; opencv-python-headless 4.10.0.84, the
    lowest supported, has no cv2.utils.logging and logs a missing camera at ERROR); never
    when the user set OPENCV_LOG_LEVEL."""
    import sys
    import types

    from leukedge.lab.camera import quiet_opencv_log

    monkeypatch.delenv("OPENCV_LOG_LEVEL", raising=False)
    calls = []
    logging = types.SimpleNamespace(
        LOG_LEVEL_ERROR=2, setLogLevel=lambda v: calls.append(("utils", v))
    )
    new = types.SimpleNamespace(utils=types.SimpleNamespace(logging=logging))
    old = types.SimpleNamespace(setLogLevel=lambda v: calls.append(("cv2", v)))
    for fake in (new, old):
        monkeypatch.setitem(sys.modules, "cv2", fake)
        quiet_opencv_log()
    assert calls == [("utils", 2), ("cv2", 1)]
    monkeypatch.setenv("OPENCV_LOG_LEVEL", "INFO")
    quiet_opencv_log()
    assert len(calls) == 2
