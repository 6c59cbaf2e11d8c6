"""leukedge.evaluation: what training and conversion share about labelled images.

- :mod:`~leukedge.evaluation.data`: datasets, splits by subject or block, ``split.csv``;
- :mod:`~leukedge.evaluation.predict`: a ``.keras`` or ``.tflite`` over a list of images →
  ``{path: probabilities}``;
- :mod:`~leukedge.evaluation.metrics`: metrics joined to labels by file name;
- :mod:`~leukedge.evaluation.evaluate`: the run's evaluation files (predictions, metrics,
  report, figures), ``leukedge train evaluate``;
- :mod:`~leukedge.evaluation.report`, :mod:`~leukedge.evaluation.figures`: Markdown tables
  and PNG figures; :mod:`~leukedge.evaluation.robustness`: flip rates under perturbations.

Layering: the runtime (``leukedge``) ← :mod:`leukedge.modeling` ← ``leukedge.evaluation``
← ``leukedge.training``, ``leukedge.converters`` (``tests/test_layering.py``). Importing
this package is cheap; Keras, scikit-learn and matplotlib are imported where used.
"""
