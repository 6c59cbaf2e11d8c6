"""Make TensorFlow, Keras, PyTorch and JAX unimportable in this interpreter.

Put this folder on ``PYTHONPATH`` to run the runtime's tests as on a machine with the light
install only (``pip install .``)::

    PYTHONPATH=tests/without_tensorflow LEUKEDGE_SHARED_DATA=/nonexistent \\
        python -m pytest tests/test_cli_and_sdk.py tests/test_preprocess.py tests/test_examples.py
"""

import importlib.abc
import sys

BLOCKED = ("tensorflow", "keras", "tf_keras", "torch", "jax")


class _Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked: the runtime must work without it")
        return None


sys.meta_path.insert(0, _Blocker())
