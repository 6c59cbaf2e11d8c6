#!/usr/bin/env python3
"""Classify every image under a folder and write one CSV: the SDK pieces behind
``leukedge classify FOLDER --csv FILE``, in a page you can copy into your own program.

The command line does more (``--jsonl``, ``--group-by slide``, a progress bar, Ctrl+C that
keeps what was done); use it when you only need the files::

    leukedge classify /data/slides --csv slides.csv --group-by slide --group-csv per_slide.csv

This example shows the three SDK calls it is built from: :func:`leukedge.inputs.walk_images`
(images under a folder, sorted; hidden and non-image files skipped),
:func:`leukedge.batch.classify_paths` (all cores, results in input order) and
:class:`leukedge.outputs.AtomicTextFile` (written beside the target, renamed into place).

Columns: ``path,label,p_ALL,p_HEM,error`` (one ``p_<label>`` per class of the model; the
label is empty when the classifier makes no call, e.g. an uncertain image).

Examples::

    python3 examples/classify_folder.py examples/images
    python3 examples/classify_folder.py /data/slides --out slides.csv --threads 1

Exit codes: 0 all files classified; 1 at least one file failed (its row says why);
2 bad folder or a model that cannot be loaded.

Decision support only: the CSV holds one model's opinion per image, not diagnoses.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections import Counter
from pathlib import Path

from leukedge import Classifier, ClassifierOptions, LeukedgeError
from leukedge.batch import classify_paths
from leukedge.inputs import walk_images
from leukedge.outputs import AtomicTextFile
from leukedge.records import describe_error


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Classify every image under a folder; CSV.")
    parser.add_argument("folder", type=Path, help="folder to search recursively")
    parser.add_argument("--out", type=Path, default=Path("leukedge_predictions.csv"))
    parser.add_argument("--model", default=None, help="a .tflite model (default: embedded)")
    parser.add_argument("--threads", type=int, default=None, help="threads per interpreter")
    args = parser.parse_args(argv)
    if not args.folder.is_dir():
        print(f"error: {args.folder}: not a folder", file=sys.stderr)
        return 2
    try:
        classifier = Classifier(ClassifierOptions(model_path=args.model, num_threads=args.threads))
    except (LeukedgeError, OSError, ValueError) as exc:
        print(f"error: cannot load model: {exc}", file=sys.stderr)
        return 2

    columns = ["path", "label", *[f"p_{label}" for label in classifier.labels], "error"]
    calls, failed = Counter(), 0
    with AtomicTextFile(args.out) as out:  # renamed onto args.out at the end, even on Ctrl+C
        writer = csv.DictWriter(out.handle, fieldnames=columns)
        writer.writeheader()
        for outcome in classify_paths(classifier, walk_images(args.folder)):
            row = {"path": str(outcome.path), "error": ""}
            if outcome.error is not None:
                row["error"] = describe_error(outcome.path, outcome.error)
                failed += 1
            else:
                row["label"] = outcome.result.label or ""  # no call: refer or rejected
                calls[outcome.result.label] += 1
                for label, p in (outcome.result.probabilities or {}).items():
                    row[f"p_{label}"] = f"{p:.6f}"
            writer.writerow(row)
    summary = ", ".join(f"{label} {calls[label]}" for label in classifier.labels)
    if calls[None]:
        summary += f", no call {calls[None]}"
    print(f"{sum(calls.values()) + failed} images ({summary}, failed {failed}) -> {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
