#!/usr/bin/env python3
"""Compare two sets of leukedge results image by image: same labels? largest |Δp|?

Each input is a JSON-lines file as written by ``leukedge classify --json`` (or by
``api_classify.py``): one object per image with ``path``, ``status``, ``label`` and
``model_probabilities`` (the model's ``{label: p}``, present whatever the status; files
without it are read from ``probabilities``); any other key is ignored. Images are matched by
``path``, so run both sides from folders with the same relative layout.

Used by ``check_arm64.sh`` to compare the emulated aarch64 run with x86-64. The int8
kernels differ by CPU (XNNPACK picks different micro-kernels), so probabilities are not
expected to be bit-identical: the comparison fails only on a different label or status, an
image missing from one side or an image that failed; |Δp| is measured and reported, not
judged.

Examples::

    python3 examples/raspberry_pi/compare_runs.py x86_64.jsonl aarch64.jsonl
    python3 examples/raspberry_pi/compare_runs.py a.jsonl b.jsonl --names x86-64 aarch64

Exit codes: 0 same labels and statuses for every image; 1 a label or status differs, an
image is missing from one side or failed on either; 2 a file cannot be read or is not
leukedge JSON lines.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path


class ResultsFileError(ValueError):
    """A results file that cannot be read; the message names the file and the line."""


@dataclass(frozen=True)
class Record:
    """One image's result: ``label`` (``None`` when there is no call), the model's
    ``{label: p}`` and the ``status`` (``"ok"`` for files written before statuses)."""

    label: str | None
    probabilities: dict[str, float]
    error: str | None = None
    status: str = "ok"


@dataclass
class Comparison:
    """The outcome of :func:`compare`; probabilities in [0, 1]."""

    compared: int = 0
    label_mismatches: list[tuple[str, str | None, str | None]] = field(default_factory=list)
    only_in_reference: list[str] = field(default_factory=list)
    only_in_other: list[str] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)
    max_abs_dp: float = 0.0
    worst: tuple[str, str] | None = None  # (path, class) where max_abs_dp occurs

    @property
    def ok(self) -> bool:
        """True when every image is on both sides, none failed and every label is equal."""
        return not (
            self.label_mismatches or self.only_in_reference or self.only_in_other or self.errors
        )


def load_results(path: Path) -> dict[str, Record]:
    """Read a JSON-lines results file into ``{image path: Record}``.

    Raises:
        ResultsFileError: unreadable file, a line that is not a JSON object with ``path``,
            or the same image twice.
    """
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ResultsFileError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    records: dict[str, Record] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ResultsFileError(f"{path}, line {number}: not JSON ({exc.msg})") from exc
        if not isinstance(obj, dict) or "path" not in obj:
            raise ResultsFileError(f"{path}, line {number}: not a result object with 'path'")
        if obj["path"] in records:
            raise ResultsFileError(f"{path}, line {number}: {obj['path']} appears twice")
        probabilities = obj.get("model_probabilities") or obj.get("probabilities") or {}
        records[obj["path"]] = Record(
            label=obj.get("label"),
            probabilities={k: float(v) for k, v in probabilities.items()},
            error=obj.get("error"),
            status=obj.get("status") or "ok",
        )
    if not records:
        raise ResultsFileError(f"{path}: no results")
    return records


def _call(record: Record) -> str | None:
    """The label, or the status when it is not ``"ok"`` (``"refer"``, ``"rejected"``)."""
    return record.label if record.status == "ok" else record.status


def compare(reference: dict[str, Record], other: dict[str, Record]) -> Comparison:
    """Compare two result sets image by image (see the module docstring)."""
    out = Comparison()
    out.only_in_reference = sorted(set(reference) - set(other))
    out.only_in_other = sorted(set(other) - set(reference))
    for path in sorted(set(reference) & set(other)):
        ref, oth = reference[path], other[path]
        for side in (ref, oth):
            if side.error:
                out.errors.append((path, side.error))
        if ref.error or oth.error:
            continue
        out.compared += 1
        if (ref.label, ref.status) != (oth.label, oth.status):
            out.label_mismatches.append((path, _call(ref), _call(oth)))
        for cls in sorted(set(ref.probabilities) | set(oth.probabilities)):
            dp = abs(ref.probabilities.get(cls, 0.0) - oth.probabilities.get(cls, 0.0))
            if dp > out.max_abs_dp:
                out.max_abs_dp, out.worst = dp, (path, cls)
    return out


def summary(result: Comparison, names: tuple[str, str] = ("reference", "other")) -> str:
    """A few lines for a person: counts, max |Δp| and every problem found."""
    ref, oth = names
    equal = result.compared - len(result.label_mismatches)
    lines = [
        f"{ref} vs {oth}: {result.compared} images compared, labels equal {equal}/"
        f"{result.compared}, max |dp| {result.max_abs_dp:.4f}"
        + (f" ({result.worst[0]}, p_{result.worst[1]})" if result.worst else "")
    ]
    lines += [
        f"  label differs: {p}: {a} ({ref}) vs {b} ({oth})" for p, a, b in result.label_mismatches
    ]
    lines += [f"  only in {ref}: {p}" for p in result.only_in_reference]
    lines += [f"  only in {oth}: {p}" for p in result.only_in_other]
    lines += [f"  failed: {p}: {e}" for p, e in result.errors]
    lines.append("OK: same labels and statuses" if result.ok else "FAILED")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reference", type=Path, help="JSON lines, e.g. the x86-64 run")
    parser.add_argument("other", type=Path, help="JSON lines, e.g. the aarch64 run")
    parser.add_argument(
        "--names", nargs=2, default=("reference", "other"), help="names for the two sides"
    )
    args = parser.parse_args(argv)
    try:
        reference, other = load_results(args.reference), load_results(args.other)
    except ResultsFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result = compare(reference, other)
    print(summary(result, tuple(args.names)))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
