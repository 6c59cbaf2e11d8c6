#!/usr/bin/env python3
"""Compare two sets of leukedge results image by image: same calls and checks? largest |Δp|?

Each input is a JSON-lines file as written by ``leukedge classify --json`` (or by
``api_classify.py``): one object per image with ``path``, ``status``, ``label``,
``model_probabilities`` (the model's ``{label: p}``, present whatever the status; files
without it are read from ``probabilities``) and, from model v2 on, ``reason``,
``failed_checks`` and ``ood_distance``; any other key is ignored. Images are matched by
``path``, so run both sides from folders with the same relative layout.

Used by ``check_arm64.sh`` to compare the emulated aarch64 run with x86-64. The int8
kernels differ by CPU (XNNPACK picks different micro-kernels), so probabilities and
out-of-domain distances are not expected to be bit-identical: the comparison fails on a
different label or status (``ok`` / ``refer`` / ``rejected``), a different reason or set of
failed checks (a quality or out-of-domain check that passed on one side and failed on the
other), an out-of-domain distance on one side only, an image missing from one side or an
image that failed. The largest |Δp| and the largest relative difference of ``ood_distance``
(``|a - b| / max(|a|, |b|)``) are measured and reported, not judged, with the number of
images whose probabilities are identical.

Examples::

    python3 examples/raspberry_pi/compare_runs.py x86_64.jsonl aarch64.jsonl
    python3 examples/raspberry_pi/compare_runs.py a.jsonl b.jsonl --names x86-64 aarch64

Exit codes: 0 same labels, statuses and failed checks for every image; 1 one of them
differs, an image is missing from one side or failed on either; 2 a file cannot be read or
is not leukedge JSON lines.
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
    ``{label: p}``, the ``status`` (``"ok"`` for files written before statuses), its
    ``reason`` (``None`` when ``ok``), the names of the failed checks (sorted) and the
    out-of-domain distance (squared Mahalanobis, ``None`` without an embedding output)."""

    label: str | None
    probabilities: dict[str, float]
    error: str | None = None
    status: str = "ok"
    reason: str | None = None
    failed_checks: tuple[str, ...] = ()
    ood_distance: float | None = None


@dataclass
class Comparison:
    """The outcome of :func:`compare`; probabilities in [0, 1], ``max_ood_rel`` in [0, 1].

    ``label_mismatches`` holds ``(path, call, call)`` where a call is the label or, when not
    ``ok``, the status; ``check_mismatches`` holds ``(path, description, description)`` of
    the reason, failed checks and out-of-domain distance where those differ (and the
    status does not already); ``statuses`` counts the reference side's statuses.
    """

    compared: int = 0
    label_mismatches: list[tuple[str, str | None, str | None]] = field(default_factory=list)
    check_mismatches: list[tuple[str, str, str]] = field(default_factory=list)
    only_in_reference: list[str] = field(default_factory=list)
    only_in_other: list[str] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)
    max_abs_dp: float = 0.0
    worst: tuple[str, str] | None = None  # (path, class) where max_abs_dp occurs
    identical_probabilities: int = 0
    ood_compared: int = 0
    max_ood_rel: float = 0.0
    worst_ood: tuple[str, float, float] | None = None  # (path, reference, other)
    statuses: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when every image is on both sides, none failed and every label, status,
        reason and set of failed checks is equal."""
        return not (
            self.label_mismatches
            or self.check_mismatches
            or self.only_in_reference
            or self.only_in_other
            or self.errors
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
        distance = obj.get("ood_distance")
        records[obj["path"]] = Record(
            label=obj.get("label"),
            probabilities={k: float(v) for k, v in probabilities.items()},
            error=obj.get("error"),
            status=obj.get("status") or "ok",
            reason=obj.get("reason"),
            failed_checks=tuple(sorted(obj.get("failed_checks") or ())),
            ood_distance=None if distance is None else float(distance),
        )
    if not records:
        raise ResultsFileError(f"{path}: no results")
    return records


def _call(record: Record) -> str | None:
    """The label, or the status when it is not ``"ok"`` (``"refer"``, ``"rejected"``)."""
    return record.label if record.status == "ok" else record.status


def _checks(record: Record) -> str:
    """The reason, failed checks, p and out-of-domain distance, for a mismatch line."""
    p = ", ".join(f"p_{k} {v:.4f}" for k, v in sorted(record.probabilities.items()))
    ood = "none" if record.ood_distance is None else f"{record.ood_distance:.1f}"
    failed = ",".join(record.failed_checks) or "-"
    return f"{record.status}/{record.reason or '-'} (failed: {failed}; {p}; ood {ood})"


def relative_difference(a: float, b: float) -> float:
    """``|a - b| / max(|a|, |b|)``, in [0, 2]; 0 when both are 0."""
    scale = max(abs(a), abs(b))
    return 0.0 if scale == 0 else abs(a - b) / scale


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
        out.statuses[ref.status] = out.statuses.get(ref.status, 0) + 1
        same_checks = (ref.reason, ref.failed_checks) == (oth.reason, oth.failed_checks)
        same_ood_output = (ref.ood_distance is None) == (oth.ood_distance is None)
        if (ref.label, ref.status) != (oth.label, oth.status):
            out.label_mismatches.append((path, _call(ref), _call(oth)))
        elif not (same_checks and same_ood_output):
            out.check_mismatches.append((path, _checks(ref), _checks(oth)))
        if ref.probabilities == oth.probabilities:
            out.identical_probabilities += 1
        for cls in sorted(set(ref.probabilities) | set(oth.probabilities)):
            dp = abs(ref.probabilities.get(cls, 0.0) - oth.probabilities.get(cls, 0.0))
            if dp > out.max_abs_dp:
                out.max_abs_dp, out.worst = dp, (path, cls)
        if ref.ood_distance is not None and oth.ood_distance is not None:
            out.ood_compared += 1
            rel = relative_difference(ref.ood_distance, oth.ood_distance)
            if rel > out.max_ood_rel:
                out.max_ood_rel = rel
                out.worst_ood = (path, ref.ood_distance, oth.ood_distance)
    return out


def summary(result: Comparison, names: tuple[str, str] = ("reference", "other")) -> str:
    """A few lines for a person: counts, max |Δp| and every problem found."""
    ref, oth = names
    n = result.compared
    equal = n - len(result.label_mismatches)
    checks_equal = equal - len(result.check_mismatches)
    statuses = ", ".join(f"{k} {v}" for k, v in sorted(result.statuses.items()))
    lines = [
        f"{ref} vs {oth}: {n} images compared, labels equal {equal}/"
        f"{n}, max |dp| {result.max_abs_dp:.4f}"
        + (f" ({result.worst[0]}, p_{result.worst[1]})" if result.worst else ""),
        f"  labels and statuses equal {equal}/{n} ({ref}: {statuses}), reasons and failed "
        f"checks equal {checks_equal}/{n}, probabilities identical "
        f"{result.identical_probabilities}/{n}",
    ]
    if result.ood_compared:
        lines.append(
            f"  ood_distance on {result.ood_compared}/{n}, max relative difference "
            f"{result.max_ood_rel:.2e}"
            + (" ({}: {:.2f} vs {:.2f})".format(*result.worst_ood) if result.worst_ood else "")
        )
    lines += [
        f"  label differs: {p}: {a} ({ref}) vs {b} ({oth})" for p, a, b in result.label_mismatches
    ]
    lines += [
        f"  checks differ: {p}: {a} ({ref}) vs {b} ({oth})" for p, a, b in result.check_mismatches
    ]
    lines += [f"  only in {ref}: {p}" for p in result.only_in_reference]
    lines += [f"  only in {oth}: {p}" for p in result.only_in_other]
    lines += [f"  failed: {p}: {e}" for p, e in result.errors]
    lines.append("OK: same labels, statuses and failed checks" if result.ok else "FAILED")
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
