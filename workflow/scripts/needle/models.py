"""The CNNs of d'Ascoli et al. 2019 (Skinny CNN and the CIFAR AlexNet), built for any input size.

Every network is an `nn.Sequential` with named children (conv1, relu1, pool1, ..., fc) so that
state_dict keys and per-layer metrics read well, and carries `input_shape = (C, H, W)` so that the
embeddings in `needle.embed` can derive each layer's geometry without running data through it.
Layer sizes are derived by shape arithmetic (`trace_shapes`), never hard-coded.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn

from needle.errors import NeedleError
from needle.names import MODELS


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


def conv_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int = 1) -> int:
    """Output length of a convolution or pooling along one axis (floor mode)."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def trace_shapes(net: nn.Sequential, input_shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Per-sample input shape of every child of `net` (plus the final output shape, last).

    Pure shape arithmetic for the layer types our CNNs and their embeddings use; any module with
    an `out_shape` attribute (Dense2d, LocallyConnected2d) reports its own output shape.
    """
    shapes = [tuple(input_shape)]
    shape = tuple(input_shape)
    for name, layer in net.named_children():
        if isinstance(layer, nn.Conv2d):
            if isinstance(layer.padding, str):
                raise NeedleError(
                    f"layer {name}: string padding {layer.padding!r} is not supported; "
                    "give Conv2d an explicit integer padding"
                )
            c, h, w = shape
            if c != layer.in_channels:
                raise NeedleError(
                    f"layer {name}: expects {layer.in_channels} input channels but "
                    f"receives {c}; fix the network's channel sizes"
                )
            shape = (
                layer.out_channels,
                *(
                    conv_output_size(s, k, st, p, d)
                    for s, k, st, p, d in zip(
                        (h, w), layer.kernel_size, layer.stride, layer.padding, layer.dilation
                    )
                ),
            )
        elif isinstance(layer, (nn.MaxPool2d, nn.AvgPool2d)):
            if getattr(layer, "ceil_mode", False):
                raise NeedleError(
                    f"layer {name}: ceil_mode pooling is not supported; use ceil_mode=False"
                )
            c, h, w = shape
            dil = _pair(getattr(layer, "dilation", 1))
            shape = (
                c,
                *(
                    conv_output_size(s, k, st, p, d)
                    for s, k, st, p, d in zip(
                        (h, w),
                        _pair(layer.kernel_size),
                        _pair(layer.stride or layer.kernel_size),
                        _pair(layer.padding),
                        dil,
                    )
                ),
            )
        elif isinstance(layer, nn.Flatten):
            n = 1
            for s in shape:
                n *= s
            shape = (n,)
        elif isinstance(layer, nn.Linear):
            shape = (layer.out_features,)
        elif hasattr(layer, "out_shape"):
            shape = tuple(layer.out_shape)
        elif isinstance(layer, (nn.ReLU, nn.Dropout, nn.Identity)):
            pass
        else:
            raise NeedleError(
                f"layer {name}: cannot derive the output shape of {type(layer).__name__}; "
                "use Conv2d, ReLU, MaxPool2d, Flatten, Dropout or Linear"
            )
        if any(s < 1 for s in shape):
            raise NeedleError(
                f"layer {name}: output shape {shape} is empty for input shape "
                f"{tuple(input_shape)}; use a larger image_size"
            )
        shapes.append(shape)
    return shapes


def _assemble(
    layers: list[tuple[str, nn.Module]],
    input_shape: tuple[int, int, int],
    head: list[tuple[str, nn.Module]],
    head_in_name: str,
    head_in_out: int,
) -> nn.Sequential:
    """Build the conv trunk, derive its flattened size, then attach the head whose first Linear
    (named `head_in_name`) gets that size as in_features."""
    trunk = nn.Sequential(OrderedDict(layers))
    flat = trace_shapes(trunk, input_shape)[-1]
    n_flat = flat[0] * flat[1] * flat[2]
    head = [
        (name, nn.Linear(n_flat, head_in_out) if name == head_in_name else layer)
        for name, layer in head
    ]
    net = nn.Sequential(OrderedDict(layers + [("flatten", nn.Flatten())] + head))
    net.input_shape = tuple(input_shape)
    # Channels-last conv weights make the convolutions and poolings run channels-last, much
    # faster on CPU for these shapes (PyTorch's NCHW max-pool is slow). Same values.
    return net.to(memory_format=torch.channels_last)


def _check_sizes(in_channels: int, image_size: int, num_classes: int) -> None:
    for label, value in (
        ("in_channels", in_channels),
        ("image_size", image_size),
        ("num_classes", num_classes),
    ):
        if not isinstance(value, int) or value < 1:
            raise NeedleError(f"{label} must be a positive integer, got {value!r}")


def skinny_cnn(
    in_channels: int, image_size: int, num_classes: int, width: int = 64
) -> nn.Sequential:
    """The paper's Skinny CNN: three conv(+bias)/ReLU/MaxPool(3, 2) blocks of `width` channels
    (k4 s2 p2, k5 s1 p2, k3 s1 p1), then one linear layer `fc` to the classes.
    143,178 parameters for CIFAR-10 at width 64."""
    _check_sizes(in_channels, image_size, num_classes)
    if not isinstance(width, int) or width < 1:
        raise NeedleError(f"width must be a positive integer, got {width!r}")
    layers = [
        ("conv1", nn.Conv2d(in_channels, width, kernel_size=4, stride=2, padding=2)),
        ("relu1", nn.ReLU()),
        ("pool1", nn.MaxPool2d(3, 2)),
        ("conv2", nn.Conv2d(width, width, kernel_size=5, stride=1, padding=2)),
        ("relu2", nn.ReLU()),
        ("pool2", nn.MaxPool2d(3, 2)),
        ("conv3", nn.Conv2d(width, width, kernel_size=3, stride=1, padding=1)),
        ("relu3", nn.ReLU()),
        ("pool3", nn.MaxPool2d(3, 2)),
    ]
    return _assemble(
        layers, (in_channels, image_size, image_size), [("fc", None)], "fc", num_classes
    )


def alexnet_cifar(in_channels: int, image_size: int, num_classes: int) -> nn.Sequential:
    """The CIFAR variant of AlexNet used by the authors: five convs (64, 192, 384, 256, 256
    channels; pools after conv1, conv2, conv5), then dropout/fc1(512)/ReLU/dropout/fc2(512)/ReLU/fc3.
    2,848,906 parameters for CIFAR-10."""
    _check_sizes(in_channels, image_size, num_classes)
    layers = [
        ("conv1", nn.Conv2d(in_channels, 64, kernel_size=4, stride=2, padding=2)),
        ("relu1", nn.ReLU()),
        ("pool1", nn.MaxPool2d(3, 2)),
        ("conv2", nn.Conv2d(64, 192, kernel_size=5, padding=2)),
        ("relu2", nn.ReLU()),
        ("pool2", nn.MaxPool2d(3, 2)),
        ("conv3", nn.Conv2d(192, 384, kernel_size=3, padding=1)),
        ("relu3", nn.ReLU()),
        ("conv4", nn.Conv2d(384, 256, kernel_size=3, padding=1)),
        ("relu4", nn.ReLU()),
        ("conv5", nn.Conv2d(256, 256, kernel_size=3, padding=1)),
        ("relu5", nn.ReLU()),
        ("pool5", nn.MaxPool2d(3, 2)),
    ]
    head = [
        ("dropout1", nn.Dropout(0.5)),
        ("fc1", None),
        ("relu6", nn.ReLU()),
        ("dropout2", nn.Dropout(0.5)),
        ("fc2", nn.Linear(512, 512)),
        ("relu7", nn.ReLU()),
        ("fc3", nn.Linear(512, num_classes)),
    ]
    return _assemble(layers, (in_channels, image_size, image_size), head, "fc1", 512)


def build_cnn(
    model: str, in_channels: int, image_size: int, num_classes: int, width: int = 64
) -> nn.Sequential:
    """Build a CNN by name: "skinny" (uses `width`) or "alexnet" (ignores `width`)."""
    if model == "skinny":
        return skinny_cnn(in_channels, image_size, num_classes, width)
    if model == "alexnet":
        return alexnet_cifar(in_channels, image_size, num_classes)
    raise NeedleError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
