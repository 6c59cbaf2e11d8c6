"""The slide review page: one HTML file a technician opens offline to check a run by eye.

:func:`write_review_page` (or :class:`ReviewPage`, one record at a time, for a pipeline)
writes into a folder ``DIR``:

- ``DIR/index.html``: one self-contained page (inline CSS and JavaScript, the thumbnails
  embedded as JPEG ``data:`` URIs; no server, no network, no framework) holding

  - the model (name, version, precision, sha256, the card's test figures, the gate, the
    operating point, refer band, out-of-domain threshold and temperature) and the run's
    settings and date; a warning when the records name another model file than the one
    whose card is shown;
  - per slide (group): the group call, the Wilson 95 % interval of the ALL fraction among
    ok calls, and the counts by status and by reason, from :mod:`leukedge.lab.groups` (the same
    statistics and call as ``leukedge classify --group-by``);
  - the refused fields (refer, rejected, error) with their reasons;
  - a gallery of every field (its overlay's thumbnail and caption), sortable by p(ALL) and
    filterable by status, reason and slide, by a few lines of inline JavaScript;

- ``DIR/overlays/NNNNN_<name>.png``: each field's overlay (:func:`draw_overlay`) at the
  input's size, linked from its thumbnail (relative links: copy the folder whole).

Why the thumbnails are embedded: the page is one file that can be mailed or archived with a
slide's record and still shows every field (1,000 fields make a page of about 10 MB at the
default 192 px, JPEG quality 70; measured in the README); the full-size overlays are
beside it. Each card has ``content-visibility: auto`` (the browser skips laying out and
painting the cards off screen) and its image ``loading="lazy"`` ``decoding="async"``, so a
page of 1,000 fields opens at once. Every string is escaped (Jinja2's autoescape): a file
name is text, never markup.

Near 500 lines: the page is one document (its cards, slide rows, model facts and settings
are built for one template), so its parts stay together; the drawing is
:mod:`leukedge.review.overlay`.
"""

from __future__ import annotations

import base64
import io
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from leukedge.lab.groups import GroupMap, group_key, summarise_all
from leukedge.lab.records import STATUSES, status_of
from leukedge.review.options import ReviewOptions
from leukedge.review.overlay import OverlayOptions, draw_overlay, overlay_caption

if TYPE_CHECKING:
    from leukedge.engine.metadata import ModelMetadata

__all__ = ["PAGE_NAME", "OVERLAY_FOLDER", "ReviewOptions", "ReviewPage", "write_review_page"]

PAGE_NAME = "index.html"
OVERLAY_FOLDER = "overlays"
OVERLAY_NAME = re.compile(r"\d{5}_[A-Za-z0-9._-]+\.png")
"""How an overlay is named: ``NNNNN_<file stem>.png`` (the field's place in the run, and
its name reduced to letters, digits, ``.``, ``_``, ``-``)."""


@dataclass
class _Card:
    index: int
    path: str
    name: str
    group: str
    status: str
    reason: str
    label: str
    p: float | None
    caption: str
    message: str
    thumbnail: str | None = None
    overlay: str | None = None
    unreadable: str | None = None


@dataclass
class ReviewPage:
    """A review page built one record at a time (:meth:`add`), written by :meth:`write`.

    Args:
        out_dir: the folder to write (created; ``index.html`` and ``overlays/`` in it). The
            caller checks beforehand that it may be written (``leukedge report`` refuses
            an existing page without ``--overwrite``).
        metadata: the model's :class:`~leukedge.engine.metadata.ModelMetadata` (its card figures
            and thresholds are shown; ``None``: a model without leukedge metadata).
        settings: the run's settings, shown as a table (name → value; e.g. the results
            file, ``--group-by``, a threshold given on the command line).
        options: :class:`ReviewOptions`.
        model_sha256: sha256 of the model file whose ``metadata`` is shown; the page warns
            when the records name another.
        group_map: a :class:`~leukedge.lab.groups.GroupMap` (``group_by="slide"`` only).
    """

    out_dir: Path
    metadata: ModelMetadata | None
    settings: Mapping[str, Any] = field(default_factory=dict)
    options: ReviewOptions = field(default_factory=ReviewOptions)
    model_sha256: str | None = None
    group_map: GroupMap | None = None
    records: list[dict[str, Any]] = field(default_factory=list)
    cards: list[_Card] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        meta = self.metadata
        self.positive_label = (
            (meta.decision.positive_label if meta.decision else meta.positive_label)
            if meta is not None
            else "ALL"
        )
        self._overlay_options = OverlayOptions(
            positive_label=self.positive_label, locate=self.options.locate
        )

    def add(
        self,
        record: Mapping[str, Any],
        rgb: np.ndarray | None = None,
        *,
        unreadable: str | None = None,
        heatmap: np.ndarray | None = None,
        cells: Sequence[Any] | None = None,
        cell_labels: Sequence[str | None] | None = None,
    ) -> Path | None:
        """Add one field: its card, and its overlay PNG when ``options.overlays``.

        Args:
            record: the field's record (:mod:`leukedge.lab.records`; ``path``, ``status``,
                ``reason``, ``label``, ``probabilities``, ``message``).
            rgb: the field as it was classified, ``(H, W, 3)`` ``uint8`` RGB
                (:func:`read_field_again` reads it and refuses a replaced file); ``None``
                when it cannot be read (give ``unreadable``, the problem, shown on its card).
            unreadable: why the image could not be read (with ``rgb=None``).
            heatmap, cells, cell_labels: as :func:`~leukedge.review.overlay.draw_overlay`;
                ``cells`` ``None`` for a record of a field classified cell by cell
                (``classify --locate``, :mod:`leukedge.cells.field`): its cells' boxes, each
                in its own call's colour.

        Returns:
            The overlay PNG written, or ``None``.

        Raises:
            OSError: the overlay cannot be written (names the file).
            ValueError: as :func:`~leukedge.review.overlay.draw_overlay`.
        """
        record = dict(record)
        if cells is None and record.get("cells") is not None:
            cells = [tuple(cell["box"]) for cell in record["cells"]]
            if cell_labels is None:
                cell_labels = [cell.get("label") for cell in record["cells"]]
        index = len(self.cards)
        path = str(record.get("path") or f"(field {index + 1})")
        probabilities = record.get("probabilities") or {}
        p = probabilities.get(self.positive_label)
        status = status_of(record)
        card = _Card(
            index=index,
            path=path,
            name=Path(path).name or path,
            group=group_key(path, self.options.group_by, self.group_map),
            status=status,
            reason=record.get("reason") or "",
            label=(record.get("label") or "") if status == "ok" else "",
            p=None if p is None else float(p),
            caption=overlay_caption(record, self.positive_label),
            message=record.get("message") or record.get("error") or "",
        )
        written = None
        if rgb is None:
            card.unreadable = unreadable or "no image"
        else:
            picture = rgb
            if self.options.overlays:
                picture = draw_overlay(
                    rgb,
                    record,
                    cells=cells,
                    heatmap=heatmap,
                    cell_labels=cell_labels,
                    options=self._overlay_options,
                )
                name = overlay_name(index + 1, path)
                written = self.out_dir / OVERLAY_FOLDER / name
                _write_png(picture, written)
                card.overlay = f"{OVERLAY_FOLDER}/{name}"
            card.thumbnail = _thumbnail(
                picture, self.options.thumbnail_px, self.options.jpeg_quality
            )
        self.records.append(record)
        self.cards.append(card)
        return written

    def html(self, written_at: datetime | None = None) -> str:
        """The page's HTML (what :meth:`write` writes)."""
        from jinja2 import Environment, PackageLoader

        env = Environment(
            loader=PackageLoader("leukedge.review", "templates"),
            autoescape=True,  # every value is text: a file name never becomes markup
            trim_blocks=True,
            lstrip_blocks=True,
        )
        template = env.get_template("review.html.j2")
        return template.render(**self._context(written_at or datetime.now(timezone.utc)))

    def write(self, written_at: datetime | None = None) -> Path:
        """Write ``out_dir/index.html`` atomically (the previous page stays whole until the
        new one replaces it), then delete the overlays an earlier page of this folder left
        in ``overlays/`` that this page does not show (only files named as this module
        names them, :data:`OVERLAY_NAME`), so the folder holds one report.

        Returns:
            The page's path.

        Raises:
            OSError: it cannot be written (names the file).
        """
        from leukedge.lab.outputs import AtomicTextFile

        target = self.out_dir / PAGE_NAME
        text = self.html(written_at)
        handle = AtomicTextFile(target)
        try:
            handle.write(text)
        except BaseException:
            handle.discard()
            raise
        handle.commit()
        self._remove_stale_overlays()
        return target

    def _remove_stale_overlays(self) -> None:
        folder = self.out_dir / OVERLAY_FOLDER
        if not folder.is_dir():
            return
        shown = {Path(c.overlay).name for c in self.cards if c.overlay}
        for path in folder.iterdir():
            if OVERLAY_NAME.fullmatch(path.name) and path.name not in shown:
                path.unlink(missing_ok=True)

    def _context(self, written_at: datetime) -> dict[str, Any]:
        labels = self._labels()
        summaries = summarise_all(
            self.records, self.options.group_by, labels, self.positive_label, self.group_map
        )
        reasons_by_group: dict[str, Counter] = {}
        for card in self.cards:
            if card.reason:
                reasons_by_group.setdefault(card.group, Counter())[card.reason] += 1
        record_models = sorted(
            {str(r.get("model_sha256")) for r in self.records if r.get("model_sha256")}
        )
        return {
            "title": f"leukedge review: {len(self.cards)} fields",
            "written_at": written_at.isoformat(timespec="seconds"),
            "positive": self.positive_label,
            "labels": labels,
            "statuses": STATUSES,
            "model": _model_facts(self.metadata, self.model_sha256),
            "record_models": record_models,
            "model_sha256": self.model_sha256,
            "model_mismatch": bool(
                self.model_sha256 and any(s != self.model_sha256 for s in record_models)
            ),
            "settings": {str(k): _text(v) for k, v in self.settings.items()},
            "group_by": self.options.group_by,
            "groups": [
                {
                    "summary": s,
                    "reasons": sorted(reasons_by_group.get(s.group, Counter()).items()),
                }
                for s in summaries
            ],
            "cards": self.cards,
            "refused": [c for c in self.cards if c.status != "ok"],
            "reasons": sorted({c.reason for c in self.cards if c.reason}),
            "unreadable": [c for c in self.cards if c.unreadable],
            "thumbnail_px": self.options.thumbnail_px,
        }

    def _labels(self) -> list[str]:
        if self.metadata is not None:
            return list(self.metadata.labels)
        seen: dict[str, None] = {}
        for record in self.records:
            for label in record.get("probabilities") or record.get("model_probabilities") or {}:
                seen.setdefault(label, None)
        return list(seen) or [self.positive_label]


def write_review_page(
    records: Iterable[Mapping[str, Any]],
    out_dir: str | os.PathLike,
    model_metadata: ModelMetadata | None,
    settings: Mapping[str, Any] | None = None,
    *,
    options: ReviewOptions | None = None,
    model_sha256: str | None = None,
    group_map: GroupMap | None = None,
    load_image: Callable[[Mapping[str, Any]], np.ndarray] | None = None,
    on_field: Callable[[Mapping[str, Any], str | None], None] | None = None,
) -> tuple[Path, list[tuple[str, str]]]:
    """Write the review page of ``records`` into ``out_dir`` (see the module docstring).

    Args:
        records: the run's records (:mod:`leukedge.lab.records`, as ``leukedge classify
            --jsonl`` writes them), in the order to show.
        out_dir: the folder (``index.html``, ``overlays/``); created if missing.
        model_metadata: the model's metadata (card figures, thresholds), or ``None``.
        settings: the run's settings to show (name → value).
        options: :class:`ReviewOptions`.
        model_sha256: sha256 of the model whose metadata is shown (the page warns when
            the records name another).
        group_map: a :class:`~leukedge.lab.groups.GroupMap` for ``group_by="slide"``.
        load_image: reads a record's field as ``(H, W, 3)`` ``uint8`` RGB (default:
            :func:`load_field`); an :class:`OSError` or :class:`ValueError` it raises marks
            that field unreadable and the others go on.
        on_field: called after each field with its record and the problem (``None`` when
            its image was read), e.g. for a progress bar.

    Returns:
        ``(page path, [(path, problem) for each field whose image could not be read]``).

    Raises:
        OSError: an overlay or the page cannot be written (names the file); the previous
            page, if any, stays whole.
    """
    page = ReviewPage(
        Path(out_dir),
        model_metadata,
        dict(settings or {}),
        options or ReviewOptions(),
        model_sha256=model_sha256,
        group_map=group_map,
    )
    failed: list[tuple[str, str]] = []
    for record in records:
        rgb, problem = read_field_again(record, model_metadata, load_image or load_field)
        if problem is not None:
            failed.append((str(record.get("path")), problem))
        page.add(record, rgb, unreadable=problem)
        if on_field is not None:
            on_field(record, problem)
    return page.write(), failed


def overlay_name(number: int, path: Any) -> str:
    """``NNNNN_<stem>.png``: the overlay file of the ``number``-th field (from 1), matching
    :data:`OVERLAY_NAME` (so a later ``--overwrite`` knows which files are overlays)."""
    return f"{number:05d}_{_safe_name(Path(str(path or 'field')).stem)}.png"


def read_field_again(
    record: Mapping[str, Any],
    metadata: ModelMetadata | None,
    load: Callable[[Mapping[str, Any]], np.ndarray] | None = None,
) -> tuple[np.ndarray | None, str | None]:
    """A record's image read again for drawing, or why it cannot be: ``(rgb, None)`` or
    ``(None, problem)``. The problem is the decoder's (named file), or
    :func:`changed_since_classified`'s when the file was replaced since (the recorded call is
    never drawn on another picture). ``load``: default :func:`load_field`."""
    from leukedge.lab.records import describe_error

    try:
        rgb = (load or load_field)(record)
    except (OSError, ValueError) as exc:
        return None, describe_error(record.get("path") or "?", exc)
    problem = changed_since_classified(rgb, record, metadata)
    return (None, problem) if problem is not None else (rgb, None)


def changed_since_classified(
    rgb: np.ndarray, record: Mapping[str, Any], metadata: ModelMetadata | None
) -> str | None:
    """Why the image read again is not the one the record was made from, or ``None``.

    The record's quality statistics (``quality``: the decoded size and the grey mean and
    standard deviation of the model's resized input; :mod:`leukedge.checks.quality`) are
    measured again on ``rgb``; another shape, or a grey mean or standard deviation more than
    2 grey levels away (a reduced-size JPEG decode moves them by a fraction of one), means
    the file at that path was replaced by another picture. A heuristic: a copy re-saved
    with nearly the same statistics passes.
    ``None`` also when the record has no statistics (errors) or there is no model metadata
    to resize with.
    """
    quality = record.get("quality") or {}
    if metadata is None or not {"height", "width", "grey_mean", "grey_std"} <= set(quality):
        return None
    from leukedge.checks.quality import image_statistics
    from leukedge.engine.preprocess import resize_rgb

    height, width = rgb.shape[:2]
    # The shape, not the size: a large JPEG may have been decoded at 1/2, 1/4 or 1/8 of it.
    if abs(height / width - quality["height"] / quality["width"]) > 0.02 * height / width:
        return (
            f"{record.get('path')}: the image is now {width}x{height}, not the "
            f"{quality['width']}x{quality['height']} it was classified at: changed since"
        )
    size = (metadata.input.height, metadata.input.width)
    now = image_statistics(resize_rgb(rgb, size), (height, width), red_cells=False)
    tolerance = 2.0  # grey levels: a reduced JPEG decode moves them by a fraction of one
    if (
        abs(now.grey_mean - quality["grey_mean"]) > tolerance
        or abs(now.grey_std - quality["grey_std"]) > tolerance
    ):
        return (
            f"{record.get('path')}: the image differs from the one classified (grey mean "
            f"{now.grey_mean:.1f} against {quality['grey_mean']:.1f}): changed since"
        )
    return None


def load_field(record: Mapping[str, Any], base: str | os.PathLike | None = None) -> np.ndarray:
    """A record's image as ``(H, W, 3)`` ``uint8`` RGB
    (:func:`leukedge.engine.preprocess.load_rgb`).

    A relative ``path`` is tried as given (the working directory ``leukedge classify`` ran
    in), then relative to ``base`` (e.g. the results file's folder).

    Raises:
        FileNotFoundError: no path, or the file is in neither place.
        ImageDecodeError: the file is not a readable image (a :class:`ValueError`).
    """
    from leukedge.engine.preprocess import load_rgb

    path = record.get("path")
    if not path:
        raise FileNotFoundError(2, "the record has no path", "")
    candidate = Path(path)
    if not candidate.exists() and base is not None and not candidate.is_absolute():
        beside = Path(base) / candidate
        if beside.exists():
            candidate = beside
    if not candidate.exists():
        raise FileNotFoundError(2, "No such file or directory", str(path))
    return load_rgb(candidate)


def _safe_name(stem: str) -> str:
    """A file-name stem of letters, digits, ``.``, ``_``, ``-`` only (≤ 60 characters)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem)[:60].strip("._") or "field"


def _write_png(rgb: np.ndarray, target: Path) -> None:
    """``rgb`` as a PNG, written under a temporary name and renamed onto ``target``.

    zlib level 1: on 1,000 fields it halves the time of level 6 (15 vs 29 ms a field)
    for 14 % more bytes (``tools/review_figures.py --synthetic 1000 --no-locate``)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.partial")
    try:
        Image.fromarray(rgb).save(temp, format="PNG", compress_level=1)
        os.replace(temp, target)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise OSError(exc.errno, exc.strerror or str(exc), str(target)) from exc


def _thumbnail(rgb: np.ndarray, longest: int, quality: int) -> str:
    """A JPEG ``data:`` URI of ``rgb`` shrunk to ``longest`` px on its longest side."""
    image = Image.fromarray(rgb)
    image.thumbnail((longest, longest), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _text(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(map(str, value))
    return "" if value is None else str(value)


def _model_facts(meta: ModelMetadata | None, sha256: str | None) -> dict[str, Any]:
    """The model's name, version, card figures and thresholds, as rows of text."""
    rows: list[tuple[str, str]] = []
    if meta is None:
        rows.append(("metadata", "none (a model without leukedge metadata)"))
        if sha256:
            rows.append(("sha256", sha256))
        return {"name": "(no metadata)", "rows": rows}
    rows.append(("version", meta.version or "?"))
    rows.append(("precision", meta.precision))
    rows.append(("labels", ", ".join(meta.labels)))
    if sha256:
        rows.append(("sha256", sha256))
    card = meta.model_card or {}
    test = card.get("test_metrics")
    if isinstance(test, dict):
        parts = [f"n={test.get('n', '?')}"]
        for key, name in (
            ("accuracy", "accuracy"),
            ("weighted_f1", "weighted F1"),
            ("sensitivity", "sensitivity"),
            ("specificity", "specificity"),
            ("roc_auc", "ROC AUC"),
        ):
            if isinstance(test.get(key), int | float):
                parts.append(f"{name} {test[key]:.3f}")
        if test.get("confusion_matrix") is not None:
            parts.append(f"confusion {test['confusion_matrix']}")
        rows.append(("test figures", ", ".join(parts)))
    elif card.get("fitted_on"):  # fitted on every image: no test block, the CV's figures
        rows.append(("test figures", "none: every image trained the shipped weights"))
    else:
        rows.append(("test figures", "not evaluated"))
    expected = (card.get("expected_performance") or {}).get("kfold") or {}
    if isinstance(expected.get("mean"), dict):
        m, w = expected["mean"], expected.get("worst") or {}
        parts = [
            f"{name} {m[key]:.3f} / {w.get(key, float('nan')):.3f}"
            for key, name in (
                ("sensitivity", "sensitivity"),
                ("specificity", "specificity"),
                ("auc", "ROC AUC"),
            )
            if isinstance(m.get(key), int | float)
        ]
        rows.append(("expected on new patients (blocked CV, mean / worst fold)", ", ".join(parts)))
    gate = card.get("gate")
    if isinstance(gate, dict):
        verdict = "passed" if gate.get("passed") is True else "FAILED"
        rows.append(("conversion gate", f"{verdict} on the {gate.get('eval_split', '?')} split"))
    d = meta.decision
    positive = d.positive_label if d else meta.positive_label
    if d is None:
        rows.append(("call", f"{positive} when p({positive}) >= 0.5 (arg-max); no refer band"))
    else:
        rows.append(("call", f"{positive} when p({positive}) >= {d.threshold:.4f}"))
        band = (
            f"{d.refer_band[0]:.4f} <= p({positive}) < {d.refer_band[1]:.4f}"
            if d.refer_band
            else "none"
        )
        rows.append(("refer band", band))
    if meta.ood is not None:
        rows.append(("out of domain", f"distance > {meta.ood.threshold:.4g} ({meta.ood.method})"))
    else:
        rows.append(("out of domain", "no check"))
    rows.append(("temperature", f"{meta.temperature:.3f}"))
    return {"name": meta.name, "rows": rows}
