"""leukedge.converters: Keras → TensorFlow Lite, weight import, the accuracy-delta gate.

Importing this package is cheap; TensorFlow is imported by the submodules that need it.
"""
