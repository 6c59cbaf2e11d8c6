"""leukedge.training: fit the paper's proposed model and its baselines (Keras 3).

Importing this package is cheap; Keras is imported by the submodules that need it.
"""
