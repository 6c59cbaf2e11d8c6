"""The README's review figures, and the review page's cost for many fields.

Figures (default): classifies the four bundled images in ``examples/images/`` with the
embedded model (the runtime only), writes their review page with
:func:`leukedge.review.write_review_page`, and saves

- ``docs/figures/overlay_example.png``: the overlay of ``WBC-Malignant-Pre-810.jpg``;
- ``docs/figures/review_page.png``: a screenshot of the page in Debian's Chromium
  (Playwright), as a technician sees it.

Cost (``--synthetic N``): a page of N fields (the bundled images in turn, with made-up
statuses), timed, with its size, and the time Chromium takes to open it and apply a
filter (when Playwright and ``chromium`` are installed)::

    python tools/review_figures.py                 # the two figures
    python tools/review_figures.py --synthetic 1000 [--no-locate]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "images"
FIGURES = ROOT / "docs" / "figures"
OVERLAY_OF = "WBC-Malignant-Pre-810.jpg"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def classify_examples() -> tuple[list[dict], object, str]:
    """Records of the bundled images (paths relative to the repository), the model's
    metadata and sha256."""
    from leukedge import Classifier
    from leukedge.lab.records import ModelInfo, result_record

    classifier = Classifier()
    info = ModelInfo.of(classifier)
    records = []
    for path in sorted(EXAMPLES.iterdir()):
        if path.suffix.lower() in (".bmp", ".jpg"):
            result = classifier.classify(path)
            records.append(result_record(path.relative_to(ROOT), result, info))
    return records, classifier.metadata, classifier.model_sha256


def screenshot(page: Path, target: Path) -> None:
    import io

    from PIL import Image
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            tab = browser.new_page(viewport={"width": 1000, "height": 1150})
            tab.goto(page.resolve().as_uri())
            tab.wait_for_function(
                "Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)"
            )
            Image.open(io.BytesIO(tab.screenshot(full_page=False))).convert("RGB").quantize(
                256
            ).save(target, optimize=True)
        finally:
            browser.close()


def figures(out: Path) -> None:
    """The README's overlay and page screenshot, made as ``leukedge classify --report``
    makes them: the embedded model with its heat maps (``explain=True``), one field at a
    time through :class:`leukedge.review.sink.ReviewSink`."""
    import os

    from leukedge import Classifier, ClassifierOptions
    from leukedge.lab.records import ModelInfo, result_record
    from leukedge.review.sink import ReviewSink

    os.chdir(ROOT)  # the records' relative paths
    classifier = Classifier(ClassifierOptions(explain=True))
    info = ModelInfo.of(classifier)
    settings = {"inputs": "examples/images (the four bundled images)", "group by": "slide"}
    sink = ReviewSink(
        report_dir=out,
        metadata=classifier.metadata,
        settings=settings,
        model_sha256=classifier.model_sha256,
    )
    for path in sorted(EXAMPLES.iterdir()):
        if path.suffix.lower() in (".bmp", ".jpg"):
            result = classifier.classify(path)
            sink.add(result_record(path.relative_to(ROOT), result, info), result)
    page = sink.close()
    if sink.failed:
        sys.exit(f"could not read {sink.failed}")
    FIGURES.mkdir(parents=True, exist_ok=True)
    overlay = next((out / "overlays").glob(f"*{Path(OVERLAY_OF).stem}.png"))
    from PIL import Image

    Image.open(overlay).save(FIGURES / "overlay_example.png", optimize=True)  # smaller file
    screenshot(page, FIGURES / "review_page.png")
    for name in ("overlay_example.png", "review_page.png"):
        size = (FIGURES / name).stat().st_size
        print(f"wrote {(FIGURES / name).relative_to(ROOT)} ({size / 1e3:.0f} KB)")


def synthetic(n: int, out: Path, locate: bool) -> None:
    """Time a page of ``n`` fields cycling through the bundled images."""
    import random

    from leukedge.classifier import default_model_path
    from leukedge.engine.metadata import read_metadata
    from leukedge.review import ReviewOptions, write_review_page

    images = sorted(p for p in EXAMPLES.iterdir() if p.suffix.lower() in (".bmp", ".jpg"))
    rng = random.Random(0)
    statuses = ["ok"] * 7 + ["refer", "rejected", "error"]
    records = []
    fields = out.parent / "fields"  # slide_<k>/field_<i>: links to the bundled images
    for i in range(n):
        status = rng.choice(statuses)
        p = rng.random()
        source = images[i % len(images)]
        path = fields / f"slide_{i // 100:02d}" / f"field_{i:04d}{source.suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        path.symlink_to(source)
        records.append(
            {
                "path": str(path),
                "status": status,
                "reason": {"ok": None, "refer": "uncertain", "rejected": "out_of_domain"}.get(
                    status, "decode_error"
                ),
                "label": ("ALL" if p >= 0.5 else "HEM") if status == "ok" else None,
                "probabilities": None
                if status in ("rejected", "error")
                else {"ALL": p, "HEM": 1 - p},
                "model_sha256": "0" * 64,
            }
        )
    start = time.perf_counter()
    page, failed = write_review_page(
        records,
        out,
        read_metadata(default_model_path()),
        {"fields": n},
        options=ReviewOptions(locate=locate),
    )
    seconds = time.perf_counter() - start
    size = page.stat().st_size
    overlays = sum(f.stat().st_size for f in (out / "overlays").glob("*.png"))
    report = (
        f"{n} fields (locate {'on' if locate else 'off'}): page {size / 1e6:.1f} MB "
        f"({size / n / 1e3:.1f} KB a field), overlays {overlays / 1e6:.1f} MB, "
        f"written in {seconds:.1f} s ({1e3 * seconds / n:.0f} ms a field)"
    )
    print(report)
    browser_timing(page)


def browser_timing(page: Path) -> None:
    """Time opening ``page`` in Chromium and one status filter (skipped without them)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("browser timing skipped: playwright is not installed")
        return
    if not Path(CHROMIUM).exists():
        print("browser timing skipped: no chromium")
        return
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            tab = browser.new_page(viewport={"width": 1200, "height": 800})
            start = time.perf_counter()
            tab.goto(page.resolve().as_uri())  # until the load event
            opened = time.perf_counter() - start
            start = time.perf_counter()
            tab.select_option("#f-status", "rejected")
            shown = tab.eval_on_selector_all("#gallery .card", "e => e.filter(c => !c.hidden)")
            filtered = time.perf_counter() - start
        finally:
            browser.close()
    print(
        f"Chromium: page opened in {opened:.2f} s, status filter applied in {filtered:.2f} s "
        f"({len(shown)} cards shown)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--synthetic", type=int, metavar="N", help="time a page of N fields")
    parser.add_argument("--no-locate", action="store_true", help="no cell boxes (--synthetic)")
    parser.add_argument("--out", type=Path, help="the page's folder (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp) / "review"
        if args.synthetic:
            synthetic(args.synthetic, out, locate=not args.no_locate)
        else:
            figures(out)


if __name__ == "__main__":
    main()
