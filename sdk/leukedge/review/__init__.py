"""What the model saw, for a person to check: overlay pictures and the slide review page.

- :mod:`leukedge.review.overlay`: :func:`draw_overlay` draws one field's result onto the
  field (the located white cells' boxes coloured by the call, an optional heat map as a
  translucent layer, the status, label and p(ALL) written on the image, and ``refer`` /
  ``rejected`` / ``error`` drawn with a hatched neutral border and a banner, never in a
  call's colour).
- :mod:`leukedge.review.page`: :func:`write_review_page` writes one self-contained HTML
  page per run (per slide: the group call with its Wilson interval and the counts by status
  and reason; a gallery of the fields, sortable and filterable; the refused fields; the
  model's card figures and thresholds and the run's settings) that opens offline in any
  browser.
- :mod:`leukedge.review.sink`: :class:`ReviewSink`, the overlays and page written while
  ``leukedge classify --overlay DIR / --report DIR`` runs, with each result's heat map.

Layering: this package may import the classifier's records and results
(:mod:`leukedge.lab.records`, :mod:`leukedge.classifier`), the group statistics
(:mod:`leukedge.lab.groups`), :mod:`leukedge.cells.locate`,
:mod:`leukedge.engine.preprocess` (to read an image) and the model's metadata
(:mod:`leukedge.engine.metadata`); never the command line
(``leukedge report`` in :mod:`leukedge.cli.report` calls it, not the reverse). It never
imports TensorFlow.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "PALETTE",
    "OverlayOptions",
    "ReviewOptions",
    "ReviewPage",
    "ReviewSink",
    "draw_overlay",
    "write_review_page",
]

_WHERE = {
    "PALETTE": "overlay",
    "OverlayOptions": "overlay",
    "draw_overlay": "overlay",
    "ReviewOptions": "options",
    "ReviewPage": "page",
    "ReviewSink": "sink",
    "write_review_page": "page",
}


def __getattr__(name: str) -> Any:
    """Load the drawing and page code on first use (``leukedge report --help`` and the
    other commands' start-up stay free of it)."""
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
