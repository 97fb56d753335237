"""Specification of needle.embed: eFCN and eLCN compute exactly the CNN's function."""

import itertools
import math

import pytest
import torch
import torch.nn as nn

from needle.embed import (
    Dense2d,
    LocallyConnected2d,
    conv_to_dense,
    efcn_bytes,
    parameter_counts,
    standard_fcn,
    tied_views,
    to_efcn,
    to_elcn,
)
from needle.errors import NeedleError
from needle.models import alexnet_cifar, build_cnn, skinny_cnn
from needle.names import FCN_FAN_INS
from needle.schema import experiment_enum


def max_abs(a, b):
    return (a - b).abs().max().item()


def sgd_steps(net, shape, steps=3, lr=0.1, seed=1):
    """A few SGD steps so the weights are no longer at their init (biases, scales change)."""
    gen = torch.Generator().manual_seed(seed)
    dtype = next(net.parameters()).dtype
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    for _ in range(steps):
        x = torch.randn(8, *shape, generator=gen, dtype=dtype)
        y = torch.randint(0, 10, (8,), generator=gen)
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return net


# Skinny at width 16 and AlexNet on 1x28x28 keep the float64 eFCNs small (< 0.5 GB) and fast.
SETTINGS = [("skinny", 3, 32, 16), ("skinny", 1, 28, 16), ("alexnet", 1, 28, 0)]


@pytest.mark.parametrize("trained", [False, True], ids=["init", "after_sgd"])
@pytest.mark.parametrize("model, channels, size, width", SETTINGS)
def test_efcn_and_elcn_outputs_equal_cnn_output_in_float64(model, channels, size, width, trained):
    torch.manual_seed(0)
    cnn = build_cnn(model, channels, size, 10, width).double()
    if trained:
        sgd_steps(cnn, (channels, size, size))
    cnn.eval()
    x = torch.randn(2, channels, size, size, dtype=torch.float64)
    with torch.no_grad():
        reference = cnn(x)
        efcn, elcn = to_efcn(cnn).eval(), to_elcn(cnn).eval()
        assert max_abs(efcn(x), reference) <= 1e-10
        assert max_abs(elcn(x), reference) <= 1e-10
    # same layers; a ReLU that feeds a max-pool comes after it (the same function, cheaper)
    assert sorted(dict(efcn.named_children())) == sorted(dict(cnn.named_children()))
    assert isinstance(efcn.conv1, Dense2d) and isinstance(elcn.conv1, LocallyConnected2d)


def test_efcn_output_equals_cnn_output_in_float32_cifar_skinny_width64():
    torch.manual_seed(0)
    cnn = skinny_cnn(3, 32, 10, 64).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        reference = cnn(x)
        scale = reference.abs().max().item()
        assert max_abs(to_efcn(cnn)(x), reference) <= 1e-4 * scale
        assert max_abs(to_elcn(cnn)(x), reference) <= 1e-4 * scale


def conv_stack_cases():
    """Two-conv stacks over kernels 1-7, strides 1-3, paddings 0-3 on a non-square input; the
    second conv has a non-square kernel, stride and padding. Only combos with non-empty output."""
    for k, s, p in itertools.product(range(1, 8), range(1, 4), range(0, 4)):
        h1, w1 = (11 + 2 * p - k) // s + 1, (9 + 2 * p - k) // s + 1
        if min(h1, w1) < 1:
            continue
        k2, s2, p2 = (max(1, k - 2), 2), (1, min(s, 2)), (min(p, 1), p)
        if (h1 + 2 * p2[0] - k2[0]) // s2[0] + 1 < 1 or (w1 + 2 * p2[1] - k2[1]) // s2[1] + 1 < 1:
            continue
        yield pytest.param(k, s, p, k2, s2, p2, id=f"k{k}s{s}p{p}")


@pytest.mark.parametrize("k, s, p, k2, s2, p2", list(conv_stack_cases()))
def test_conv_stacks_of_any_kernel_stride_padding_embed_exactly(k, s, p, k2, s2, p2):
    torch.manual_seed(k * 100 + s * 10 + p)
    cnn = nn.Sequential()
    cnn.add_module("conv1", nn.Conv2d(2, 3, k, s, p))
    cnn.add_module("relu1", nn.ReLU())
    cnn.add_module("conv2", nn.Conv2d(3, 4, k2, s2, p2))
    cnn = cnn.double()
    x = torch.randn(3, 2, 11, 9, dtype=torch.float64)
    with torch.no_grad():
        reference = cnn(x)
        assert max_abs(to_efcn(cnn, input_shape=(2, 11, 9))(x), reference) <= 1e-10
        assert max_abs(to_elcn(cnn, input_shape=(2, 11, 9))(x), reference) <= 1e-10
        # The dense matrix is the conv's linear map itself: conv (no bias) applied to each input
        # basis vector gives one column. This checks the zeros (and the folding) too.
        # Rows and columns are in channels-last (y, x, c) order. Exact on any IEEE machine: each
        # output of a one-hot input is one kernel entry times 1 plus products with 0.
        dense = conv_to_dense(cnn.conv1, (2, 11, 9))
        basis = torch.eye(2 * 11 * 9, dtype=torch.float64).view(-1, 11, 9, 2).permute(0, 3, 1, 2)
        jacobian = (
            nn.functional.conv2d(basis, cnn.conv1.weight, None, s, p)
            .permute(0, 2, 3, 1)
            .flatten(1)
            .T
        )
        assert torch.equal(dense.weight, jacobian)


def test_embedding_is_float32_exact_copy_of_kernel_values():
    cnn = skinny_cnn(1, 28, 10, 8)
    dense = to_efcn(cnn).conv2
    for ki, kj, view in tied_views(dense):
        assert torch.equal(view, cnn.conv2.weight[:, :, ki, kj][:, None, None, :].expand_as(view))
    assert torch.equal(dense.bias.view(7 * 7, 8), cnn.conv2.bias[None, :].expand(7 * 7, 8))
    grid = dense.weight_grid()  # [i, j, o, y, x, c]: output (o, i, j), input pixel (c, y, x)
    assert torch.equal(
        grid[3, 4, :, 3 + 1, 4 - 2, :], cnn.conv2.weight[:, :, 3, 0]
    )  # offset (3, 0), padding 2
    assert torch.count_nonzero(grid[3, 4, :, 0]) == 0  # row 0 is outside the 5x5 window of (3, 4)


@pytest.mark.parametrize(
    "in_channels, size, width, efcn, elcn",
    [
        (3, 32, 64, 73_952_522, 7_797_002),
        (1, 28, 64, 21_474_634, 5_598_538),
        (1, 28, 32, 8_195_754, 1_461_930),
        (1, 28, 16, 3_462_490, 396_634),
    ],
)
def test_parameter_counts_match_paper_notes(in_channels, size, width, efcn, elcn):
    cnn = skinny_cnn(in_channels, size, 10, width)
    counts = parameter_counts(cnn)
    assert counts == {
        "cnn": sum(p.numel() for p in cnn.parameters()),
        "elcn": elcn,
        "efcn": efcn,
        "fcn": efcn,
    }
    assert efcn_bytes(cnn) == 4 * efcn and efcn_bytes(cnn, torch.float64) == 8 * efcn


def test_parameter_counts_equal_the_built_networks_for_small_settings():
    for cnn in (skinny_cnn(1, 28, 10, 16), alexnet_cifar(1, 28, 10)):
        counts = parameter_counts(cnn)
        assert counts["efcn"] == sum(p.numel() for p in to_efcn(cnn).parameters())
        assert counts["elcn"] == sum(p.numel() for p in to_elcn(cnn).parameters())
        assert counts["fcn"] == sum(p.numel() for p in standard_fcn(cnn).parameters())


def test_alexnet_cifar_counts_by_arithmetic():
    counts = parameter_counts(alexnet_cifar(3, 32, 10))
    # conv layers (in CxHxW -> out CxHxW), folded: rows x cols + one bias per row
    dense = [
        (3 * 32 * 32, 64 * 17 * 17),
        (64 * 8 * 8, 192 * 8 * 8),
        (192 * 3 * 3, 384 * 3 * 3),
        (384 * 3 * 3, 256 * 3 * 3),
        (256 * 3 * 3, 256 * 3 * 3),
    ]
    head = 256 * 512 + 512 + 512 * 512 + 512 + 512 * 10 + 10
    assert counts["efcn"] == sum(i * o + o for i, o in dense) + head == 126_832_586
    assert counts["cnn"] == 2_848_906


def test_efcn_state_dict_reloads_into_efcn_of_a_fresh_cnn():
    torch.manual_seed(0)
    trained = to_efcn(sgd_steps(skinny_cnn(1, 28, 10, 8), (1, 28, 28)))
    fresh = to_efcn(build_cnn("skinny", 1, 28, 10, 8))
    fresh.load_state_dict(trained.state_dict())
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(fresh.eval()(x), trained.eval()(x))
    assert fresh.conv1.in_shape == (1, 28, 28) and fresh.conv1.out_shape == (8, 15, 15)
    assert fresh.conv1.kernel_size == (4, 4) and fresh.conv1.stride == (2, 2)
    assert fresh.conv1.padding == (2, 2)


def test_dense2d_and_locally_connected_are_constructible_from_geometry_alone():
    dense = Dense2d((3, 8, 8), 5, 3, stride=2, padding=1)
    assert dense.weight.shape == (5 * 4 * 4, 3 * 8 * 8) and dense.bias.shape == (80,)
    assert dense(torch.randn(2, 3, 8, 8)).shape == (2, 5, 4, 4)
    local = LocallyConnected2d((3, 8, 8), 5, 3, stride=2, padding=1)
    assert local.weight.shape == (16, 5, 27) and local.bias.shape == (5, 4, 4)
    assert local(torch.randn(2, 3, 8, 8)).shape == (2, 5, 4, 4)


def test_standard_fcn_has_efcn_shapes_and_pytorch_default_init():
    torch.manual_seed(0)
    cnn = skinny_cnn(1, 28, 10, 16)
    fcn, efcn = standard_fcn(cnn), to_efcn(cnn)
    assert [(k, v.shape) for k, v in fcn.state_dict().items()] == [
        (k, v.shape) for k, v in efcn.state_dict().items()
    ]
    for name in ("conv1", "conv2", "conv3"):
        weight = fcn.get_submodule(name).weight
        bound = 1 / math.sqrt(weight.shape[1])  # nn.Linear init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        largest = weight.abs().max().item()  # float32 draws: allow their rounding at the bound
        assert 0.99 * bound < largest <= (1 + 1e-6) * bound
        assert abs(weight.std().item() - bound / math.sqrt(3)) < 0.02 * bound
        assert (weight != 0).float().mean() > 0.999  # dense, not on the CNN subspace
    assert not torch.equal(fcn.fc.weight, cnn.fc.weight)  # head freshly initialised too


# The authors' SkinnyCNNPrime_FC on CIFAR builds its dense layers on the zero-padded inputs
# 3x36x36, 64x12x12 and 64x5x5: nn.Linear(3888 | 9216 | 1600, ...). The real inputs are 3x32x32,
# 64x8x8 and 64x3x3: 3072, 4096 and 576 pixels.
@pytest.mark.parametrize(
    "fan_in, fan_ins",
    [("padded", (3888, 9216, 1600)), ("real", (3072, 4096, 576))],
)
def test_standard_fcn_init_bounds_follow_the_chosen_fan_in(fan_in, fan_ins):
    torch.manual_seed(0)
    fcn = standard_fcn(skinny_cnn(3, 32, 10, 64), fan_in=fan_in)
    for name, fan in zip(("conv1", "conv2", "conv3"), fan_ins):
        layer = fcn.get_submodule(name)
        bound = fan**-0.5  # nn.Linear: weight and bias U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        for tensor, slack in ((layer.weight, 1e-3), (layer.bias, 5e-2)):
            largest = tensor.detach().abs().max().item()
            assert (1 - slack) * bound < largest <= (1 + 1e-6) * bound, (name, tensor.shape)
    if fan_in == "padded":
        assert [fcn.get_submodule(n).padded_fan_in() for n in ("conv1", "conv2", "conv3")] == [
            3888,
            9216,
            1600,
        ]


def test_standard_fcn_fan_in_options_are_the_schemas_and_others_are_refused():
    assert tuple(experiment_enum("fcn_init_fan_in")) == FCN_FAN_INS
    with pytest.raises(NeedleError, match=r"fan_in 'same' is not one of real, padded"):
        standard_fcn(skinny_cnn(1, 28, 10, 4), fan_in="same")


def test_gradients_reach_every_dense_weight_including_off_block_zeros():
    torch.manual_seed(0)
    layer = conv_to_dense(nn.Conv2d(2, 3, 3, 2, 1), (2, 7, 7))
    (layer(torch.randn(4, 2, 7, 7)) * torch.randn(4, 3, 4, 4)).sum().backward()
    assert (layer.weight.grad != 0).all()  # every weight is live: padding is folded away
    # In a full eFCN, off-block entries (zero at embedding) get gradient as well: every row of
    # conv1 that receives any upstream gradient (ReLU/max-pool pass it) gets it in every column,
    # since the input image is nonzero everywhere.
    efcn = to_efcn(skinny_cnn(1, 28, 10, 8))
    nn.functional.cross_entropy(efcn(torch.randn(16, 1, 28, 28)), torch.arange(16) % 10).backward()
    grad = efcn.conv1.weight.grad
    active_rows = (grad != 0).any(dim=1)
    assert active_rows.float().mean() > 0.5 and (grad[active_rows] != 0).all()
    for name in ("conv2", "conv3"):
        layer = efcn.get_submodule(name)
        off_block = layer.weight.detach() == 0
        assert (layer.weight.grad[off_block] != 0).any()


def test_embedding_rejects_what_it_cannot_represent():
    with pytest.raises(NeedleError, match="groups"):
        to_efcn(nn.Sequential(nn.Conv2d(2, 2, 3, groups=2)), input_shape=(2, 8, 8))
    with pytest.raises(NeedleError, match="input_shape"):
        to_efcn(nn.Sequential(nn.Conv2d(2, 2, 3)))
