"""The engine: from an image and a ``.tflite`` to the model's raw outputs.

- :mod:`~leukedge.engine.interpreter`: ``TFLiteEngine``, the LiteRT / tflite-runtime
  interpreter with int8 input and output handling.
- :mod:`~leukedge.engine.pool`: ``EnginePool``, interpreters lent to threads.
- :mod:`~leukedge.engine.metadata`: what travels inside the ``.tflite`` (labels, input
  spec, model card, the checks' fitted parameters, the gate record).
- :mod:`~leukedge.engine.preprocess`: decode and resize, the one preprocessing path of
  training and runtime.
- :mod:`~leukedge.engine.summary`: a model as ``leukedge info`` prints it.
- :mod:`~leukedge.engine.heatmap`: where the model looked (class activation map from the
  model's third output, or occlusion), from the interpreter's outputs alone.

May import: :mod:`leukedge.errors` and :mod:`leukedge.checks` (the metadata carries the
checks' fitted parameters, so it reads their spec dataclasses). Nothing above: not the
classifier, the lab workflow, the benchmarks or the CLI (``tests/test_layering.py``).
"""
