"""What the model saw (:mod:`leukedge.review`): overlay pictures, the slide review page and
``leukedge report``, on small drawn images and hand-made records (no TensorFlow, no data,
no model run); and the page in a real browser (Debian's ``chromium`` driven by Playwright),
skipped with the reason where either is missing."""

from __future__ import annotations

import json
import re
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from leukedge.cli import app
from leukedge.engine.metadata import read_metadata
from leukedge.lab.groups import summarise_all
from leukedge.review import PALETTE, OverlayOptions, draw_overlay
from leukedge.review.overlay import overlay_caption
from leukedge.review.page import ReviewPage, write_review_page

GREY = (200, 200, 200)
SHA = "a" * 64


def grey_field(height=120, width=160) -> np.ndarray:
    field = np.empty((height, width, 3), np.uint8)
    field[:] = GREY
    return field


def record(path="slide_A/f.png", status="ok", label="ALL", p=0.9, reason=None, **extra):
    """A record as ``leukedge classify --jsonl`` writes it (the fields the review reads)."""
    probabilities = None if status in ("rejected", "error") else {"ALL": p, "HEM": 1 - p}
    return {
        "path": path,
        "status": status,
        "reason": reason,
        "message": f"{reason}: the figures" if reason else None,
        "label": label if status == "ok" else None,
        "probabilities": probabilities,
        "score": p if status == "ok" else None,
        "model_label": label,
        "model_probabilities": {"ALL": p, "HEM": 1 - p},
        "model": "leukedge_default",
        "model_version": "2.0.0",
        "model_sha256": SHA,
        "weights_sha256": "b" * 64,
        "error": f"{path}: cannot decode" if status == "error" else None,
        **extra,
    }


def near(pixels: np.ndarray, colour, tolerance=40) -> np.ndarray:
    """Pixels within ``tolerance`` (max channel difference) of ``colour``."""
    return np.abs(pixels.astype(int) - np.array(colour)).max(axis=-1) <= tolerance


# ---------------------------------------------------------------- overlay


@pytest.mark.parametrize("label", ["ALL", "HEM"])
def test_boxes_take_the_call_colour(label):
    field = grey_field()
    before = field.copy()
    box = (40, 50, 100, 110)
    out = draw_overlay(field, record(label=label), cells=[box])
    assert out.shape == field.shape and out.dtype == np.uint8
    assert np.array_equal(field, before), "the input is not changed"
    assert tuple(out[80, 40]) == PALETTE[label]  # the box's left edge, half way down
    assert tuple(out[80, 99]) == PALETTE[label]  # its right edge (x1 exclusive)
    assert tuple(out[80, 70]) == GREY  # inside the box: the field
    other = "HEM" if label == "ALL" else "ALL"
    assert not near(out, PALETTE[other]).any(), "no trace of the other call's colour"
    per_cell = draw_overlay(field, record(label=label), cells=[box], cell_labels=[other])
    assert tuple(per_cell[80, 40]) == PALETTE[other], "a cell's own call colours its box"


@pytest.mark.parametrize(
    ("status", "reason", "banner"),
    [
        ("rejected", "out_of_domain", "REJECTED: out_of_domain"),
        ("refer", "uncertain", "REFER: uncertain  p(ALL) 0.55"),
        ("error", "decode_error", "ERROR: decode_error"),
    ],
)
def test_refused_results_have_no_call_colour_a_banner_and_a_hatched_border(status, reason, banner):
    field = grey_field(160, 200)
    rec = record(status=status, reason=reason, p=0.55, label="ALL")
    out = draw_overlay(field, rec, cells=[(40, 50, 100, 110)])
    assert overlay_caption(rec) == banner  # the model's label is never written
    for colour in PALETTE.values():
        assert not near(out, colour).any(), f"{status}: a call colour is drawn"
    band = out[: max(14, round(160 * 0.09))]
    assert near(band, (0, 0, 0), 10).mean() > 0.6, "a black banner across the top"
    assert near(band, (255, 255, 255), 60).any(), "with white text"
    border = out[-4:, 20:-20]  # bottom border, 4 px of max(4, 3 % of 160) = 5
    black, white = near(border, (0, 0, 0), 10).mean(), near(border, (255, 255, 255), 10).mean()
    assert black > 0.3 and white > 0.3, f"hatched border, got {black:.2f} black {white:.2f} white"
    assert tuple(out[80, 40]) in {(0, 0, 0), (255, 255, 255)}, "the cell box is neutral"
    called = draw_overlay(field, record(label="ALL"))
    assert near(called[:5], PALETTE["ALL"], 0).mean() > 0.6, "a call's banner takes its colour"


def test_heatmap_changes_pixels_only_where_hot():
    field = (np.random.default_rng(0).integers(60, 200, (120, 160, 3))).astype(np.uint8)
    heat = np.zeros((120, 160), np.float32)
    heat[60:90, 20:50] = 1.0
    heat[60:90, 100:130] = 0.3
    plain = draw_overlay(field, record())
    hot = draw_overlay(field, record(), heatmap=heat, options=OverlayOptions(heat_alpha=0.5))
    changed = np.any(plain != hot, axis=-1)
    assert not changed[heat == 0].any(), "a pixel where the map is 0 is left as it was"
    assert changed[heat == 1.0].mean() > 0.95
    import cv2

    for value, (y, x) in ((1.0, (70, 30)), (0.3, (70, 110))):  # opacity = value × heat_alpha
        colour = cv2.applyColorMap(np.array([[round(value * 255)]], np.uint8), cv2.COLORMAP_VIRIDIS)
        weight = 0.5 * value
        expected = plain[y, x] * (1 - weight) + colour[0, 0, ::-1] * weight
        assert np.abs(hot[y, x] - expected).max() <= 1, (value, hot[y, x], expected)
    for bad in (np.zeros((60, 80)), np.full((120, 160), 1.5), np.full((120, 160), np.nan)):
        with pytest.raises(ValueError, match="heatmap"):
            draw_overlay(field, record(), heatmap=bad)


def test_overlay_locates_cells_on_request_and_bad_inputs_raise():
    from test_locate import drawn_field

    from leukedge.cells.locate import locate_cells

    field, _, _ = drawn_field(30)
    cells = locate_cells(field)
    assert cells
    out = draw_overlay(field, record(label="HEM"), options=OverlayOptions(locate=True))
    for cell in cells:
        x0, y0, _, y1 = cell.box
        assert tuple(out[(y0 + y1) // 2, x0]) == PALETTE["HEM"]
    without = draw_overlay(field, record(label="HEM"))
    x0, y0, _, y1 = cells[0].box
    assert tuple(without[(y0 + y1) // 2, x0]) != PALETTE["HEM"], "no boxes unless asked"
    blank = draw_overlay(grey_field(), record(), options=OverlayOptions(locate=True))
    assert blank.shape == (120, 160, 3)  # no red cells to measure: drawn without boxes
    with pytest.raises(ValueError, match="uint8"):
        draw_overlay(grey_field().astype(np.float32), record())
    with pytest.raises(ValueError, match="cell_labels"):
        draw_overlay(grey_field(), record(), cells=[(1, 1, 9, 9)], cell_labels=[])
    with pytest.raises(TypeError):
        draw_overlay(grey_field(), "ALL")


# ---------------------------------------------------------------- page

STATUS_PLAN = [
    # (slide, name, status, label, p, reason)
    ("slide_A", "a1.png", "ok", "ALL", 0.97, None),
    ("slide_A", "a2.png", "ok", "ALL", 0.91, None),
    ("slide_A", "a3.png", "ok", "ALL", 0.88, None),
    ("slide_A", "a4.png", "ok", "ALL", 0.95, None),
    ("slide_A", "a5.png", "refer", None, 0.55, "uncertain"),
    ("slide_B", "b1.png", "ok", "HEM", 0.05, None),
    ("slide_B", "b2.png", "ok", "HEM", 0.12, None),
    ("slide_B", "b3.png", "rejected", None, 0.80, "out_of_domain"),
    ("slide_B", "b4.png", "rejected", None, 0.40, "blank"),
    ("slide_B", "<img src=x onerror=alert(1)><script>alert(2)<!--.png", "ok", "ALL", 0.7, None),
    ("slide_C", "c1.png", "error", None, 0.0, "decode_error"),
    ("slide_C", "c2.png", "ok", "HEM", 0.2, None),
    ("slide_C", "gone.png", "ok", "ALL", 0.66, None),
]


def make_run(root: Path, plan=STATUS_PLAN, size=(48, 64)) -> list[dict]:
    """Drawn images in ``root/<slide>/`` and their records (relative paths, as classify
    run in ``root`` writes them); ``gone.png``'s image is deleted after, ``c1.png`` is not
    an image."""
    records = []
    rng = np.random.default_rng(1)
    for slide, name, status, label, p, reason in plan:
        (root / slide).mkdir(parents=True, exist_ok=True)
        path = root / slide / name
        if status == "error":
            path.write_bytes(b"not an image")
        elif name != "gone.png":
            colour = rng.integers(80, 230, 3)
            Image.fromarray(np.full((*size, 3), colour, np.uint8)).save(path)
        records.append(record(f"{slide}/{name}", status, label or "ALL", p, reason))
    return records


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def slide_rows(html: str) -> dict[str, dict]:
    """``{slide: {"call", "counts", "ci"}}`` from the page's slide table."""
    rows = {}
    for group, body in re.findall(r'<tr class="slide" data-group="(.*?)">(.*?)</tr>', html, re.S):
        rows[group] = {
            "call": re.search(r'class="call call-[^"]*">(.*?)<', body).group(1),
            "counts": {s: int(n) for s, n in re.findall(r'count-(\w+)">(\d+)<', body)},
            "ci": re.search(r'class="num ci">(.*?)</td>', body).group(1),
        }
    return rows


@pytest.fixture(scope="module")
def model_metadata():
    from leukedge.classifier import default_model_path

    return read_metadata(default_model_path())


def test_page_summary_equals_the_records_and_group_by(tmp_path, model_metadata, monkeypatch):
    records = make_run(tmp_path)
    monkeypatch.chdir(tmp_path)
    page, failed = write_review_page(records, tmp_path / "out", model_metadata, {"x": "y"})
    html = page.read_text(encoding="utf-8")
    rows = slide_rows(html)
    truth = Counter((r["path"].split("/")[0], r["status"]) for r in records)
    assert sorted(rows) == ["slide_A", "slide_B", "slide_C"]
    for slide, row in rows.items():
        assert row["counts"] == {s: truth[(slide, s)] for s in ("ok", "refer", "rejected", "error")}
    summaries = {s.group: s for s in summarise_all(records, "slide", ["ALL", "HEM"], "ALL")}
    for slide, row in rows.items():  # the same statistics and call as classify --group-by
        s = summaries[slide]
        assert row["call"] == (s.call or "no call")
        assert f"[{s.ci_low:.3f}, {s.ci_high:.3f}]" in row["ci"]
    assert rows["slide_A"]["call"] == "ALL"  # 4 of 4 ok calls ALL: interval above ½
    # one card per record; the refused ones listed with their reasons
    assert html.count('<figure class="card') == len(records)
    refused = re.findall(
        r'<tr data-status="(\w+)"><td>.*?</td><td>.*?</td><td>\w+</td><td>(\w+)', html
    )
    assert Counter(refused) == Counter(
        (r["status"], r["reason"]) for r in records if r["status"] != "ok"
    )
    # gone.png and c1.png (not an image) cannot be read: marked, named, the rest go on
    assert sorted(Path(p).name for p, _ in failed) == ["c1.png", "gone.png"]
    assert html.count("image not readable") == 2
    assert len(list((tmp_path / "out" / "overlays").glob("*.png"))) == len(records) - 2
    threshold = f"{model_metadata.decision.threshold:.4f}"
    assert "Model: leukedge_default" in html and threshold in html  # name, threshold
    # Model v3 has no test block (fitted on every field): its cross-validated figures.
    kfold = model_metadata.model_card["expected_performance"]["kfold"]
    assert f"specificity {kfold['mean']['specificity']:.3f} / " in html
    assert "none: every image trained the shipped weights" in html


def test_page_escapes_every_string(tmp_path, model_metadata, monkeypatch):
    records = make_run(tmp_path)
    monkeypatch.chdir(tmp_path)
    settings = {"note <u>": "<script>alert(3)</script>"}
    page, _ = write_review_page(records, tmp_path / "out", model_metadata, settings)
    html = page.read_text(encoding="utf-8")
    assert html.count("<script") == 1, "only the page's own script"
    assert "<img src=x" not in html and "<u>" not in html and "note &lt;u&gt;" in html
    assert "&lt;img src=x onerror=alert(1)&gt;&lt;script&gt;alert(2)&lt;!--.png" in html
    assert "&lt;script&gt;alert(3)&lt;/script&gt;" in html


def test_page_warns_when_the_records_name_another_model(tmp_path, model_metadata):
    page = ReviewPage(tmp_path, model_metadata, model_sha256="c" * 64)
    page.add(record(), grey_field())
    assert 'id="model-mismatch"' in page.html()
    same = ReviewPage(tmp_path, model_metadata, model_sha256=SHA)
    same.add(record(), grey_field())
    assert 'id="model-mismatch"' not in same.html()


def test_page_of_a_model_without_metadata_takes_the_labels_from_the_records(tmp_path):
    page = ReviewPage(tmp_path, None, {"run": "x"})
    page.add(record(), grey_field())
    page.add(record(status="rejected", reason="blank"), grey_field())
    html = page.html()
    assert "none (a model without leukedge metadata)" in html
    assert slide_rows(html)["slide_A"]["counts"] == {"ok": 1, "refer": 0, "rejected": 1, "error": 0}


# ---------------------------------------------------------------- leukedge report


def run_report(*args):
    return CliRunner().invoke(app, ["report", *map(str, args)])


def test_report_cli_writes_page_and_input_sized_overlays(tmp_path, monkeypatch):
    plan = [p for p in STATUS_PLAN if p[1] not in ("gone.png", "c1.png")]
    records = make_run(tmp_path, plan, size=(48, 64))
    results = write_jsonl(tmp_path / "results.jsonl", records)
    out = tmp_path / "review"
    monkeypatch.chdir(tmp_path / "slide_A")  # paths are found beside the results file too
    result = run_report(results, "--out", out, "--no-progress")
    assert result.exit_code == 0, result.output
    assert f"wrote {out / 'index.html'} ({len(plan)} fields, {len(plan)} overlays)" in result.stdout
    overlays = sorted((out / "overlays").glob("*.png"))
    assert len(overlays) == len(plan)
    assert all(Image.open(p).size == (64, 48) for p in overlays)  # the input's size
    assert not list(out.glob(".*partial")), "no temporary file left"
    # an earlier page is refused before any work, kept whole, replaced with --overwrite
    before = (out / "index.html").read_bytes()
    refused = run_report(results, "--out", out)
    assert refused.exit_code == 2 and "--overwrite" in refused.stderr
    assert (out / "index.html").read_bytes() == before
    (out / "overlays" / "notes.txt").write_text("mine")
    fewer = write_jsonl(tmp_path / "fewer.jsonl", records[:3])
    replaced = run_report(fewer, "--out", out, "--overwrite", "--progress")
    assert replaced.exit_code == 0 and "reviewing" in replaced.stderr
    assert sorted(p.name for p in (out / "overlays").iterdir()) == [
        "00001_a1.png",
        "00002_a2.png",
        "00003_a3.png",
        "notes.txt",
    ], "the earlier report's other overlays are gone, a file not named as ours is kept"
    assert run_report(results, "--out", out, "--overwrite", "--no-overlays").exit_code == 0
    html = (out / "index.html").read_text(encoding="utf-8")
    assert html.count('<figure class="card') == len(plan) and "overlays/0" not in html
    assert [p.name for p in (out / "overlays").iterdir()] == ["notes.txt"]
    page_only = tmp_path / "page_only"
    assert run_report(results, "--out", page_only, "--no-overlays").exit_code == 0
    assert not (page_only / "overlays").exists()
    again = run_report(results, "--out", page_only, "--no-overlays")
    assert again.exit_code == 2 and "index.html: exists" in again.stderr


def test_report_cli_one_unreadable_image_does_not_stop_the_rest(tmp_path, monkeypatch):
    records = make_run(tmp_path)
    results = write_jsonl(tmp_path / "results.jsonl", records)
    monkeypatch.chdir(tmp_path)
    result = run_report(results, "--out", tmp_path / "review")
    assert result.exit_code == 1
    assert "slide_C/gone.png" in result.stderr and "slide_C/c1.png" in result.stderr
    assert "2 of 13 field images could not be read" in result.stderr
    html = (tmp_path / "review" / "index.html").read_text(encoding="utf-8")
    assert html.count('<figure class="card') == len(records)


def test_report_cli_usage_errors_exit_2_before_any_work(tmp_path):
    good = write_jsonl(tmp_path / "ok.jsonl", [record()])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"path": "a.png"}\nnot json\n', encoding="utf-8")
    empty = write_jsonl(tmp_path / "empty.jsonl", [])
    a_file = tmp_path / "file"
    a_file.write_text("x")
    for args, words in [
        ((bad, "--out", tmp_path / "r1"), "bad.jsonl:2"),
        ((empty, "--out", tmp_path / "r2"), "holds no record"),
        ((good, "--out", a_file), "not a folder"),
        (
            (good, "--out", tmp_path / "r3", "--model", tmp_path / "none.tflite"),
            "cannot read model",
        ),
        ((good, "--out", tmp_path / "r4", "--model", a_file), "cannot read model"),
    ]:
        result = run_report(*args)
        assert result.exit_code == 2, (args, result.output)
        assert words in result.stderr, (words, result.stderr)
    assert not any((tmp_path / f"r{i}").exists() for i in range(1, 5)), "nothing written"


def test_review_never_imports_the_command_line_or_tensorflow():
    """The package's layering (its ``__init__`` docstring): the CLI calls it, not the
    reverse; and the runtime never imports TensorFlow."""
    import ast

    import leukedge.review

    for path in Path(leukedge.review.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert not name.startswith(("leukedge.cli", "tensorflow", "keras")), (path, name)


# ---------------------------------------------------------------- in a real browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _browser_or_skip():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install '.[dev]')")
    if not Path(CHROMIUM).exists():
        pytest.skip("no chromium browser (Debian: apt-get install chromium)")
    return sync_playwright


def test_browser_test_skips_with_the_reason_without_chromium(monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "CHROMIUM", "/nonexistent/chromium")
    reasons = "no chromium browser|playwright is not installed"
    with pytest.raises(pytest.skip.Exception, match=reasons):
        _browser_or_skip()


def test_page_in_a_real_browser(tmp_path, model_metadata, monkeypatch):
    sync_playwright = _browser_or_skip()
    plan = STATUS_PLAN * 4  # 52 fields, beyond one screen: lazy images must still load
    records = make_run(tmp_path, plan, size=(96, 128))
    results = write_jsonl(tmp_path / "results.jsonl", records)
    monkeypatch.chdir(tmp_path)
    result = run_report(results, "--out", tmp_path / "review", "--no-locate")
    assert result.exit_code == 1  # gone.png and c1.png
    page_url = (tmp_path / "review" / "index.html").as_uri()
    truth = Counter(r["status"] for r in records)
    readable = sum(1 for r in records if not r["path"].endswith(("gone.png", "c1.png")))
    started = time.perf_counter()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 800})
            problems = []
            page.on("console", lambda m: m.type in ("error", "warning") and problems.append(m.text))
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("dialog", lambda d: (problems.append(f"dialog {d.message}"), d.dismiss()))
            page.on("request", lambda r: r.url.startswith("http") and problems.append(r.url))
            page.goto(page_url)
            for _ in range(20):  # scroll through, so every lazy image is fetched
                page.mouse.wheel(0, 2000)
                page.wait_for_timeout(50)
            page.wait_for_function(
                "Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)",
                timeout=10_000,
            )
            widths = page.eval_on_selector_all(
                "#gallery img", "els => els.map(e => e.naturalWidth)"
            )
            assert len(widths) == readable and min(widths) > 0
            # the slide summary matches the JSONL
            counts = page.eval_on_selector_all(
                "#slides tr.slide",
                """rows => rows.map(r => [r.dataset.group,
                    ...['ok','refer','rejected','error'].map(s =>
                        +r.querySelector('.count-' + s).textContent)])""",
            )
            per_slide = Counter((r["path"].split("/")[0], r["status"]) for r in records)
            assert counts == [
                [g, *(per_slide[(g, s)] for s in ("ok", "refer", "rejected", "error"))]
                for g in ("slide_A", "slide_B", "slide_C")
            ]
            # a status filter hides exactly the other cards
            visible = "els => els.filter(e => !e.hidden).map(e => e.dataset.status)"
            for status in ("rejected", "ok", "error"):
                page.select_option("#f-status", status)
                shown = page.eval_on_selector_all("#gallery .card", visible)
                assert shown == [status] * truth[status]
                assert page.is_visible("#gallery .card:not([hidden])")
            page.select_option("#f-status", "")
            page.select_option("#f-reason", "out_of_domain")
            reasons = page.eval_on_selector_all(
                "#gallery .card", "els => els.filter(e => !e.hidden).map(e => e.dataset.reason)"
            )
            assert reasons == ["out_of_domain"] * 4
            page.select_option("#f-reason", "")
            page.select_option("#sort", "p-desc")
            ps = page.eval_on_selector_all(
                "#gallery .card", "els => els.map(e => e.dataset.p === '' ? -1 : +e.dataset.p)"
            )
            assert ps == sorted(ps, reverse=True) and len(ps) == len(records)
            assert page.inner_text("#shown") == f"{len(records)} of {len(records)} fields"
            assert problems == [], problems
        finally:
            browser.close()
    print(f"browser part: {time.perf_counter() - started:.1f} s")
