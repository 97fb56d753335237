"""Specification of needle.models: the paper's Skinny CNN and CIFAR AlexNet, any input size."""

import pytest
import torch
import torch.nn as nn

from needle.errors import NeedleError
from needle.models import alexnet_cifar, build_cnn, skinny_cnn, trace_shapes
from needle.names import MODELS


def n_params(net):
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize(
    "in_channels, image_size, width, expected",
    [
        (3, 32, 64, 143_178),  # CIFAR-10
        (1, 28, 64, 141_130),  # Fashion-MNIST
        (1, 28, 32, 35_754),
        (1, 28, 16, 9_178),
    ],
)
def test_skinny_parameter_counts_match_paper_notes(in_channels, image_size, width, expected):
    assert n_params(skinny_cnn(in_channels, image_size, 10, width)) == expected


def test_alexnet_cifar10_has_2848906_parameters():
    assert n_params(alexnet_cifar(3, 32, 10)) == 2_848_906


def test_skinny_children_are_named_and_shaped_as_in_the_paper():
    net = skinny_cnn(3, 32, 10)
    assert list(dict(net.named_children())) == [
        "conv1",
        "relu1",
        "pool1",
        "conv2",
        "relu2",
        "pool2",
        "conv3",
        "relu3",
        "pool3",
        "flatten",
        "fc",
    ]
    assert (net.conv1.kernel_size, net.conv1.stride, net.conv1.padding) == ((4, 4), (2, 2), (2, 2))
    assert (net.conv2.kernel_size, net.conv2.stride, net.conv2.padding) == ((5, 5), (1, 1), (2, 2))
    assert (net.conv3.kernel_size, net.conv3.stride, net.conv3.padding) == ((3, 3), (1, 1), (1, 1))
    assert all(m.bias is not None for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    pools = [m for m in net.modules() if isinstance(m, nn.MaxPool2d)]
    assert len(pools) == 3 and all((p.kernel_size, p.stride, p.padding) == (3, 2, 0) for p in pools)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())
    # CIFAR shapes from the notes: 3x32x32 -> 64x17x17 -> 64x8x8 -> 64x8x8 -> 64x3x3 -> ... -> 64x1x1
    shapes = trace_shapes(net, net.input_shape)
    assert shapes[1] == (64, 17, 17) and shapes[3] == (64, 8, 8) and shapes[6] == (64, 3, 3)
    assert shapes[9] == (64, 1, 1) and net.fc.in_features == 64


def test_alexnet_children_are_named_with_dropouts_before_fc1_and_fc2():
    names = list(dict(alexnet_cifar(3, 32, 100).named_children()))
    assert names == [
        "conv1",
        "relu1",
        "pool1",
        "conv2",
        "relu2",
        "pool2",
        "conv3",
        "relu3",
        "conv4",
        "relu4",
        "conv5",
        "relu5",
        "pool5",
        "flatten",
        "dropout1",
        "fc1",
        "relu6",
        "dropout2",
        "fc2",
        "relu7",
        "fc3",
    ]
    net = alexnet_cifar(3, 32, 100)
    assert net.dropout1.p == 0.5 and net.dropout2.p == 0.5 and net.fc3.out_features == 100


@pytest.mark.parametrize(
    "model, in_channels, image_size",
    [
        ("skinny", 3, 32),
        ("skinny", 1, 28),
        ("skinny", 1, 40),
        ("skinny", 3, 64),
        ("alexnet", 3, 32),
        ("alexnet", 1, 28),
        ("alexnet", 3, 48),
    ],
)
def test_flatten_size_is_derived_so_forward_works_for_any_image_size(
    model, in_channels, image_size
):
    net = build_cnn(model, in_channels, image_size, 7, 8).eval()
    out = net(torch.randn(2, in_channels, image_size, image_size))
    assert out.shape == (2, 7)
    assert net.input_shape == (in_channels, image_size, image_size)


@pytest.mark.parametrize("model", MODELS)
def test_every_named_model_builds_for_cifar(model):
    assert build_cnn(model, 3, 32, 10, 8)(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_build_cnn_rejects_unknown_model_and_too_small_images():
    with pytest.raises(NeedleError, match="unknown model 'resnet'; choose one of skinny, alexnet"):
        build_cnn("resnet", 3, 32, 10, 64)
    with pytest.raises(NeedleError, match="image_size"):
        skinny_cnn(3, 8, 10)
    with pytest.raises(NeedleError, match="width"):
        skinny_cnn(3, 32, 10, 0)
