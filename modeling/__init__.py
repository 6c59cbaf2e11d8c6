"""leukedge.modeling: the Keras models, shared by training, evaluation and conversion.

- :mod:`~leukedge.modeling.architectures`: the table of architectures (no Keras import);
- :mod:`~leukedge.modeling.config`: the model's settings, :class:`HeadConfig` and
  :class:`InputNormConfig` (no Keras import, so command-line help can read them);
- :mod:`~leukedge.modeling.layers`: leukedge's own layers (input normalisation, the
  backbones' preprocessing), registered with Keras;
- :mod:`~leukedge.modeling.models`: :func:`build_model` and the backbone builders;
- :mod:`~leukedge.modeling.efficientnet_lite`: the EfficientNet-Lite0 port;
- :mod:`~leukedge.modeling.saving`: loading a ``.keras`` file with leukedge's layers.

Importing this package is cheap; Keras is imported by the submodules that build or load.
"""
