#!/usr/bin/env python3
"""Classify image files through leukedge's Python API; one JSON line per image.

The same lines as ``leukedge classify --json`` (``path``, ``result.to_dict()``, ``error``),
but produced by ``leukedge.Classifier`` in ``IMAGE`` mode, so a run checks the API as well as
the CLI (``check_arm64.sh`` compares the two).

Example::

    python3 examples/raspberry_pi/api_classify.py examples/images/*.jpg > api.jsonl

Exit codes: 0 every image classified; 1 some image failed (its line has ``error``); 2 the
model cannot be loaded.
"""

from __future__ import annotations

import argparse
import json
import sys

from leukedge import Classifier, LeukedgeError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--model", default=None, help="a leukedge .tflite (default: embedded)")
    args = parser.parse_args(argv)
    try:
        classifier = Classifier.create_from_model_path(args.model) if args.model else Classifier()
    except (OSError, LeukedgeError) as exc:
        print(f"error: cannot load model: {exc}", file=sys.stderr)
        return 2
    status = 0
    with classifier:
        for path in args.images:
            try:
                result = classifier.classify(path)
            except (OSError, LeukedgeError) as exc:
                status = 1
                print(json.dumps({"path": path, "label": None, "error": str(exc)}))
                continue
            line = {"path": path, **result.to_dict(), "error": None}
            print(json.dumps(line), flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
