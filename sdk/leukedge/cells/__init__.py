"""White cells in a smear field: where they are and what the model sees of each.

- :mod:`~leukedge.cells.locate`: boxes, masks and crops on black (OpenCV, no model).
- :mod:`~leukedge.cells.field`: a cell model on a field: each located cell's call and the
  field's (it takes the classifier as an argument and never imports it).

May import: :mod:`leukedge.errors`, :mod:`leukedge.checks` (the red-cell size that sets
the scale) and :mod:`leukedge.engine`. Not the classifier, the lab workflow or the CLI.
"""
