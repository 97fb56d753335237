"""Specification of needle.embed's custom autograd functions: their backward passes are the
derivatives of their forward passes (torch.autograd.gradcheck, float64), and the SGD step taken
inside Dense2d's backward is plain SGD."""

import copy

import pytest
import torch
import torch.nn.functional as F

from needle.embed import Dense2d, LocallyConnected2d, _DenseStepInBackward, _LocallyConnected

# (input C, H, W), out channels, kernel, stride, padding: square and not, strided, padded beyond
# the kernel (weights that only ever see padding), a 1x1 kernel, a stride that skips pixels.
GEOMETRIES = [
    ((2, 5, 5), 3, 3, 1, 1),
    ((2, 7, 6), 2, (3, 2), (2, 1), (1, 0)),
    ((1, 4, 4), 2, 2, 1, 3),
    ((3, 5, 4), 2, 1, 1, 0),
    ((2, 8, 7), 3, (2, 3), 3, (0, 2)),
    ((2, 6, 6), 2, 4, 2, 2),  # the Skinny CNN's conv1 geometry
]


def locally_connected(in_shape, out_channels, kernel, stride, padding, bias=True):
    torch.manual_seed(0)
    return LocallyConnected2d(
        in_shape, out_channels, kernel, stride, padding, bias=bias, dtype=torch.float64
    )


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=str)
def test_locally_connected_backward_is_the_derivative_of_its_forward(geometry, bias):
    layer = locally_connected(*geometry, bias=bias)
    x = torch.randn(3, *layer.in_shape, dtype=torch.float64, requires_grad=True)
    weight = layer.weight.detach().clone().requires_grad_()
    inputs = (x, weight) + ((layer.bias.detach().clone().requires_grad_(),) if bias else ())

    def function(x, weight, bias=None):
        geometry = (layer.kernel_size, layer.stride, layer.padding, layer.out_shape)
        return _LocallyConnected.apply(x, weight, bias, *geometry)

    assert torch.autograd.gradcheck(function, inputs)


def test_locally_connected_first_layer_skips_the_input_gradient():
    layer = locally_connected((2, 5, 5), 3, 3, 1, 1)
    x = torch.randn(2, 2, 5, 5, dtype=torch.float64)  # data: no gradient wanted
    layer(x).sum().backward()
    assert x.grad is None and layer.weight.grad is not None and layer.bias.grad is not None


def dense_layer():
    torch.manual_seed(0)
    return Dense2d((2, 5, 4), 3, 3, stride=(2, 1), padding=1, dtype=torch.float64)


class _StepOnFreshWeights(torch.autograd.Function):
    """_DenseStepInBackward with a fresh copy of the weights for every backward pass.

    Its backward takes an SGD step, so it can run once per forward (as in training), while
    gradcheck calls backward several times on one graph. This wrapper's backward runs the real
    function forward and backward on fresh copies of the same weights each time and returns the
    real function's input gradient: gradcheck then compares exactly that gradient with finite
    differences of the forward pass."""

    @staticmethod
    def forward(ctx, x, weight, bias, lr):
        ctx.save_for_backward(x)
        ctx.weight, ctx.bias, ctx.lr = weight, bias, lr
        return _DenseStepInBackward.apply(x, weight.clone(), bias.clone(), lr)

    @staticmethod
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        weight = ctx.weight.clone()
        with torch.enable_grad():
            x = x.detach().requires_grad_()
            _DenseStepInBackward.apply(x, weight, ctx.bias.clone(), ctx.lr).backward(grad_out)
        stepped = not torch.equal(weight, ctx.weight)
        assert stepped or not grad_out.any(), "the backward takes its SGD step"
        return x.grad, None, None, None


def test_dense_step_in_backward_input_gradient_is_the_derivative_of_its_forward():
    """With a large step, an input gradient taken from the already stepped weights would differ
    from the finite differences: it must come from the weights of the forward pass."""
    layer = dense_layer()
    x = torch.randn(2, layer.weight.shape[1], dtype=torch.float64, requires_grad=True)
    weight, bias = layer.weight.detach(), layer.bias.detach()
    assert torch.autograd.gradcheck(
        lambda x: _StepOnFreshWeights.apply(x, weight, bias, 10.0), (x,)
    )


def test_dense_step_in_backward_updates_the_weights_as_one_plain_sgd_step():
    fused, plain = dense_layer(), dense_layer()
    x = torch.randn(6, 2, 5, 4, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])

    def loss(layer, inputs):
        return F.cross_entropy(layer(inputs).mean(dim=(2, 3)), labels)

    fused.train()
    fused.sgd_step_in_backward = 0.3
    fused_x = x.clone().requires_grad_()
    loss(fused, fused_x).backward()
    assert fused.weight.grad is None and fused.bias.grad is None  # no gradient tensor is formed

    plain_x = x.clone().requires_grad_()
    loss(plain, plain_x).backward()
    torch.optim.SGD(plain.parameters(), lr=0.3).step()

    start = dense_layer()
    assert not torch.equal(fused.weight, start.weight) and not torch.equal(fused.bias, start.bias)
    for a, b in (
        (fused.weight, plain.weight),
        (fused.bias, plain.bias),
        (fused_x.grad, plain_x.grad),
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-14)


def test_dense_layer_without_a_step_has_ordinary_gradients():
    layer = dense_layer()
    before = copy.deepcopy(layer)
    layer.sgd_step_in_backward = 0.3
    layer.eval()  # evaluation never steps
    layer(torch.randn(2, 2, 5, 4, dtype=torch.float64)).sum().backward()
    assert layer.weight.grad is not None and torch.equal(layer.weight, before.weight)
