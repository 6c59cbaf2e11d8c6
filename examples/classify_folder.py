#!/usr/bin/env python3
"""Classify every image under a folder and write one CSV: the SDK pieces behind
``leukedge classify FOLDER --csv FILE``, in a page you can copy into your own program.

The command line does more (every field of the result, ``--jsonl``, ``--group-by slide``, a
progress bar, Ctrl+C that keeps what was done); use it when you only need the files::

    leukedge classify /data/slides --csv slides.csv --group-by slide --group-csv per_slide.csv

This example shows the SDK calls it is built from: :func:`leukedge.lab.inputs.walk_images`
(images under a folder, sorted; hidden and non-image files skipped),
:func:`leukedge.lab.batch.classify_paths` (all cores, results in input order),
:mod:`leukedge.lab.records` (one dictionary per input, errors included) and
:class:`leukedge.lab.outputs.AtomicTextFile` (written beside the target, renamed into place).

Columns: ``path,status,reason,label,p_ALL,p_HEM,error`` (one ``p_<label>`` per class of the
model). ``label`` is the call and is filled only when ``status`` is ``ok``; the ``p_``
columns are what the model said, also for referred and rejected images (never a call on
their own); an unreadable file gets ``status`` ``error`` and its error.

Examples::

    python3 examples/classify_folder.py examples/images
    python3 examples/classify_folder.py /data/slides --out slides.csv --threads 1

Exit codes: 0 all files processed (refer and rejected are answers); 1 at least one file
failed (its row says why); 2 bad folder or a model that cannot be loaded.

Decision support only: the CSV holds one model's opinion per image, not diagnoses.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections import Counter
from pathlib import Path

from leukedge import Classifier, ClassifierOptions, LeukedgeError
from leukedge.lab.batch import classify_paths
from leukedge.lab.inputs import walk_images
from leukedge.lab.outputs import AtomicTextFile
from leukedge.lab.records import ModelInfo, error_record, result_record


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

    model = ModelInfo.of(classifier)
    p_columns = [f"p_{label}" for label in classifier.labels]
    columns = ["path", "status", "reason", "label", *p_columns, "error"]
    calls, statuses = Counter(), Counter()
    with AtomicTextFile(args.out) as out:  # renamed onto args.out at the end, even on Ctrl+C
        writer = csv.DictWriter(out.handle, fieldnames=columns)
        writer.writeheader()
        for outcome in classify_paths(classifier, walk_images(args.folder)):
            if outcome.error is None:
                record = result_record(outcome.path, outcome.result, model)
            else:
                record = error_record(outcome.path, outcome.error, model)
            said = record["model_probabilities"] or {}
            writer.writerow(
                {
                    "path": record["path"],
                    "status": record["status"],
                    "reason": record["reason"] or "",
                    "label": record["label"] or "",
                    **{f"p_{label}": f"{p:.6f}" for label, p in said.items()},
                    "error": record["error"] or "",
                }
            )
            statuses[record["status"]] += 1
            if record["status"] == "ok":
                calls[record["label"]] += 1
    summary = ", ".join(f"{label} {calls[label]}" for label in classifier.labels)
    print(
        f"{sum(statuses.values())} images (calls: {summary}; refer {statuses['refer']}, "
        f"rejected {statuses['rejected']}, failed {statuses['error']}) -> {args.out}"
    )
    return 1 if statuses["error"] else 0


if __name__ == "__main__":
    sys.exit(main())
