#!/usr/bin/env python3
"""Classify every image under a folder (recursively) and write one CSV.

Columns: ``path,label,p_ALL,p_HEM,error`` (one ``p_<label>`` column per class of the model,
in the model's output order). A file that cannot be read gets a row with an empty label and
the error; the others go on. The CSV is written to a temporary file next to the target and
moved into place with ``os.replace``, so a crash or Ctrl+C never leaves a half-written CSV.

Examples::

    python3 examples/classify_folder.py examples/images
    python3 examples/classify_folder.py /data/slides --out slides.csv --threads 4
    python3 examples/classify_folder.py /data/cells --model my_cell_model_int8.tflite

Exit codes: 0 all files classified; 1 at least one file failed (its row says why);
2 bad folder or a model that cannot be loaded.

Decision support only: the CSV holds one model's opinion per image, not diagnoses.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from leukedge.classifier import Classifier, ClassifierOptions

IMAGE_SUFFIXES = {".bmp", ".jpg", ".jpeg", ".png", ".tif", ".tiff"}
"""File types picked up (case-insensitive); other files are skipped silently."""


def find_images(folder: Path) -> list[Path]:
    """Image files under ``folder``, recursively, sorted by path."""
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )


def classify_all(classifier: Classifier, images: list[Path]) -> list[dict[str, str]]:
    """One CSV row per image; failures become rows with ``error`` set."""
    prob_columns = [f"p_{label}" for label in classifier.labels]
    rows = []
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ) as progress:
        task = progress.add_task("classifying", total=len(images))
        for path in images:
            row = {
                "path": str(path),
                "status": "",
                "reason": "",
                "label": "",
                **dict.fromkeys(prob_columns, ""),
                "error": "",
            }
            try:
                result = classifier.classify(path)
            except (OSError, ValueError, RuntimeError) as exc:
                # Unreadable, truncated or not an image: record it and go on.
                row["error"] = str(exc) if str(path) in str(exc) else f"{path}: {exc}"
                row["status"] = "error"
                progress.console.print(f"[red]skipped[/red] {row['error']}")
            else:
                # label only for status "ok"; the p_ columns are what the model said, also
                # for referred and rejected images (never a call on their own).
                row["status"], row["reason"] = result.status, result.reason or ""
                row["label"] = result.label or ""
                for label, p in result.model_probabilities.items():
                    row[f"p_{label}"] = f"{p:.6f}"
            rows.append(row)
            progress.advance(task)
    return rows


def write_csv_atomically(rows: list[dict[str, str]], fieldnames: list[str], out: Path) -> None:
    """Write ``rows`` to a temporary file in ``out``'s folder, then ``os.replace`` it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        "w",
        newline="",
        encoding="utf-8",
        dir=out.parent,
        prefix=f".{out.name}.",
        suffix=".partial",
        delete=False,
    ) as tmp:
        try:
            writer = csv.DictWriter(tmp, fieldnames=fieldnames)
            writer.writeheader()
            writer.writerows(rows)
            tmp.flush()
            os.fsync(tmp.fileno())
        except BaseException:
            tmp.close()
            os.unlink(tmp.name)
            raise
    os.replace(tmp.name, out)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Classify every image under a folder as ALL or HEM; write a CSV."
    )
    parser.add_argument("folder", type=Path, help="folder to search recursively")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("leukedge_predictions.csv"),
        help="CSV to write (default: leukedge_predictions.csv)",
    )
    parser.add_argument(
        "--model", default=None, help="a leukedge .tflite model (default: the embedded model)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="interpreter CPU threads (default: the runtime's choice)",
    )
    args = parser.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.folder.is_dir():
        print(f"error: {args.folder}: not a folder", file=sys.stderr)
        return 2
    try:
        classifier = Classifier(ClassifierOptions(model_path=args.model, num_threads=args.threads))
    except (OSError, ValueError, RuntimeError, ImportError) as exc:
        print(f"error: cannot load model: {exc}", file=sys.stderr)
        return 2

    images = find_images(args.folder)
    if not images:
        print(
            f"warning: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {args.folder}",
            file=sys.stderr,
        )
    rows = classify_all(classifier, images)
    fieldnames = [
        "path",
        "status",
        "reason",
        "label",
        *[f"p_{label}" for label in classifier.labels],
        "error",
    ]
    write_csv_atomically(rows, fieldnames, args.out)

    failed = sum(1 for r in rows if r["error"])
    calls = Counter(r["label"] for r in rows if r["status"] == "ok")
    statuses = Counter(r["status"] for r in rows)
    summary = ", ".join(f"{label} {calls[label]}" for label in classifier.labels)
    print(
        f"{len(rows)} images (calls: {summary}; refer {statuses['refer']}, rejected "
        f"{statuses['rejected']}, failed {failed}) -> {args.out}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
