"""White cells in a smear field: where they are and what the model sees of each.

- :mod:`~leukedge.cells.locate`: boxes, masks and crops on black (OpenCV, no model).

May import: :mod:`leukedge.errors`, :mod:`leukedge.checks` (the red-cell size that sets
the scale) and :mod:`leukedge.engine`. Not the classifier, the lab workflow or the CLI.
"""
