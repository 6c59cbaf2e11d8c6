"""The trust checks: whether a call can be stood behind, and what the call is.

Pure NumPy/OpenCV functions over an image or the model's outputs, each with the
parameters fitted on the training data:

- :mod:`~leukedge.checks.quality`: image statistics and the quality thresholds (exposure,
  focus, colour, black background, magnification) → ``rejected`` reasons.
- :mod:`~leukedge.checks.scale`: red-cell size and a black surround → the ``scale`` and
  ``segmented_cell`` reasons.
- :mod:`~leukedge.checks.ood`: out-of-domain distance (class-conditional Mahalanobis).
- :mod:`~leukedge.checks.calibration`: the softmax temperature.
- :mod:`~leukedge.checks.decision`: operating point, refer band, the call; the Wilson
  interval of a fraction of calls (a slide's, or a field's cells').

A new check goes here, as a module of its own; the classifier applies it
(:meth:`leukedge.Classifier._configure_checks`).

May import: :mod:`leukedge.errors` only. The checks know no interpreter, so they can be
fitted (``leukedge.converters.trust``) and tested on arrays alone.
"""
